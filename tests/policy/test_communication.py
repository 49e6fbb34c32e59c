"""communication: minimising, blaming, intent, vague wording; decision notices; directives to organisers."""

from __future__ import annotations

import re
from pathlib import Path

import ahocorasick
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.policy.audiences import Audiences, Membership, Role
from gateway.policy.matcher import IdentityMatcher
from gateway.policy.mime import parse_message
from gateway.policy.model import Envelope, Finding, RuleContext
from gateway.policy.normalize import normalize
from gateway.policy.rules import communication
from gateway.policy.rules.communication import DecisionComponent, Params
from tests.policy.builders import Message, Multipart, Part, plain, render

ADA = "ada@example.org"
CONDUCT = "conduct@example.org"
REPORTED = "pat@example.com"
ORGANISER = "team@events.example.com"
MOD = "mods@forum.example.net"

CONTEXT = RuleContext(
    conduct_address=CONDUCT,
    committee=frozenset({ADA}),
    member_names=(),
    internal_domains=frozenset(),
    finder=IdentityMatcher.build(()),
    consents=frozenset(),
    audiences=Audiences.build(
        conduct_address=CONDUCT,
        committee=[ADA],
        addresses=[(REPORTED, Membership(Role.REPORTED, "home shelf"))],
        domains=[
            ("events.example.com", Membership(Role.ORGANISER)),
            ("forum.example.net", Membership(Role.MODERATOR)),
        ],
    ),
)


def check(raw: bytes, *rcpts: str, params: Params | None = None) -> list[Finding]:
    envelope = Envelope(mail_from=ADA, rcpt_tos=rcpts or (REPORTED, CONDUCT), authenticated_as=ADA)
    return communication.check(parse_message(raw), envelope, CONTEXT, params or Params())


def codes(findings: list[Finding]) -> list[str]:
    return sorted(f.code for f in findings)


LINTS = [
    ("I'm sure it was just a misunderstanding.", "MINIMISING_LANGUAGE", '"just a misunderstanding"'),
    ("This is no big deal, but", "MINIMISING_LANGUAGE", '"no big deal"'),
    ("They said it was a joke.", "MINIMISING_LANGUAGE", '"it was a joke"'),
    ("Perhaps they were too sensitive.", "BLAMING_LANGUAGE", '"too sensitive"'),
    ("Some say people are overreacting.", "BLAMING_LANGUAGE", '"overreacting"'),
    ("We know you didn't mean to upset anyone.", "INTENT_ASSUMPTION", '"didn\'t mean to"'),
    ("We know you didn’t mean to upset anyone.", "INTENT_ASSUMPTION", '"didn\'t mean to"'),  # curly
    ("We know you didnt mean to upset anyone.", "INTENT_ASSUMPTION", '"didnt mean to"'),
    ("We know you did not mean to upset anyone.", "INTENT_ASSUMPTION", '"did not mean to"'),
    ("It seems you deliberately ignored them.", "INTENT_ASSUMPTION", '"you deliberately"'),
    ("Please be better.", "VAGUE_REQUEST", '"be better"'),
    ("You need to do better in future.", "VAGUE_REQUEST", '"do better"'),
    ("Try to be nicer to others", "VAGUE_REQUEST", '"be nicer"'),
    # Across line breaks and in any case.
    ("I'm sure it was JUST A\nMISUNDERSTANDING, really.", "MINIMISING_LANGUAGE", '"just a misunderstanding"'),
    ("perhaps they were too\r\n    sensitive", "BLAMING_LANGUAGE", '"too sensitive"'),
]
NOT_LINTS = [
    "To avoid any misunderstanding, here is what we decided.",
    "We want to be better prepared next year and do better work.",  # not requests to the recipient
    "Sensitive information has been removed. This was not a joke to anyone.",
    "We deliberated for a week.",
    "We meant to write sooner; the plan is here.",
    "Please don't contact the people involved.",
]


@pytest.mark.parametrize(("body", "code", "detail"), [pytest.param(*case, id=case[0][:30]) for case in LINTS])
def test_lints(body: str, code: str, detail: str) -> None:
    (finding,) = check(plain(body))
    assert (finding.code, finding.where, finding.private_detail) == (code, "part 1 (text/plain)", detail)
    assert detail.strip('"') not in finding.advice.lower()


@pytest.mark.parametrize("body", NOT_LINTS)
def test_not_lints(body: str) -> None:
    assert check(plain(body)) == []


