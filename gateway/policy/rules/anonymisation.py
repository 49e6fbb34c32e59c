"""Mail to administrators, moderators, organisers and reported parties is anonymised.

The guidelines say: *when communicating with administrators, moderators, or the reported party,
carefully anonymize all identifying information about the reporter and witnesses: generalize
specific timestamps that could identify participants; describe observable behaviors without quoting
unique phrasing that could identify sources; use gender-neutral language unless gender is relevant
to the incident.* (Names, usernames and addresses are the reporter-protection rule's job.)

Scope it with `when` (the shipped policy: `recipient_roles: [reported, admin, moderator,
organiser]`). It reads what the recipient reads: the Subject, text and HTML parts (the rendered
text), text attachments, attachment file names, and the Date and Subject of attached messages; never
the message's own Date or Received headers, which always hold a time. All text is normalised first
(case, line breaks, look-alike letters), so a phrase split across lines is still found.

- `PRECISE_TIMESTAMP`: a time of day (`14:32`, `9pm`, `9:15 a.m.`, `10 o'clock`), a date with its
  weekday (`Tuesday 3 March`, `Tue, 3 Mar 2025`, `Friday the 3rd of March`), or a date with an hour
  (`3 March at 10`). Dates alone (`3 March`), version numbers (`3.14`), ratios (`2:1`) and counts
  are not reported. The patterns are regular expressions in `timestamp_patterns`, matched on
  lower-cased text with single spaces: extend them for other languages and formats. A time inside
  quoted text (`> ` lines, the `On Tue, 3 Mar 2025 at 14:32, Pat wrote:` line and what follows it,
  forwarded headers) is reported with kind `quoted`: quoting an earlier message passes on the exact
  time it was written, so do not forward threads to these recipients. A deadline is a precise date
  too (`reply by Friday 14 March`): write "within two weeks", or let the reviewer approve it.
- `GENDERED_LANGUAGE`: a word from `gendered_terms` (he, she, him, her, his, hers, himself, herself,
  man, woman, guy, girl, lady, Mr, Mrs, ...) on word boundaries: "Herbert", "the", "shell" and
  "others" are not matches. Gender is sometimes relevant to an incident, and only a person can
  tell: the shipped policy therefore only *warns* about it (`actions: {GENDERED_LANGUAGE: warn}`),
  and for recipients whose mail is held anyway (audience-review) the reviewing member decides. No
  header or keyword switches the check off: mail clients cannot set headers easily, and a keyword
  would reach the recipient. "Ms" is not in the default list because it is also "ms" (milliseconds).
- `REPORTER_WORDS_QUOTED`: quoted text (see above) repeats a message a reporter or witness sent to
  the committee (from the protected-content fingerprints): at least `quote_min_words` consecutive
  words, or `quote_min_fraction` of that message. In HTML, quotes are recognised by the attribution
  line (`... wrote:`) or `> ` markers in the rendered text. (The protected-content rule reports any
  repeated passage to any outsider; this finding explains that quoting is the problem.)

Every finding says where and what kind, never the text; `conduct-gateway check` shows the sender
what matched (`private_detail`). What the sender is told, e.g. *part 1 (text/plain) gives a precise
time or date. Generalise it: say "an evening in early March" instead of an exact date and time.*
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, replace
from functools import cache
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from gateway.policy.model import Envelope, Finding, ParsedMessage, RuleContext, SegmentKind
from gateway.policy.normalize import normalize

NAME = "anonymisation"

CODES = {
    "PRECISE_TIMESTAMP": "A precise time of day, a date with its weekday, or a date with an hour.",
    "GENDERED_LANGUAGE": "A gendered pronoun or term (he, she, her, man, woman, Mr, ...).",
    "REPORTER_WORDS_QUOTED": "Quoted text repeats a message a reporter or witness sent to the committee.",
}

_WEEKDAY = (
    r"(?:monday|tuesday|wednesday|thursday|friday|saturday|sunday"
    r"|mon|tues|tue|weds|wed|thurs|thur|thu|fri|sat|sun)\.?"
)
_MONTH = (
    r"(?:january|february|march|april|may|june|july|august|september|october|november|december"
    r"|jan|feb|mar|apr|jun|jul|aug|sept|sep|oct|nov|dec)\.?"
)
_DAY = r"(?:[12][0-9]|3[01]|0?[1-9])(?:st|nd|rd|th)?"
_NUMERIC_DATE = (
    r"(?:[0-9]{4}-[0-9]{1,2}-[0-9]{1,2}|[0-9]{1,2}/[0-9]{1,2}(?:/[0-9]{2,4})?"
    r"|[0-9]{1,2}\.[0-9]{1,2}\.[0-9]{2,4})"
)
_AT_HOUR = r"at (?:[01]?[0-9]|2[0-3])(?::[0-5][0-9])?(?: ?[ap]\.? ?m\.?(?![a-z0-9]))?(?![0-9:]|[.,][0-9])"

# Matched on normalised text; a match must start at a word boundary (checked by the rule, which keeps
# the patterns free of leading look-behinds: those would make the regex engine try every position).
DEFAULT_TIMESTAMP_PATTERNS: tuple[str, ...] = (
    # 12-hour clock: 9pm, 9 pm, 9:15 a.m., 9.15pm
    r"[0-9]{1,2}(?<![2-9][0-9]|1[3-9]|00|[^0-9]0)(?:[:.][0-5][0-9])? ?[ap]\.? ?m\.?(?![a-z0-9])",
    # 24-hour clock: 14:32, 09:05:59 (not 2:1, 16:9, 3.14, or runs such as 12:34:56:78)
    r"[0-9]{1,2}(?<![3-9][0-9]|2[4-9]):[0-5][0-9](?::[0-5][0-9])?(?![0-9:]|[.,][0-9])",
    # ISO 8601 date and time: 2025-03-04T10:00:00Z
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}t[0-9]{2}:[0-9]{2}(?::[0-9]{2})?",
    # o'clock: 10 o'clock, ten o'clock
    r"o'? ?clock\b",
    # weekday with a date: Tuesday 3 March, Tue, 3 Mar 2025, Friday the 3rd of March, Tuesday, March 3rd,
    # Tuesday 2025-03-04, Tue 3/3/25
    rf"{_WEEKDAY},? (?:(?:the )?{_DAY}(?: of)? {_MONTH}(?![a-z])|{_MONTH} {_DAY}(?![a-z0-9])"
    rf"|{_NUMERIC_DATE}(?![0-9]))",
    # a date with an hour: 3 March at 10, 2025-03-04 at 9:30, 3/3 at 9pm
    rf"[0-9]{{1,4}}(?:(?:st|nd|rd|th)?(?: of)? {_MONTH}|[-/][0-9]{{1,2}}(?:[-/][0-9]{{2,4}})?"
    r"|\.[0-9]{1,2}\.[0-9]{2,4})"
    rf"(?:,? [0-9]{{4}})?,? {_AT_HOUR}",
    # a date with an hour, month first: March 3rd, 2025 at 9
    rf"{_MONTH} {_DAY}(?:,? [0-9]{{4}})?,? {_AT_HOUR}",
)

DEFAULT_GENDERED_TERMS: tuple[str, ...] = (
    "he", "she", "him", "her", "his", "hers", "himself", "herself",
    "man", "men", "woman", "women", "guy", "guys", "girl", "girls", "boy", "boys",
    "lady", "ladies", "gentleman", "gentlemen", "male", "female",
    "mr", "mrs", "miss", "sir", "madam", "ma'am",
    "husband", "wife", "boyfriend", "girlfriend",
)  # fmt: skip


def _valid_patterns(patterns: tuple[str, ...]) -> tuple[str, ...]:
    for index, pattern in enumerate(patterns):
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"entry {index} is not a valid regular expression: {exc}") from None
    return patterns


def _valid_pattern(pattern: str) -> str:
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"not a valid regular expression: {exc}") from None
    return pattern


def _valid_terms(terms: tuple[str, ...]) -> tuple[str, ...]:
    for index, term in enumerate(terms):
        if not normalize(term):
            raise ValueError(f"entry {index} is empty")
    return terms


class Params(BaseModel):
    """Options of the anonymisation rule."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    timestamp_patterns: Annotated[tuple[str, ...], AfterValidator(_valid_patterns)] = Field(
        DEFAULT_TIMESTAMP_PATTERNS,
        description=(
            "Regular expressions (Python syntax) for precise times and dates, matched on lower-cased "
            "text with single spaces. Replace the list to add languages or formats (copy the defaults "
            "from the rule reference in the source, anonymisation.py)."
        ),
    )
    timestamp_hint: Annotated[str, AfterValidator(_valid_pattern)] = Field(
        "[0-9]|clock",
        description=(
            'A regular expression every timestamp contains a match of (default: a digit, or "clock"). '
            "Only text near such a match is searched, which keeps long messages fast; extend it when "
            "you add a pattern without digits (e.g. `[0-9]|clock|midnight`)."
        ),
    )
    gendered_terms: Annotated[tuple[str, ...], AfterValidator(_valid_terms)] = Field(
        DEFAULT_GENDERED_TERMS,
        description="Gendered words reported on word boundaries, in any case (add other languages' words).",
    )
    check_quotes: bool = Field(
        True, description="Report quoted text that repeats a reporter's or witness's message."
    )
    quote_min_words: int = Field(
        12, ge=1, le=500, description="Consecutive words of a protected message that make a quote a finding."
    )
    quote_min_fraction: float = Field(
        0.3, gt=0, le=1, description="Share of a protected message that makes a quote a finding."
    )


