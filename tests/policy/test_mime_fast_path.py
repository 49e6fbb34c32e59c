"""The single-part fast path of the top-level parse gives exactly what the full feedparser parse gives.

``mime_parser.parse_email`` parses only the header block of a message that is not a multipart or
message/* and sets the rest of the text as its payload; ``mime_parser.parse_fully`` is the reference
(``email.message_from_bytes`` with compat32). Both the Message objects (every attribute) and the
:class:`ParsedMessage` built from them must be equal.
"""

from __future__ import annotations

from email.message import Message
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from gateway.policy import mime, mime_parser
from tests.conftest import REAL_MAIL


def state(message: Message) -> dict[str, object]:
    """Every attribute of a parsed Message, comparable with ``==`` (defects have no equality)."""
    out: dict[str, object] = {}
    for key, value in vars(message).items():
        if key == "defects":
            value = [(type(defect), defect.args, vars(defect)) for defect in value]
        elif isinstance(value, list):
            value = [state(item) if isinstance(item, Message) else item for item in value]
        out[key] = value
    return out


def fast(raw: bytes) -> bool:
    """Whether the fast path is taken for ``raw``."""
    return mime_parser.single_part(raw.decode("ascii", "surrogateescape")) is not None


def assert_identical(raw: bytes) -> None:
    assert state(mime_parser.parse_email(raw)) == state(mime_parser.parse_fully(raw))
    assert mime.parse_message(raw) == mime._decode(raw, mime_parser.parse_fully)


def corpus() -> list[str]:
    return sorted(str(path.relative_to(REAL_MAIL)) for path in REAL_MAIL.rglob("*.eml"))


@pytest.mark.parametrize("name", corpus())
def test_real_message_parses_identically(real_mail_dir: Path, name: str) -> None:
    assert_identical((real_mail_dir / name).read_bytes())


def test_fast_path_serves_most_single_part_real_mail(real_mail_dir: Path) -> None:
    # Without this, a fast path that always fell back would pass every equality test.
    taken = [name for name in corpus() if fast((real_mail_dir / name).read_bytes())]
    # 172 of the 178 that are neither multipart nor message/* (the rest have header defects or no
    # empty line after their headers).
    assert len(taken) >= 170
    for name in taken:
        full = mime_parser.parse_fully((real_mail_dir / name).read_bytes())
        assert full.get_content_maintype() not in ("multipart", "message")


def test_benchmark_message_takes_the_fast_path() -> None:
    # The shape of bench/relay.py's build_message (8 KB of plain text).
    raw = (
        b"From: Bench Member <maya.member@example.org>\r\nTo: <ada@example.org>\r\n"
        b"Cc: Conduct Committee <conduct@example.org>\r\nSubject: relay benchmark\r\n"
        b"Message-ID: <bench.8192@example.org>\r\nDate: Mon, 02 Dec 2024 10:00:00 +0000\r\n"
        b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
    ) + b"conduct committee report witness thread reply policy relay queue mail\r\n" * 110
    assert fast(raw)
    assert_identical(raw)


HEAD = b"From: a@example.org\r\nTo: b@example.org\r\nSubject: hello\r\n"


def across_chunks(line_break: bytes, rest: bytes) -> bytes:
    """A header line whose ``line_break`` starts at the last character of the parser's first 8192."""
    return b"X-Pad: " + b"p" * (8191 - len(b"X-Pad: ")) + line_break + rest