def test_subject_and_html_are_read_quotes_are_not() -> None:
    html = (
        "<p>It was <b>just a</b>\n<i>misunderstanding</i>.</p>"
        "<div>On Mon, Pat wrote:</div><blockquote>be better</blockquote>"
    )
    raw = render(
        Message(
            headers=(("From", ADA), ("To", REPORTED), ("Subject", "Do better")),
            body=Multipart(
                subtype="alternative",
                parts=(
                    Part(body="Hello.\n\n> you are too sensitive\n> no big deal\n"),
                    Part(content_type="text/html", body=html),
                ),
            ),
        )
    )
    assert sorted((f.code, f.where) for f in check(raw)) == [
        ("MINIMISING_LANGUAGE", "part 2 (text/html)"),
        ("VAGUE_REQUEST", "header Subject"),
    ]


def test_phrase_lists_are_configurable() -> None:
    params = Params(minimising=("nur ein missverständnis",), blaming=(), intent=(), vague_requests=())
    assert codes(check(plain("Das war nur ein Missverständnis."), params=params)) == ["MINIMISING_LANGUAGE"]
    assert check(plain("Just a misunderstanding. Too sensitive."), params=params) == []


# --- decision notices ---------------------------------------------------------------------------

TEMPLATE = {
    "behaviour": "What happened:\nAt the meet-up you repeatedly commented on a participant's appearance.\n",
    "impact": "Impact:\nSeveral people left the meet-up early and no longer feel safe attending.\n",
    "expectations": "What we expect from you:\nDo not comment on anyone's appearance at community events.\n",
    "consequences": "Consequences:\nYou may not attend the next two meet-ups.\n",
}


def notice(parts: dict[str, str], subject: str = "[Decision] Code of Conduct report") -> bytes:
    return plain("Hello,\n\n" + "\n".join(parts.values()), Subject=subject)


def test_complete_notice_passes() -> None:
    assert check(notice(TEMPLATE)) == []


@pytest.mark.parametrize("missing", list(TEMPLATE))
def test_missing_component_is_named(missing: str) -> None:
    parts = {name: text for name, text in TEMPLATE.items() if name != missing}
    (finding,) = check(notice(parts))
    assert (finding.code, finding.kind) == ("DECISION_COMPONENT_MISSING", missing)
    assert f"no {missing} part" in finding.advice
    assert '"What happened", "Impact", "What we expect from you", "Consequences"' in finding.advice


def test_all_missing_are_named() -> None:
    findings = check(notice({"other": "We are writing about the meet-up.\n"}))
    assert sorted(f.kind for f in findings) == sorted(TEMPLATE)


def test_headings_may_be_decorated() -> None:
    body = (
        "## What happened\ntext\n**Impact:** text\n3. What we expect from you: text\n- CONSEQUENCES -\ntext\n"
    )
    findings = check(plain(body, Subject="[decision] x"), params=Params(decision_headings_only=True))
    assert [f.kind for f in findings] == ["consequences"]  # "- CONSEQUENCES -" is not a heading


def test_cues_count_unless_headings_only() -> None:
    body = (
        "We received a report that you posted insults. The impact on the channel was serious. "
        "We expect you to stop. As a consequence your account is suspended."
    )
    assert check(plain(body, Subject="[decision] x")) == []
    strict = check(plain(body, Subject="[decision] x"), params=Params(decision_headings_only=True))
    assert sorted(f.kind for f in strict) == sorted(TEMPLATE)


def test_only_tagged_messages_are_checked() -> None:
    assert check(notice({}, subject="Code of Conduct report")) == []


def test_quoted_headings_do_not_count() -> None:
    body = "Hello\n\n" + "".join(f"> {line}\n" for text in TEMPLATE.values() for line in text.splitlines())
    assert len(check(plain(body, Subject="[decision] x"))) == 4


def test_components_and_tag_are_configurable() -> None:
    params = Params(
        decision_tag="#entscheidung", decision_components={"folgen": DecisionComponent(headings=("folgen",))}
    )
    (finding,) = check(plain("Hallo", Subject="#Entscheidung"), params=params)
    assert finding.kind == "folgen"
    assert check(plain("Hallo\nFolgen:\nkeine", Subject="#Entscheidung"), params=params) == []


# --- directives to organisers -------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        "Please don't invite this person to future events.",
        "Please do not invite them again.",
        "You should ban them from the venue.",
        "Do not allow them\nto register.",
        "Please DONT INVITE them.",
    ],
)
def test_directives_to_organisers(body: str) -> None:
    (finding,) = check(plain(body), ORGANISER, CONDUCT)
    assert (finding.code, finding.recipients) == ("DIRECTIVE_TO_ORGANISER", (ORGANISER,))
    assert "the decision is theirs" in finding.advice
    assert "an event organiser" in finding.advice


