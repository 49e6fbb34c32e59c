"""Communicate professionally: no minimising, blaming or guessing at intent; clear requests and notices.

The guidelines say: *use specific, factual language that describes observable behaviors and their
impact rather than making assumptions about intent or internal states*; *avoid language that
minimizes harm ("just a misunderstanding") or blames those who were harmed ("they were too
sensitive")*; *vague requests like "be better" are less effective than concrete guidance*; a message
to a reported party states *the behavior, its impact, the behavioral modifications expected and the
consequences*; and *if we instruct event organizers "Don't invite this person," we become directly
responsible*: inform them and leave the decision to them.

The rule reads the sender's own words in the Subject and the text and HTML parts; quoted earlier
messages (`> ` lines, the "On ..., X wrote:" line and what follows it, forwarded blocks) are not
checked. Phrases are matched on normalised text (any case, any line breaks, curly or straight
apostrophes) on word boundaries; a phrase written with "n't" also matches the spelling without the
apostrophe and the long form ("didn't mean to" finds "didnt mean to" and "did not mean to"). Every
phrase list is in `params`: replace a list to change it. The shipped policy only *warns*: the
message is delivered and the sender is told.

- `MINIMISING_LANGUAGE` ("just a misunderstanding", "no big deal", "it was a joke", ...),
  `BLAMING_LANGUAGE` ("too sensitive", "overreacting", ...), `INTENT_ASSUMPTION` ("didn't mean to",
  "on purpose", "deliberately", ...) and `VAGUE_REQUEST` ("be better", "do better", "be nicer").
- `DECISION_COMPONENT_MISSING`: the Subject carries `decision_tag` (default `[decision]`), which
  marks the message as a decision notice to a reported party, and one of the four components is
  missing: `behaviour`, `impact`, `expectations`, `consequences` (one finding per missing component,
  its kind naming it). A component is present when a line of the message starts with one of its
  `headings` (the committee's template, below; `#`, `*`, numbering and a trailing `:` are allowed)
  or, unless `decision_headings_only` is set, when the text uses one of its `cues`.
- `DIRECTIVE_TO_ORGANISER`: a recipient has one of the `directive_roles` (default: event
  organisers) and the message tells them what to do ("don't invite", "ban them", "do not allow")
  instead of informing them and leaving the decision to them.

The decision-notice template the shipped headings follow (the committee fills in each section):

    What happened:
    <the behaviour, in factual, observable terms, without assumptions about intent>
    Impact:
    <the effect on people and on the community>
    What we expect from you:
    <concrete, specific changes, e.g. "Do not contact the people involved directly.">
    Consequences:
    <what is applied now, and what happens if the behaviour continues>

What the sender is told, e.g. *part 1 (text/plain) minimises the harm (e.g. "just a
misunderstanding"). Describe what happened and its impact without judging how serious it was.*
(`check` shows which phrase matched; the notice names only the kind.)
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

import ahocorasick
from pydantic import BaseModel, ConfigDict, Field

from gateway.policy.audiences import ROLE_NOUNS, Role
from gateway.policy.model import Envelope, Finding, ParsedMessage, RuleContext, SegmentKind
from gateway.policy.normalize import normalize
from gateway.policy.rules.anonymisation import split_body

NAME = "communication"

CODES = {
    "MINIMISING_LANGUAGE": 'Language that minimises the harm ("just a misunderstanding", "no big deal").',
    "BLAMING_LANGUAGE": 'Language that blames those who were harmed ("too sensitive", "overreacting").',
    "INTENT_ASSUMPTION": 'An assumption about intent or inner states ("didn\'t mean to", "on purpose").',
    "VAGUE_REQUEST": 'A vague request ("be better", "do better") instead of concrete expectations.',
    "DECISION_COMPONENT_MISSING": (
        "A decision notice lacks one of: behaviour, impact, expectations, consequences (kind names it)."
    ),
    "DIRECTIVE_TO_ORGANISER": 'Directing event organisers ("don\'t invite") instead of informing them.',
}

Phrases = tuple[str, ...]


class DecisionComponent(BaseModel):
    """One of the four parts of a decision notice, and how to recognise it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    headings: Phrases = Field(min_length=1, description="Section headings of the template for this part.")
    cues: Phrases = Field((), description="Phrases that show the part is there without its heading.")