@pytest.mark.parametrize(
    ("raw", "fast_path"),
    [
        pytest.param(HEAD + b"\r\nbody\r\n", True, id="crlf"),
        pytest.param(HEAD.replace(b"\r\n", b"\n") + b"\nbody\n", True, id="lf"),
        pytest.param(HEAD + b"\n\r\nbody", True, id="mixed-breaks-no-final-newline"),
        pytest.param(HEAD + b"\r\n", True, id="empty-body"),
        pytest.param(HEAD + b"\n\r", True, id="separator-bare-cr-at-end"),
        pytest.param(HEAD + b"\n\rbody\r", True, id="separator-bare-cr"),
        pytest.param(HEAD + b"\r\n\r\n\r\nbody", True, id="body-starts-with-empty-lines"),
        pytest.param(b"From someone Mon Dec  2 10:00:00 2024\n" + HEAD + b"\nbody", True, id="unixfrom"),
        pytest.param(HEAD + b"Subject:\r\n folded\r\n\tagain\r\n\r\nbody", True, id="continuation"),
        pytest.param(
            HEAD + b"Subject: a\x0bb\x0cc\x1cd\x1de\x1ef\x85g\xe2\x80\xa8h\r\n\r\nx\x0b\x85\r\n",
            True,
            id="odd-breaks",
        ),
        pytest.param(HEAD + b"Subject: caf\xc3\xa9 \xff\r\n\r\n\xe9t\xe9\r\n", True, id="8-bit"),
        pytest.param(HEAD + b"Content-Type: text/html\r\n\r\n<p>hi</p>", True, id="html"),
        pytest.param(HEAD + b"Content-Type: text\r\n\r\nbody", True, id="garbled-type"),
        pytest.param(HEAD + b"Content-Type: application/octet-stream\n\n\x00\x01", True, id="binary"),
        pytest.param(across_chunks(b"\r\n", HEAD + b"\r\nbody"), True, id="crlf-across-chunks"),
        pytest.param(across_chunks(b"\r", HEAD + b"\r\nbody"), True, id="bare-cr-across-chunks"),
        pytest.param(across_chunks(b"\r\n", b"\r\nbody"), True, id="separator-across-chunks"),
        pytest.param(across_chunks(b"\n", b"\r\nbody"), True, id="separator-after-chunks"),
        pytest.param(HEAD + b"X: y\r\r\nbody\r\n\r\nmore", False, id="separator-after-bare-cr"),
        pytest.param(HEAD + b"\r\r\nbody", True, id="separator-bare-cr-then-crlf"),
        pytest.param(b"\r\n" + HEAD + b"\r\nbody", False, id="leading-empty-line"),
        pytest.param(b"\n\nbody", False, id="only-empty-lines"),
        pytest.param(HEAD + b"no colon here\r\nX: y\r\n\r\nbody", False, id="line-without-colon"),
        pytest.param(HEAD + b"Subject: a\rb\r\n\r\nbody", False, id="bare-cr-in-header"),
        pytest.param(HEAD + b":no name\r\n\r\nbody", False, id="missing-header-name"),
        pytest.param(b" first line folded\r\n" + HEAD + b"\r\nbody", False, id="first-line-continuation"),
        pytest.param(HEAD + b"From elsewhere\r\n\r\nbody", False, id="from-line-last"),
        pytest.param(HEAD + b"From elsewhere\r\nX: y\r\n\r\nbody", False, id="from-line-misplaced"),
        pytest.param(HEAD + b"body without separator\r\n", False, id="no-separator"),
        pytest.param(HEAD, False, id="headers-only"),
        pytest.param(b"", False, id="empty"),
        pytest.param(
            HEAD + b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\nx\r\n--b--\r\n",
            False,
            id="multipart",
        ),
        pytest.param(
            HEAD + b"Content-Type:\r\n Multipart/Mixed; boundary=b\r\n\r\n--b\r\n\r\nx\r\n--b--",
            False,
            id="multipart-folded",
        ),
        pytest.param(
            HEAD + b"Content-Type: multipart/mixed\r\n\r\nno boundary", False, id="multipart-no-boundary"
        ),
        pytest.param(
            HEAD + b"X: y\r\nContent-Type: message/rfc822\r\n\r\nSubject: inner\r\n\r\nx", False, id="message"
        ),
        pytest.param(
            HEAD + b"Content-Type: message/delivery-status\r\n\r\nA: b\r\n\r\nC: d\r\n",
            False,
            id="delivery-status",
        ),
    ],
)
def test_edge_cases(raw: bytes, fast_path: bool) -> None:
    assert fast(raw) == fast_path
    assert_identical(raw)


# --- generated messages -----------------------------------------------------------------------------