def test_directives_are_fine_to_others_and_information_is_fine_to_organisers() -> None:
    directive = plain("Please don't invite this person.")
    assert check(directive, MOD, CONDUCT) == []
    assert check(directive, ADA, CONDUCT) == []
    information = plain(
        "This person has been the subject of Code of Conduct reports about unwanted contact. "
        "The decision whether to invite them is yours."
    )
    assert check(information, ORGANISER) == []
    assert codes(check(directive, MOD, params=Params(directive_roles=(Role.MODERATOR,)))) == [
        "DIRECTIVE_TO_ORGANISER"
    ]


# --- phrase search ------------------------------------------------------------------------------

Groups = tuple[tuple[str, tuple[str, ...]], ...]


def reference_found_by_group(
    groups: Groups, text: str, tails: dict[str, str] | None = None
) -> dict[str, list[str]]:
    """The phrase search as it was before the anchored walk: one plain Aho-Corasick walk (the oracle).

    Spellings come from ``_phrase_variants``, which both share: the search is under test, not them.
    """
    owners: dict[str, set[str]] = {}
    for group, phrases in groups:
        for phrase in phrases:
            if normalize(phrase):
                for variant in communication._phrase_variants(phrase):
                    owners.setdefault(variant, set()).add(group)
    if not owners:
        return {}
    automaton = ahocorasick.Automaton()
    for variant, members in owners.items():
        automaton.add_word(variant, (variant, tuple(sorted(members))))
    automaton.make_automaton()
    found: dict[str, dict[str, None]] = {}
    for last, (variant, members) in automaton.iter(text):
        start, after = last - len(variant) + 1, last + 1
        if start and text[start - 1].isalnum():
            continue
        if after < len(text) and (text[after].isalnum() or text[after] == "_"):
            continue
        for group in members:
            tail = (tails or {}).get(group)
            if tail and not re.compile(tail).match(text, after):
                continue
            found.setdefault(group, {})[variant] = None
    return {group: list(variants) for group, variants in found.items()}


def assert_same_search(groups: Groups, text: str, tails: dict[str, str] | None = None) -> None:
    expected = reference_found_by_group(groups, text, tails)
    # items(), not the dicts: the order of groups and of phrases is part of the result.
    assert list(communication._found_by_group(groups, text, tails).items()) == list(expected.items())
    for group, phrases in groups:
        tail = (tails or {}).get(group, "")
        alone = reference_found_by_group((("", phrases),), text, {"": tail}).get("", [])
        assert communication._found(phrases, text, tail) == alone


# Words for random phrase lists: "n't" forms, leading punctuation and digits, underscores, letters
# and digits outside ASCII (Arabic-Indic one is a digit), spellings that fold alike.
WORDS = (
    "be", "better", "just", "a", "joke", "it", "was", "didn't", "can't", "won't", "n't", "not",
    "mean", "to", "over-sensitive", "over", "sensitive", "1st", "42", "x1", "_x", "foo_bar",
    "'twas", "-ish", "(see", "(x", "!!", "é", "ß", "ж", "١", "東京", "Éa",
)  # fmt: skip
ASCII_NOISE = (" ", "  ", *"_'.,-()\"!?\n\t\x00xX7a")  # "x", "X", "7", "a" glue words together
OTHER_NOISE = ("é", "ß", "١", "ж", "東", "’", "“", "\u00a0", "\U0001f600", "\ud800")
PHRASE = st.one_of(
    st.lists(st.sampled_from(WORDS), min_size=1, max_size=3).map(" ".join),
    st.sampled_from(("", "   ", "\u200b", "Just  A\nJOKE")),
)
TAILS = st.sampled_from(
    (None, {"A": communication._VAGUE_TAIL}, {"B": r"(?=[ .]|$)"}, {"A": r"(?<=e)", "C": r"\s*x"})
)