def _component(headings: Phrases, cues: Phrases) -> DecisionComponent:
    return DecisionComponent(headings=headings, cues=cues)


class Params(BaseModel):
    """Options of the communication rule."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    minimising: Phrases = Field(
        (
            "just a misunderstanding", "only a misunderstanding", "simple misunderstanding",
            "no big deal", "not a big deal", "not that big a deal", "it was a joke", "it was just a joke",
            "only a joke", "just a joke", "just joking", "just banter", "harmless fun", "harmless joke",
            "blown out of proportion", "making a big deal", "making a fuss", "nothing serious",
            "not that serious", "storm in a teacup", "boys will be boys",
        ),
        description="Phrases that minimise harm.",
    )  # fmt: skip
    blaming: Phrases = Field(
        (
            "too sensitive", "oversensitive", "over-sensitive", "overreacting", "over-reacting",
            "overreacted", "overreaction", "thin-skinned", "thin skinned", "can't take a joke",
            "should have known better than to", "brought it on", "asked for it", "being dramatic",
            "too emotional", "hysterical", "playing the victim",
        ),
        description="Phrases that blame those who were harmed.",
    )  # fmt: skip
    intent: Phrases = Field(
        (
            "didn't mean to", "didn't mean it", "didn't intend", "meant no harm", "no harm intended",
            "no harm meant", "meant well", "good intentions", "did it on purpose", "did this on purpose",
            "you deliberately", "they deliberately", "you intentionally", "they intentionally",
            "was deliberate", "was intentional", "wanted to hurt", "meant to hurt", "you must have felt",
            "you must have been", "you were trying to",
        ),
        description="Phrases that assume intent or inner states instead of describing behaviour.",
    )  # fmt: skip
    vague_requests: Phrases = Field(
        (
            "be better", "do better", "be nicer", "be more respectful", "be more considerate",
            "be more professional", "behave yourself", "behave better", "act appropriately",
            "clean up your act", "improve your behaviour", "improve your behavior",
        ),
        description=(
            "Vague requests that give no concrete expectation. They count at the end of a sentence or "
            'before "in future", "next time", "to others" and the like, so "be better prepared" is not one.'
        ),
    )  # fmt: skip
    decision_tag: str = Field(
        "[decision]",
        min_length=1,
        description="Text in the Subject that marks a decision notice (any case), e.g. `[decision]`.",
    )
    decision_components: dict[str, DecisionComponent] = Field(
        default_factory=lambda: {
            "behaviour": _component(
                ("what happened", "description of behaviour", "description of behavior",
                 "the behaviour", "the behavior", "behaviour", "behavior"),
                ("we received a report", "was reported", "you wrote", "you said", "you posted", "you sent"),
            ),
            "impact": _component(
                ("impact", "the impact", "impact of this behaviour", "impact of this behavior", "effect"),
                ("the impact", "impact on", "the effect on", "made people feel", "caused harm", "harmed"),
            ),
            "expectations": _component(
                ("what we expect from you", "what we expect", "expectations", "expected changes",
                 "behavioural expectations", "behavioral expectations", "going forward"),
                ("we expect you", "we ask you to", "we ask that you", "from now on", "going forward"),
            ),
            "consequences": _component(
                ("consequences", "consequence", "outcome", "decision"),
                ("consequence", "consequences", "will be suspended", "suspension", "is banned", "are banned",
                 "removed from", "if this happens again", "if the behaviour continues",
                 "if the behavior continues", "further action"),
            ),
        },
        min_length=1,
        description=(
            "The parts a decision notice must have, by name (default: behaviour, impact, expectations, "
            "consequences), each with its template `headings` and optional `cues`."
        ),
    )  # fmt: skip
    decision_headings_only: bool = Field(
        False, description="Count a part as present only through its heading (ignore the cues)."
    )
    directive_roles: tuple[Role, ...] = Field(
        (Role.ORGANISER,),
        description="Recipient roles told to inform rather than direct (default: event organisers).",
    )
    directives: Phrases = Field(
        (
            "don't invite", "do not invite", "must not invite", "should not invite", "uninvite",
            "ban them", "ban him", "ban her", "ban this person", "should be banned", "must be banned",
            "don't allow", "do not allow", "must not be allowed", "should not be allowed",
            "don't let them", "do not let them", "refuse entry", "refuse them entry", "must not attend",
            "kick them out", "remove them from the event",
        ),
        description="Phrases that direct organisers' decisions.",
    )  # fmt: skip


@dataclass(frozen=True)
class _Lint:
    code: str
    kind: str
    advice: str


_LINTS = (
    _Lint(
        "MINIMISING_LANGUAGE",
        "minimising",
        "{where} minimises the harm. Describe what happened and its impact without judging how serious "
        "it was; harm can occur even when unintended.",
    ),
    _Lint(
        "BLAMING_LANGUAGE",
        "blaming",
        "{where} blames the people who were harmed. Describe the behaviour and its impact; people "
        "experience the same situation in different ways.",
    ),
    _Lint(
        "INTENT_ASSUMPTION",
        "intent",
        "{where} makes an assumption about intent or feelings. Describe observable behaviour and its "
        "impact instead; focus on impact, not intent.",
    ),
    _Lint(
        "VAGUE_REQUEST",
        "vague-request",
        '{where} makes a vague request. Say concretely what is expected, e.g. "Do not contact the '
        'people involved directly; communicate only through the committee."',
    ),
)
_LINT_FIELDS = {
    "MINIMISING_LANGUAGE": "minimising",
    "BLAMING_LANGUAGE": "blaming",
    "INTENT_ASSUMPTION": "intent",
    "VAGUE_REQUEST": "vague_requests",
}
# What may follow a vague request: the end of the sentence or a phrase that does not make it concrete.
_VAGUE_TAIL = (
    r"(?=\s*(?:[.!?,;:)\]\"']|$|please\b|and\b|or\b|in (?:the )?future\b|next time\b|going forward\b"
    r"|from now on\b|(?:to|towards|with|around) (?:others|other people|everyone|people|the community)\b))"
)
_BODY_KINDS = frozenset({SegmentKind.TEXT, SegmentKind.HTML_TEXT})
_HEADING_DECORATION = re.compile(r"^[\s#*_>|-]*(?:[0-9]+[.)]\s*|[a-z][.)]\s+)?[\s*_]*")


def _phrase_variants(phrase: str) -> list[str]:
    """A phrase as literal normalised spellings; "n't" also matches "nt" and the long form."""
    options: list[tuple[str, ...]] = []
    for word in normalize(phrase).split(" "):
        if word.endswith("n't") and len(word) > 3:
            stem = word[:-3]
            long_forms = {"can": ("can not", "cannot"), "won": ("will not",), "shan": ("shall not",)}
            options.append((word, f"{stem}nt", *long_forms.get(stem, (f"{stem} not",))))
        else:
            options.append((word,))
    return [" ".join(words) for words in itertools.product(*options)]


_Candidate = tuple[str, tuple[str, ...]]  # a phrase variant and the groups it belongs to

# What folding leaves of ASCII: letters and digits; every other character becomes the anchor " ".
_ANCHOR_FOLD = {code: " " for code in range(128) if not chr(code).isalnum()}


@cache
def _variant_owners(groups: tuple[tuple[str, Phrases], ...]) -> tuple[_Candidate, ...]:
    owners: dict[str, set[str]] = {}
    for group, phrases in groups:
        for phrase in phrases:
            if normalize(phrase):
                for variant in _phrase_variants(phrase):
                    owners.setdefault(variant, set()).add(group)
    return tuple((variant, tuple(sorted(members))) for variant, members in owners.items())


@cache
def _phrase_automaton(groups: tuple[tuple[str, Phrases], ...]) -> Any:
    # One Aho-Corasick pass finds every phrase of every group: a regex alternation per group
    # rescans the text once per group and per position. Values: (variant, groups it belongs to).
    automaton = ahocorasick.Automaton()
    for variant, members in _variant_owners(groups):
        automaton.add_word(variant, (variant, members))
    automaton.make_automaton()
    return automaton


@cache
def _anchored_automaton(groups: tuple[tuple[str, Phrases], ...]) -> Any:
    """For ASCII text: the ASCII variants, keyed " " + folded variant (values: the variants); None
    if there are none."""
    # A match starts after a character that is not alphanumeric, or at the start: folded, that is
    # the anchor, so a walk of " " + folded text finds every match. From the root only the anchor
    # leads on, where the plain automaton searches every first letter at every character: on 8 KB
    # of prose the search costs 55-70 % of the plain walk, folding included. Folding merges spellings
    # ("over-sensitive", "over sensitive"), so a key gives candidates to check against the text.
    keys: dict[str, list[_Candidate]] = {}
    for variant, members in _variant_owners(groups):
        if variant.isascii():  # no other variant can occur in ASCII text
            keys.setdefault(" " + variant.translate(_ANCHOR_FOLD), []).append((variant, members))
    if not keys:
        return None  # an automaton without words refuses to walk
    automaton = ahocorasick.Automaton()
    for key, candidates in keys.items():
        automaton.add_word(key, tuple(candidates))
    automaton.make_automaton()
    return automaton


def _anchored_matches(groups: tuple[tuple[str, Phrases], ...], text: str) -> Iterator[tuple[int, _Candidate]]:
    """The plain automaton's ``iter(text)`` for ASCII ``text``, in its order, less matches that start
    inside a word."""
    automaton = _anchored_automaton(groups)
    if automaton is None:
        return
    # Both automata report by end, longest first, and at most one of a key's candidates is in the
    # text at a given end: the order is the plain walk's, which decides the order of findings.
    candidates: tuple[_Candidate, ...]
    for end, candidates in automaton.iter(" " + text.translate(_ANCHOR_FOLD)):
        for variant, members in candidates:
            if text.startswith(variant, end - len(variant)):
                yield end - 1, (variant, members)


@cache
def _tail_regex(tail: str) -> re.Pattern[str]:
    return re.compile(tail)


def _found_by_group(
    groups: tuple[tuple[str, Phrases], ...], text: str, tails: Mapping[str, str] | None = None
) -> dict[str, list[str]]:
    """Per group, the phrases found in normalised ``text`` as whole words (followed by the group's
    ``tails`` regex, if any)."""
    if not _variant_owners(groups):
        return {}
    # Folding leaves str.translate's fast path outside ASCII and costs more than it saves there;
    # isascii() is a flag lookup. Nine in ten texts of the shared real-mail corpus are ASCII.
    matches: Iterable[tuple[int, _Candidate]]
    matches = _anchored_matches(groups, text) if text.isascii() else _phrase_automaton(groups).iter(text)
    found: dict[str, dict[str, None]] = {}
    for last, (variant, members) in matches:
        start, after = last - len(variant) + 1, last + 1
        if start and text[start - 1].isalnum():
            continue
        if after < len(text) and (text[after].isalnum() or text[after] == "_"):
            continue
        for group in members:
            tail = (tails or {}).get(group)
            if tail and not _tail_regex(tail).match(text, after):
                continue
            found.setdefault(group, {})[variant] = None
    return {group: list(variants) for group, variants in found.items()}


def _found(phrases: Phrases, text: str, tail: str = "") -> list[str]:
    """The phrases found in normalised ``text`` as whole words (followed by ``tail``, a regex)."""
    return _found_by_group((("", phrases),), text, {"": tail}).get("", [])


@dataclass(frozen=True)
class _OwnText:
    where: str
    text: str  # normalised
    raw: str  # as written, for the headings of decision notices

    def lines(self) -> tuple[str, ...]:
        """Normalised non-empty lines (only decision notices need them: normalising is costly)."""
        return tuple(line for line in (normalize(line) for line in self.raw.splitlines()) if line)


def _own_texts(message: ParsedMessage) -> list[_OwnText]:
    """The sender's own words: the Subject and the body text and HTML parts, without quoted text."""
    texts = [_OwnText("header Subject", normalize(message.subject), "")]
    seen: set[tuple[str, str]] = set()
    for segment in message.segments:
        if segment.kind not in _BODY_KINDS or (segment.where, segment.text) in seen:
            continue
        seen.add((segment.where, segment.text))
        split = split_body(segment.text)
        # With nothing quoted, own differs from the text only in line breaks, which normalising folds
        # away: normalise the text itself, as the other rules do (normalize's cache answers).
        folded = normalize(segment.text if split.quotes_nothing else split.own)
        texts.append(_OwnText(segment.where, folded, split.own))
    return texts


