"""reading: text as a person reads it (quotes, layout, encoded-word edges), table by table, and linear."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.policy.charsets import decode_encoded_words
from gateway.policy.engine import CompiledPolicy, compile_policy, evaluate
from gateway.policy.loader import read_policy
from gateway.policy.matcher import IdentityMatcher
from gateway.policy.mime import parse_message
from gateway.policy.model import (
    Envelope,
    IdentityKind,
    Outcome,
    ProtectedIdentity,
    SegmentKind,
    TextSegment,
    ThreadFacts,
)
from gateway.policy.normalize import normalize
from gateway.policy.reading import GLUED_NAME_CHARS, PARAGRAPH_BREAK, found_in, read_as_human, read_header
from tests.policy.builders import Message, Part, encoded_word, plain, render, with_headers

NAME = ProtectedIdentity("home-shelf", "w1", IdentityKind.NAME, "Noor Haddad")
FINDER = IdentityMatcher.build((NAME,))


def finds_name(text: str) -> bool:
    return FINDER.find(text) == [NAME]


# --- quotes and paragraphs ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("We met Noor\n> Haddad today.", id="unquoted-then-quoted"),
        pytest.param("> We met Noor\n> Haddad today.", id="same-depth"),
        pytest.param("> > We met Noor\n> Haddad today.", id="deeper-then-shallower"),
        pytest.param("> We met Noor\n> > > Haddad today.", id="shallower-then-deeper"),
        pytest.param(">> We met Noor\n>>Haddad today.", id="no-spaces"),
        pytest.param(">>> We met Noor   \n>>>   Haddad today.", id="trailing-and-leading-spaces"),
        pytest.param("| We met Noor\n| Haddad today.", id="bar-quotes"),
        pytest.param("  > We met Noor\r\n  > Haddad today.", id="indented-crlf"),
        pytest.param("> We met\n> Noor\n> Haddad\n> today.", id="one-word-a-line"),
        pytest.param("> > > We met Noor\r> > > Haddad today.", id="cr-line-ends"),
        pytest.param("| Noor | Haddad | 2024-03-01 |", id="plain-text-table-row"),
        pytest.param("NH> We met Noor\nNH> Haddad today.", id="supercite-tags"),
        pytest.param("\uff1e We met Noor\n\uff1e\uff1e Haddad today.", id="fullwidth-markers"),
        pytest.param("\u00a0> We met Noor\n>\u00a0> Haddad today.", id="no-break-spaces"),
        pytest.param("> We met Noor Had-\n> dad today.", id="hyphenated-surname"),
        pytest.param("We met No-   \nor Haddad today.", id="hyphenated-unquoted"),
        pytest.param("> We met Noor > Haddad today, > > she said.", id="re-wrapped-quote"),
    ],
)
def test_a_name_split_by_quote_markers_reads_whole(text: str) -> None:
    assert not finds_name(text)  # the decoded text alone hides it
    assert finds_name(read_as_human(text, SegmentKind.TEXT))


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("> We met Noor\n>\n> Haddad today.", id="quoted-blank-line"),
        pytest.param("> We met Noor\n> \n> > Haddad today.", id="quoted-blank-line-depth-change"),
        pytest.param("We met Noor\n\n> Haddad wrote:", id="blank-line-before-quote"),
        pytest.param("> Noor left.\n> The venue and\n> Haddad", id="words-in-other-places"),
    ],
)
def test_words_of_different_paragraphs_are_not_joined(text: str) -> None:
    assert not finds_name(read_as_human(text, SegmentKind.TEXT))


@pytest.mark.parametrize(
    ("text", "reading"),
    [
        pytest.param("> Anna Smith-\n> Jones", "Anna Smith-Jones", id="capital-keeps-the-hyphen"),
        pytest.param("> self-\n> aware", "selfaware", id="small-letter-drops-it"),
        pytest.param("> 2024-\n> 03", "2024-\n03", id="digits-are-not-words"),
        pytest.param("-- \nAda", "-- \nAda", id="signature-separator"),
        pytest.param("a -> b\nc", "a -> b\nc", id="arrow-inside-a-line"),
        pytest.param("if a > b:\n    c", "if a > b:\n    c", id="comparison-in-unquoted-text"),
    ],
)
def test_line_breaks_inside_words(text: str, reading: str) -> None:
    assert read_as_human(text, SegmentKind.TEXT) == reading


def test_a_paragraph_break_is_marked_in_the_reading() -> None:
    assert read_as_human("> a\n>\n> b\n> c", SegmentKind.TEXT) == f"a{PARAGRAPH_BREAK}b\nc"


def test_text_without_quotes_or_tables_reads_as_itself() -> None:
    text = "Dear all,\n\nsee the notes below.\n"
    assert read_as_human(text, SegmentKind.TEXT) is text


@pytest.mark.parametrize("kind", [SegmentKind.HEADER, SegmentKind.FILENAME])
def test_headers_and_file_names_are_read_elsewhere(kind: SegmentKind) -> None:
    text = "> Noor\n> Haddad"
    assert read_as_human(text, kind) is text


def test_rendered_html_blank_lines_come_from_markup_and_join() -> None:
    # <div>&gt; Noor</div><div>&gt; Haddad</div> renders with an empty line between the quoted lines.
    assert finds_name(read_as_human("\n> Noor\n\n\n> Haddad\n", SegmentKind.HTML_TEXT))
    assert not finds_name(read_as_human("\n> Noor\n>\n> Haddad\n", SegmentKind.HTML_TEXT))


# --- encoded-word edges in headers ----------------------------------------------------------------


def words(*pieces: str, encoding: str = "Q", charset: str = "utf-8") -> str:
    return " ".join(encoded_word(piece, charset, encoding) for piece in pieces)


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(words("w1", "Noor Haddad"), id="glued-before"),
        pytest.param(words("Noor Haddad", "x2"), id="glued-after"),
        pytest.param(words("abc", "Noor Haddad", "xyz"), id="glued-both-sides"),
        pytest.param(words("w1", "No", "or Ha", "ddad", encoding="B"), id="glued-before-split-inside"),
        pytest.param(words("ab", "Noo", "r Hadd", "ad", "cd"), id="glued-both-sides-split-inside"),
        pytest.param(words("w1", "Noor Haddad", charset="iso-8859-1"), id="latin-1"),
        pytest.param(words("Zoë", "Noor Haddad", charset="iso-8859-1", encoding="B"), id="latin-1-letter"),
        pytest.param("w1" + encoded_word("Noor Haddad"), id="plain-text-glued-before"),
        pytest.param(encoded_word("Noor Haddad") + "x2", id="plain-text-glued-after"),
        pytest.param(encoded_word("w1") + "Noor Haddad", id="plain-name-after-encoded-word"),
        pytest.param(words("w1", "Noor") + " " + words("Haddad", "x2"), id="two-runs"),
        pytest.param(words("w1") + "\t" + words("Noor Haddad", encoding="B"), id="q-then-b-tab"),
        pytest.param(words("w1\u200b", "Noor Haddad"), id="invisible-character-at-the-edge"),
        pytest.param(words("w1", "\u0301Noor Haddad"), id="combining-mark-at-the-edge"),
    ],
)
def test_an_encoded_word_edge_is_a_word_boundary(raw: str) -> None:
    assert not finds_name(decode_encoded_words(raw))  # as displayed: glued
    assert finds_name(read_header(raw, decode_encoded_words))


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param("Noor Haddad", id="no-encoded-words"),
        pytest.param(words("w1 ", "Noor Haddad"), id="space-inside-the-word"),
        pytest.param(words("w1", " Noor Haddad"), id="space-at-the-start"),
        pytest.param(words("Noor", " Haddad"), id="split-at-a-space"),
    ],
)
def test_no_second_reading_without_glued_edges(raw: str) -> None:
    assert read_header(raw, decode_encoded_words) == ""


def test_a_character_split_across_encoded_words_stays_whole() -> None:
    data = "wö".encode()
    raw = f"=?utf-8?Q?w=C3?= =?utf-8?Q?={data[-1]:02X}?=" + encoded_word("Noor Haddad")
    assert decode_encoded_words(raw) == "wöNoor Haddad"
    reading = read_header(raw, decode_encoded_words)
    assert "wö Noor Haddad" in reading
    assert "\ufffd" not in reading


def test_a_window_never_cuts_inside_a_word_that_is_not_an_edge() -> None:
    # "Haddadson" is glued to nothing by encoding: no window may end after "Haddad".
    raw = words("w1", "Noor Haddadson and others")
    assert not finds_name(read_header(raw, decode_encoded_words))


# --- through the decoder --------------------------------------------------------------------------


def segment_readings(raw: bytes) -> list[TextSegment]:
    return [segment for segment in parse_message(raw).segments if segment.reading]


def test_the_decoder_gives_quoted_parts_a_reading() -> None:
    (segment,) = segment_readings(plain("> We met Noor\n> Haddad today."))
    assert segment.kind is SegmentKind.TEXT
    assert found_in(FINDER, segment) == [NAME]


def test_the_decoder_gives_glued_headers_a_reading() -> None:
    raw = render(Message(headers=(("Subject", words("w1", "Noor Haddad")),), body=Part(body="x")))
    (segment,) = segment_readings(raw)
    assert segment.where == "header Subject"
    assert segment.text == "Subject: w1Noor Haddad"  # displayed as RFC 2047 says
    assert found_in(FINDER, segment) == [NAME]


@pytest.mark.parametrize(
    "parameter",
    [
        pytest.param(f'filename="{words("w1", "Noor Haddad.txt")}"', id="quoted"),
        pytest.param(f"filename={words('w1', 'Noor Haddad.txt').replace(' ', '')}", id="unquoted-adjacent"),
        pytest.param(f'name="{words("Noor Haddad", "x2.txt", encoding="B")}"', id="name-parameter"),
    ],
)
def test_file_names_glued_by_encoded_words_are_read_apart(parameter: str) -> None:
    part = Part(
        content_type="application/octet-stream",
        body=b"\x00binary",
        encoding="base64",
        charset=None,
        headers=(("Content-Disposition", f"attachment; {parameter}"),),
    )
    names = [s for s in parse_message(render(Message(body=part))).segments if s.kind is SegmentKind.FILENAME]
    assert names and not any(finds_name(segment.text) for segment in names)
    assert any(found_in(FINDER, segment) == [NAME] for segment in names)


def test_parts_read_as_written_get_no_second_reading() -> None:
    assert segment_readings(plain("Dear all,\n\nNoor Haddad wrote the notes.")) == []


def test_found_in_reports_each_identity_once() -> None:
    segment = TextSegment("part 1", SegmentKind.TEXT, "Noor Haddad\n> Noor Haddad", reading="Noor Haddad")
    assert found_in(FINDER, segment) == [NAME]


# --- forwarded header blocks ----------------------------------------------------------------------

SURNAME_FIRST = "haddad, noor"


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        pytest.param(
            "text/plain",
            "-----Original Message-----\nFrom: Haddad, Noor <noor@example.net>\nSent: Monday\n",
            id="outlook-plain",
        ),
        pytest.param(
            "text/plain",
            "> -----Original Message-----\n> From: Haddad,\n> Noor [mailto:noor@example.net]\n",
            id="outlook-plain-quoted-and-wrapped",
        ),
        pytest.param(
            "text/html",
            '<div style="border-top:solid #E1E1E1 1pt"><p class="MsoNormal"><b><span>From:</span></b>'
            "<span> Haddad, Noor &lt;noor@example.net&gt;<br><b>Sent:</b> Monday</span></p></div>",
            id="outlook-html",
        ),
        pytest.param(
            "text/html",
            "<blockquote><div>&gt; From: Haddad,</div><div>&gt; Noor</div></blockquote>",
            id="html-quoted-lines",
        ),
        pytest.param(
            "text/plain",
            f"---------- Forwarded message ---------\nFrom: {encoded_word('Haddad, Noor')} <n@example.net>",
            id="gmail-block-with-encoded-word",
        ),
        pytest.param(
            "text/plain",
            "Begin forwarded message:\n\n> From: Haddad, Noor <noor@example.net>\n> Subject: notes\n",
            id="apple-mail",
        ),
    ],
)
def test_forwarded_header_blocks_reach_the_matcher_intact(content_type: str, body: str) -> None:
    raw = render(Message(body=Part(content_type=content_type, body=body)))
    readings = [
        normalize(segment.reading or segment.text)
        for segment in parse_message(raw).segments
        if segment.kind in (SegmentKind.TEXT, SegmentKind.HTML_TEXT)
    ]
    assert any(SURNAME_FIRST in reading for reading in readings), readings


# --- linear time ----------------------------------------------------------------------------------


def operations(function: Callable[[], object]) -> int:
    """Python lines executed by ``function`` (regular expressions are linear by construction)."""
    count = 0

    def tracer(frame: FrameType, event: str, arg: Any) -> Callable[..., Any] | None:
        nonlocal count
        if event == "line":
            count += 1
        return tracer

    previous = sys.gettrace()
    sys.settrace(tracer)
    try:
        function()
    finally:
        sys.settrace(previous)
    return count


QUOTED = st.text(alphabet="ab >|\n", min_size=1, max_size=200)
PIECES = st.lists(st.text(alphabet="aböc 1", min_size=1, max_size=4), min_size=1, max_size=40)


@settings(max_examples=40, deadline=None)
@given(QUOTED)
def test_reading_text_is_linear(text: str) -> None:
    once = operations(lambda: read_as_human(text, SegmentKind.TEXT))
    twice = operations(lambda: read_as_human(text * 2, SegmentKind.TEXT))
    assert twice <= 2 * once + 50


@settings(max_examples=40, deadline=None)
@given(PIECES)
def test_reading_a_header_is_linear(pieces: list[str]) -> None:
    # Long enough that every glued edge has its full reach of neighbours: from there on, twice the
    # header costs twice the work, plus the pairs of edges that meet where the copies join.
    copies = 1 + 8 * GLUED_NAME_CHARS // len("".join(pieces))
    raw = " ".join([words(*pieces, encoding="B")] * copies)
    once = operations(lambda: read_header(raw, decode_encoded_words))
    twice = operations(lambda: read_header(raw + " " + raw, decode_encoded_words))
    assert twice <= 2 * once + 5 * GLUED_NAME_CHARS**2


# --- the shipped policy, end to end ---------------------------------------------------------------

REPO = Path(__file__).resolve().parents[2]
MODS = "mods@forum.example.com"


@pytest.fixture(scope="module")
def shipped() -> CompiledPolicy:
    document, source = read_policy(REPO / "gateway" / "data" / "default-policy.yaml")
    return compile_policy(document, source)


@pytest.mark.parametrize(
    ("subject", "body"),
    [
        pytest.param("Notes", "> > As Robin\n> Castellano said, the\n> venue was loud.\n", id="quoted-lines"),
        pytest.param(words("w1", "Robin Castellano", encoding="B"), "See the subject.\n", id="glued-subject"),
    ],
)
def test_the_shipped_policy_refuses_a_split_name_to_an_outsider(
    shipped: CompiledPolicy, subject: str, body: str
) -> None:
    headers = with_headers(To=MODS, Cc="conduct@example.org", Subject=subject)
    raw = render(Message(headers=headers, body=Part(body=body)))
    envelope = Envelope("ada.quill@example.org", (MODS, "conduct@example.org"), "ada.quill@example.org")
    verdict = evaluate(parse_message(raw), envelope, shipped, ThreadFacts())
    assert verdict.outcome is Outcome.REJECT
    assert "PROTECTED_IDENTITY" in [decision.finding.code for decision in verdict.decisions]