# --- what the recipient reads -------------------------------------------------------------------

_QUOTE_MARK = re.compile(r"^[ \t]*>")
_QUOTE_MARKS = re.compile(r"^[ \t]*(?:>[ \t]?)+")
# "On <date>, <person> wrote:" as English, German, French, Spanish and Italian mail clients write it.
_WROTE = r"(?:(?:wrote|a écrit|escribió|ha scritto)\s?:|schrieb\b[^\n]{0,200}:)\s*$"
_ATTRIBUTION = re.compile(rf"^\s*(?:on|am|le|el|il)\b.{{3,300}}\b{_WROTE}", re.IGNORECASE)
_ATTRIBUTION_START = re.compile(r"^\s*(?:on|am|le|el|il)\b", re.IGNORECASE)
_ATTRIBUTION_END = re.compile(rf"\b{_WROTE}", re.IGNORECASE)
_FORWARD_SEPARATOR = re.compile(
    r"^\s*-{2,}\s*(?:original message|forwarded message|begin forwarded message)\s*-*\s*:?\s*$"
    r"|^\s*begin forwarded message:?\s*$|^\s*_{10,}\s*$",
    re.IGNORECASE,
)
_HEADER_LINE = re.compile(r"^\s*(?:from|sent|date|to|cc|subject)\s*:", re.IGNORECASE)
_FROM_LINE = re.compile(r"^\s*from\s*:", re.IGNORECASE)
# How every line split_quoted treats specially begins (a `>` mark, an attribution, a forwarding
# separator, a forwarded From: header), loosened to a prefix: a line without it is the sender's own.
# Its leading blanks never cross a line break (``[^\S\n]``, not ``\s``): after each "\n" of a run of
# empty or blank lines, ``\s*`` would scan to the end of the run, which made the search quadratic.
_QUOTE_CUE = r"[ \t]*>|[^\S\n]*(?:(?:on|am|le|el|il)\b|-{2}|_{10}|begin forwarded message|from\s*:)"
_LINE_QUOTE_CUE = re.compile(_QUOTE_CUE, re.IGNORECASE)
# The same after a line break: one fast search over a whole text (a literal first character lets
# the regex engine skip to each line break instead of trying every position).
_LATER_LINE_QUOTE_CUE = re.compile(rf"\n(?i:{_QUOTE_CUE})")
_READ_KINDS = frozenset(
    {SegmentKind.TEXT, SegmentKind.HTML_TEXT, SegmentKind.ATTACHMENT_TEXT, SegmentKind.FILENAME}
)
_ATTACHED_HEADERS = ("date:", "subject:")