def check(message: ParsedMessage, envelope: Envelope, context: RuleContext, params: Params) -> list[Finding]:
    """Lint the sender's own words; check decision notices; flag directives to organisers."""
    texts = _own_texts(message)
    findings: dict[tuple[str, str], Finding] = {}
    groups = tuple((lint.code, getattr(params, _LINT_FIELDS[lint.code])) for lint in _LINTS)
    found_in = [_found_by_group(groups, text.text, {"VAGUE_REQUEST": _VAGUE_TAIL}) for text in texts]
    for lint in _LINTS:
        for text, found_here in zip(texts, found_in, strict=True):
            found = found_here.get(lint.code, [])
            if found and (lint.code, text.where) not in findings:
                findings[(lint.code, text.where)] = Finding(
                    rule=NAME,
                    code=lint.code,
                    where=text.where,
                    kind=lint.kind,
                    advice=lint.advice.format(where=text.where),
                    private_detail=", ".join(f'"{phrase}"' for phrase in found),
                )
    result = list(findings.values())
    if normalize(params.decision_tag) in normalize(message.subject):
        result.extend(_missing_components(texts[1:], params))
    result.extend(_directives(texts, envelope, context, params))
    return result


def _missing_components(texts: list[_OwnText], params: Params) -> list[Finding]:
    heading_lines = [_HEADING_DECORATION.sub("", line) for text in texts for line in text.lines()]
    body = " ".join(text.text for text in texts)
    missing = []
    for name, component in params.decision_components.items():
        headings = [normalize(heading) for heading in component.headings]
        has_heading = any(
            line == heading or line.startswith((f"{heading}:", f"{heading} :", f"{heading}*"))
            for line in heading_lines
            for heading in headings
        )
        has_cue = not params.decision_headings_only and bool(_found(component.cues, body))
        if not (has_heading or has_cue):
            missing.append((name, component))
    return [
        Finding(
            rule=NAME,
            code="DECISION_COMPONENT_MISSING",
            where="the message body",
            kind=name,
            advice=(
                f"This decision notice has no {name} part. Add a section headed "
                f'"{component.headings[0].capitalize()}:" (the committee\'s template: '
                + ", ".join(f'"{c.headings[0].capitalize()}"' for c in params.decision_components.values())
                + ")."
            ),
        )
        for name, component in missing
    ]


def _directives(
    texts: list[_OwnText], envelope: Envelope, context: RuleContext, params: Params
) -> list[Finding]:
    wanted = frozenset(params.directive_roles)
    concerned: dict[str, str] = {}
    roles: set[Role] = set()
    for recipient in envelope.rcpt_tos:
        matched = context.roles_of(recipient) & wanted
        if matched:
            concerned.setdefault(recipient.lower(), recipient)
            roles.update(matched)
    if not concerned:
        return []
    findings = []
    nouns = " or ".join(ROLE_NOUNS[role] for role in sorted(roles))
    for text in texts:
        found = _found(params.directives, text.text)
        if found:
            findings.append(
                Finding(
                    rule=NAME,
                    code="DIRECTIVE_TO_ORGANISER",
                    where=text.where,
                    kind="directive",
                    advice=(
                        f"{text.where} tells {nouns} what to do. Give them the information instead (e.g. "
                        '"this person has been the subject of reports about unwanted contact") and say '
                        "that the decision is theirs."
                    ),
                    recipients=tuple(concerned.values()),
                    private_detail=", ".join(f'"{phrase}"' for phrase in found),
                )
            )
    return findings