def texts_around(data: st.DataObject, phrases: list[str]) -> str:
    """Spellings of the phrases, each after noise that may or may not make a word boundary."""
    variants = [v for phrase in phrases if normalize(phrase) for v in communication._phrase_variants(phrase)]
    # Most texts are ASCII: only they take the anchored walk.
    noise = ASCII_NOISE if data.draw(st.integers(0, 3)) else ASCII_NOISE + OTHER_NOISE
    # Upper case and hyphens for spaces: spellings that must not match, the latter folding alike.
    spellings = [*variants, *(v.upper() for v in variants), *(v.replace(" ", "-") for v in variants)]
    spelling = st.sampled_from(spellings or ["x"])
    glue = st.lists(st.sampled_from(noise), max_size=2).map("".join)
    pairs = data.draw(st.lists(st.tuples(glue, spelling), min_size=1, max_size=8))
    return "".join(before + variant for before, variant in pairs) + data.draw(glue)


@st.composite
def phrase_groups(draw: st.DrawFn) -> Groups:
    # Phrases inside a longer one (at its start, middle or end) decide the order of findings.
    words = draw(st.lists(st.sampled_from(WORDS), min_size=3, max_size=4))
    spans = [" ".join(words[i:j]) for i in range(len(words)) for j in range(i + 1, len(words) + 1)]
    inside = [" ".join(words[i:j]) for i in range(1, len(words)) for j in range(i + 1, len(words))]
    phrase = st.one_of(st.sampled_from(inside), st.sampled_from(spans), PHRASE)
    names = draw(st.lists(st.sampled_from("ABC"), min_size=1, max_size=3))
    lists = [draw(st.lists(phrase, min_size=1, max_size=4)) for _ in names]
    lists[0].insert(0, spans[-1])
    return tuple((name, tuple(phrases)) for name, phrases in zip(names, lists, strict=True))


@settings(max_examples=500, deadline=None)
@given(phrase_groups(), st.data())
def test_search_agrees_with_the_plain_walk_on_random_phrases(groups: Groups, data: st.DataObject) -> None:
    text = texts_around(data, [phrase for _, phrases in groups for phrase in phrases])
    assert_same_search(groups, text, data.draw(TAILS))


DEFAULTS = Params()
DEFAULT_GROUPS: Groups = (
    *((lint.code, getattr(DEFAULTS, communication._LINT_FIELDS[lint.code])) for lint in communication._LINTS),
    ("DIRECTIVES", DEFAULTS.directives),
    *((name, component.cues) for name, component in DEFAULTS.decision_components.items()),
)
DEFAULT_TAILS = {"VAGUE_REQUEST": communication._VAGUE_TAIL}


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_search_agrees_with_the_plain_walk_on_the_default_phrases(data: st.DataObject) -> None:
    text = texts_around(data, [phrase for _, phrases in DEFAULT_GROUPS for phrase in phrases])
    assert_same_search(DEFAULT_GROUPS, text, DEFAULT_TAILS)


@pytest.mark.parametrize(
    ("text", "found"),
    [
        pytest.param("_just a joke", ["just a joke"], id="underscore before is a boundary"),
        pytest.param("just a joke_", [], id="underscore after is not"),
        pytest.param("xjust a joke", [], id="inside a word"),
        pytest.param("1just a joke", [], id="after a digit"),
        pytest.param('("just a joke")', ["just a joke"], id="punctuation around"),
        pytest.param("é just a joke", ["just a joke"], id="text outside ASCII"),
        pytest.param("“just a joke”", ["just a joke"], id="quotes outside ASCII"),
        pytest.param("éjust a joke", [], id="after a letter outside ASCII"),
        pytest.param(
            "it was just a joke.", ["was", "it was just a joke", "just a joke"], id="by end, longest first"
        ),
        pytest.param("it was over-sensitive", ["was", "over-sensitive"], id="spellings that fold alike"),
        pytest.param("over sensitive, over-sensitive", ["over sensitive", "over-sensitive"], id="both"),
        pytest.param("--x1 (x1", ["--x1", "(x1"], id="leading punctuation"),
        pytest.param("", [], id="empty"),
    ],
)
def test_search_examples(text: str, found: list[str]) -> None:
    phrases = ("just a joke", "it was just a joke", "was", "over sensitive", "over-sensitive", "--x1", "(x1")
    assert communication._found(phrases, text) == found
    assert_same_search((("A", phrases),), text)


def test_search_agrees_with_the_plain_walk_on_real_mail(real_mail_dir: Path) -> None:
    texts: list[str] = []
    for path in sorted(real_mail_dir.rglob("*.eml")):
        texts.extend(own.text for own in communication._own_texts(parse_message(path.read_bytes())))
    assert sum(text.isascii() for text in texts) > len(texts) // 2  # the anchored walk is exercised
    for text in texts:
        assert_same_search(DEFAULT_GROUPS, text, DEFAULT_TAILS)