BREAKS = st.sampled_from([b"\r\n", b"\n", b"\r\n", b"\n", b"\r"])
# Line breaks for str.splitlines, not for the feedparser (from bytes, U+0085 and U+2028 only reach it as
# surrogates of their UTF-8 bytes).
ODD = "\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029\x00\t"
TEXT = st.lists(st.sampled_from([*"aZ09 :;=/-\"'<>@.", *ODD, "é", "Jin Park"]), max_size=12).map("".join)
WORDS = st.one_of(
    *[TEXT.map(str.encode)] * 3,
    st.binary(max_size=6),  # raw 8-bit bytes, UTF-8 or not, and any control character (CR and LF too)
)
TYPES = st.sampled_from(
    [
        b"text/plain",
        b"text/plain; charset=utf-8",
        b"text/html",
        b"text",
        b"",
        b"application/octet-stream; name=a.txt",
        b"multipart/mixed; boundary=b",
        b'Multipart/Alternative; boundary="b"',
        b"multipart/mixed",
        b"message/rfc822",
        b"message/delivery-status",
        b"MESSAGE/partial",
        b"text/rfc822-headers",
    ]
)
NAMES = st.sampled_from([b"Subject", b"From", b"To", b"Cc", b"X-Odd", b"Content-Transfer-Encoding", b"Date"])
FIELD = st.tuples(NAMES, st.just(b": "), WORDS).map(b"".join)
CONTENT_TYPE = st.tuples(st.sampled_from([b"Content-Type: ", b"content-type:", b"Content-Type:\r\n "]), TYPES)
HEADER_LINES = st.one_of(
    *[FIELD] * 4,  # mostly well-formed fields, so that many messages take the fast path
    CONTENT_TYPE.map(b"".join),
    st.tuples(st.sampled_from([b" ", b"\t"]), WORDS).map(b"".join),  # a continuation
    st.tuples(st.just(b"From "), WORDS).map(b"".join),
    st.tuples(st.sampled_from([b"", b":", b"Bad Name: "]), WORDS).map(b"".join),  # not a header
)
BODY_LINES = st.one_of(
    WORDS,
    st.sampled_from([b"", b"--b", b"--b--", b"Content-Type: text/plain", b"Subject: inner", b"From x", b" "]),
)


def lines(strategy: st.SearchStrategy[bytes], max_size: int) -> st.SearchStrategy[bytes]:
    return st.lists(st.tuples(strategy, BREAKS).map(b"".join), max_size=max_size).map(b"".join)


@st.composite
def messages(draw: st.DrawFn) -> bytes:
    unixfrom = draw(st.sampled_from([b"", b"", b"", b"From sender@example.org Mon Dec  2 10:00:00 2024"]))
    raw = unixfrom + (draw(BREAKS) if unixfrom else b"") + draw(lines(HEADER_LINES, 8))
    raw += draw(st.sampled_from([b"\r\n", b"\n", b"\r", b""]))  # the separator, or none
    raw += draw(lines(BODY_LINES, 12)) + draw(st.sampled_from([b"", b"last line, no break"]))
    return raw


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages())
def test_generated_messages_parse_identically(raw: bytes) -> None:
    event("fast path" if fast(raw) else "full parse")
    assert_identical(raw)


# Structure soup: pieces that move the header/body boundary, in any order, after a header or not.
PIECES = st.sampled_from([
    b"\r", b"\n", b"\r\n", b"\x0b", b"\x1c", b"\x85", b"\xe2\x80\xa8",  # line breaks, real or not
    b"A: b", b" c", b"From x", b":", b"x", b"--b",
    b"Content-Type: multipart/mixed; boundary=b", b"Content-Type: message/rfc822",
])  # fmt: skip
SOUP = st.tuples(
    st.sampled_from([b"", b"A: b\r\n", b"A: b\n\n"]), st.lists(PIECES, max_size=30).map(b"".join)
)


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(SOUP.map(b"".join))
def test_structure_soup_parses_identically(raw: bytes) -> None:
    event("fast path" if fast(raw) else "full parse")
    assert_identical(raw)