@dataclass(frozen=True)
class ReadableText:
    """Text a recipient reads, split into the sender's own words and quoted earlier messages."""

    where: str
    kind: SegmentKind
    own: str  # line breaks may be the message's own or "\n": only its normalised form counts
    quoted: str


@dataclass(frozen=True)
class QuoteSplit:
    """A body split into the sender's own words and the quoted earlier messages."""

    own: str
    quoted: str
    # Every line is the sender's own: ``own`` is the text itself with "\n" line breaks, so anything
    # that folds line breaks away (normalize) may read the unsplit text instead.
    quotes_nothing: bool


def split_quoted(text: str) -> tuple[str, str]:
    """(own words, quoted text) of a body: `> ` lines, attribution lines and forwarded blocks are quoted.

    Without `> ` markers (rendered HTML, top-posted replies) everything after an attribution line or
    a forwarding separator is quoted, as mail clients put the earlier thread below.
    """
    split = split_body(text)
    return split.own, split.quoted


def split_body(text: str) -> QuoteSplit:
    """:func:`split_quoted`, also telling whether every line was the sender's own."""
    lines = text.splitlines()
    # Most bodies quote nothing: one search over the text with "\n" line breaks (where every line
    # starts at 0 or after a "\n") shows that without the per-line checks below.
    joined = "\n".join(lines)
    if not (_LINE_QUOTE_CUE.match(joined) or _LATER_LINE_QUOTE_CUE.search(joined)):
        return QuoteSplit(joined, "", quotes_nothing=True)
    own: list[str] = []
    quoted: list[str] = []
    index = 0
    while index < len(lines):
        line = lines[index]
        if not _LINE_QUOTE_CUE.match(line):
            own.append(line)  # none of the checks below can match it
            index += 1
            continue
        attribution = _attribution_length(lines, index)
        if attribution or _FORWARD_SEPARATOR.match(line) or _header_block(lines, index):
            quoted.extend(lines[index : index + attribution])
            index += attribution
            if attribution and _QUOTE_MARK.match(_next_non_blank(lines, index)):
                continue  # marked quote follows: own text may resume after it
            # Indices, never a copy of the rest: a copy per attribution line was quadratic.
            quoted.extend(_QUOTE_MARKS.sub("", lines[item]) for item in range(index, len(lines)))
            break
        if _QUOTE_MARK.match(line):
            quoted.append(_QUOTE_MARKS.sub("", line))
        else:
            own.append(line)
        index += 1
    return QuoteSplit("\n".join(own), "\n".join(quoted), quotes_nothing=len(own) == len(lines))


def _next_non_blank(lines: list[str], index: int) -> str:
    """The first line from ``index`` on that is not blank ("" if none)."""
    return next((lines[item] for item in range(index, len(lines)) if lines[item].strip()), "")


def _attribution_length(lines: list[str], index: int) -> int:
    """How many lines (0, 1 or 2) an "On ..., X wrote:" line at ``index`` takes."""
    line = lines[index]
    if _QUOTE_MARK.match(line):
        return 0
    if _ATTRIBUTION.match(line):
        return 1
    if (
        _ATTRIBUTION_START.match(line)
        and index + 1 < len(lines)
        and _ATTRIBUTION_END.search(lines[index + 1])
        and len(line) + len(lines[index + 1]) <= 300
    ):
        return 2
    return 0


def _header_block(lines: list[str], index: int) -> bool:
    """An inline forwarded header block (From:/Sent:/To:/Subject: lines), as Outlook writes it."""
    return (
        bool(_FROM_LINE.match(lines[index]))
        and index + 1 < len(lines)
        and bool(_HEADER_LINE.match(lines[index + 1]))
    )


def readable_texts(message: ParsedMessage) -> Iterator[ReadableText]:
    """Everything the recipient reads: Subject, body parts, text attachments, file names, attached mail."""
    yield ReadableText("header Subject", SegmentKind.HEADER, message.subject, "")
    seen: set[tuple[str, str]] = set()
    for segment in message.segments:
        if (segment.where, segment.text) in seen:
            continue
        seen.add((segment.where, segment.text))
        if segment.kind in _READ_KINDS:
            split = split_body(segment.text)
            # Unsplit, the text differs from ``own`` only in line breaks, which matching normalises
            # away; it is the string other rules normalise too, so normalize's cache answers.
            own = segment.text if split.quotes_nothing else split.own
            yield ReadableText(segment.where, segment.kind, own, split.quoted)
        elif (
            segment.kind is SegmentKind.HEADER
            and " in " in segment.where  # a header of an attached or forwarded message
            and segment.text[:8].lower().startswith(_ATTACHED_HEADERS)
        ):
            yield ReadableText(segment.where, segment.kind, "", segment.text)


# --- matching -----------------------------------------------------------------------------------


@cache
def _timestamp_regex(patterns: tuple[str, ...]) -> re.Pattern[str]:
    return re.compile("|".join(f"(?:{pattern})" for pattern in patterns))


@cache
def _terms_regex(terms: tuple[str, ...]) -> re.Pattern[str]:
    words = sorted({normalize(term) for term in terms}, key=len, reverse=True)
    alternatives = "|".join(re.escape(word).replace(r"\ ", " ") for word in words)
    # No leading look-behind (slow on long texts): _matches checks where a match starts.
    return re.compile(rf"(?:{alternatives})(?!\w)")


def check(message: ParsedMessage, envelope: Envelope, context: RuleContext, params: Params) -> list[Finding]:
    """Report precise timestamps, gendered words and quoted protected content in what the recipient reads."""
    timestamps = _timestamp_regex(params.timestamp_patterns)
    terms = _terms_regex(params.gendered_terms) if params.gendered_terms else None
    findings: dict[tuple[str, str, str, str], Finding] = {}

    def add(finding: Finding) -> None:
        key = (finding.code, finding.where, finding.kind, finding.case or "")
        if key in findings:
            previous = findings[key]
            detail = ", ".join(dict.fromkeys((*previous.private_detail.split(", "), finding.private_detail)))
            findings[key] = replace(previous, private_detail=detail)
        else:
            findings[key] = finding

    for text in readable_texts(message):
        for region, content in (("own", text.own), ("quoted", text.quoted)):
            if not content.strip():
                continue
            folded = normalize(content)
            found = _matches(timestamps, folded, _near(params.timestamp_hint, folded))
            if found:
                add(_timestamp_finding(text.where, region, found))
            if terms is not None:
                words = _matches(terms, folded)
                if words:
                    add(_gender_finding(text.where, words))
        if params.check_quotes and text.quoted.strip() and text.kind is not SegmentKind.FILENAME:
            for overlap in context.protected_content.overlaps(text.quoted):
                if (
                    overlap.longest_run >= params.quote_min_words
                    or overlap.fraction >= params.quote_min_fraction
                ):
                    add(_quote_finding(text.where, overlap.case, overlap.longest_run, overlap.fraction))
    return list(findings.values())


_WINDOW = 80  # characters searched on either side of a hint: longer than any timestamp


def _near(hint: str, text: str) -> list[tuple[int, int]]:
    """The spans of ``text`` within reach of a hint match, merged."""
    spans: list[tuple[int, int]] = []
    pattern = _compiled(hint)
    position = 0
    while (match := pattern.search(text, position)) is not None:
        # Hints in the next _WINDOW characters are skipped and covered by a wider span instead, so
        # digit-dense text (tables, encoded data) costs one search per _WINDOW characters, not per digit.
        start, end = max(0, match.start() - _WINDOW), min(len(text), match.end() + 2 * _WINDOW)
        if spans and start <= spans[-1][1]:
            spans[-1] = (spans[-1][0], end)
        else:
            spans.append((start, end))
        position = match.end() + _WINDOW
    return spans


@cache
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def _matches(pattern: re.Pattern[str], text: str, spans: list[tuple[int, int]] | None = None) -> list[str]:
    found: dict[str, None] = {}
    for start, end in spans if spans is not None else [(0, len(text))]:
        for match in pattern.finditer(text, start, end):
            # A span may start inside a word: judge the boundary on the whole text.
            if match.group(0) and _starts_a_word(text, match.start()):
                found[_tidy(match.group(0))] = None
    return list(found)


def _starts_a_word(text: str, start: int) -> bool:
    """Whether a match at ``start`` begins a word or number (not "23:45" inside "123:45" or "1.23:45")."""
    before = text[start - 1] if start else " "
    if before.isalnum():
        return False
    return not (before in ".:," and start >= 2 and text[start - 2].isdigit())


_DOTTED_MERIDIEM = re.compile(r"[ap]\. ?m\.$")


def _tidy(matched: str) -> str:
    matched = matched.strip()
    # "9pm." at the end of a sentence: the full stop is not part of the time (unlike in "a.m.").
    return matched[:-1] if matched.endswith(".") and not _DOTTED_MERIDIEM.search(matched) else matched


def _quoted_list(items: list[str]) -> str:
    return ", ".join(f'"{item}"' for item in items)


def _timestamp_finding(where: str, region: str, found: list[str]) -> Finding:
    if region == "quoted":
        advice = (
            f'The quoted earlier message in {where} (its "... wrote:" line, forwarded headers or text) '
            "gives a precise time or date. Delete the quoted text and do not forward threads to this "
            "recipient; describe what happened in your own words."
        )
    else:
        advice = (
            f'{where} gives a precise time or date. Generalise it: say "an evening in early March" '
            "instead of an exact date and time, so that nobody can tell who was there."
        )
    return Finding(
        rule=NAME,
        code="PRECISE_TIMESTAMP",
        where=where,
        kind=region if region == "quoted" else "timestamp",
        advice=advice,
        private_detail=_quoted_list(found),
    )


def _gender_finding(where: str, words: list[str]) -> Finding:
    return Finding(
        rule=NAME,
        code="GENDERED_LANGUAGE",
        where=where,
        kind="gendered-term",
        advice=(
            f'{where} uses gendered words. Use gender-neutral language (they/them, "the person", '
            '"the participant") for everyone involved, unless gender is relevant to the incident; '
            "if it is, the reviewing member can approve it as written."
        ),
        private_detail=_quoted_list(words),
    )


def _quote_finding(where: str, case: str, longest_run: int, fraction: float) -> Finding:
    return Finding(
        rule=NAME,
        code="REPORTER_WORDS_QUOTED",
        where=where,
        kind="quoted",
        advice=(
            f"The quoted text in {where} repeats {longest_run} consecutive words ({fraction:.0%}) of a "
            f"message a reporter or witness sent in case {case}. Delete the quote and describe the "
            "behaviour in your own words instead of quoting the reporter."
        ),
        case=case,
    )
