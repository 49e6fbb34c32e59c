"""The multipart splitter gives exactly the feedparser's tree, or gives up (and the feedparser parses).

``mime_split.split_multipart`` finds boundary lines with ``str.find``; ``mime_parser.parse_fully``
(``email.message_from_bytes`` with compat32) is the reference. Generated multipart trees, well-formed
and hostile (boundaries that are prefixes of one another or reused when nested, boundary-like lines
in bodies, missing and doubled boundary lines, RFC 2231 boundaries, broken base64 and
quoted-printable, bare CRs, header defects, attached messages, digests, delivery reports), must give
the same Message objects (every attribute) and the same :class:`ParsedMessage`.
"""

from __future__ import annotations

from pathlib import Path

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from gateway.policy import mime_parser
from gateway.policy.mime_split import split_multipart
from tests.policy.test_mime_fast_path import assert_identical, corpus, state

BOUNDARIES = ["a", "ab", "b", "a--", "x y"]
HEADERS = st.sampled_from(
    [
        b"Subject: hello",
        b"From: Noor Haddad <noor@example.org>",
        b"X-Note: --a",
        b"Content-Transfer-Encoding: base64",
        b"Content-Transfer-Encoding: quoted-printable",
        b"Content-Transfer-Encoding: 7bit",
        b"Content-Disposition: attachment; filename*=utf-8''caf%C3%A9.txt",
        b'Content-Disposition: attachment;\r\n filename*0="notes"; filename*1=".txt"',
        b"Subject: =?utf-8?q?caf=C3=A9?=",
        b"X-Folded: one\r\n\ttwo",
        b"Subject:",
        b"X-Tab:\tvalue \t",
        b"Subject:\x0bodd\x0c breaks\x1c \xc2\x85 \xe2\x80\xa8",
        b"X-Colons: a: b: c",
    ]
)
ODD_HEADERS = st.sampled_from(
    [
        b"no colon here",
        b" continuation first",
        b"From sender@example.org Mon Dec  2 10:00:00 2024",  # read as a Unix From line only if first
        b": no name",
        b"X Odd: a space in the name",
        b"\xc3\xa9: an 8-bit name",
    ]
)
LEAF_TYPES = st.sampled_from(
    [b"text/plain", b"text/plain; charset=utf-8", b"text/html", b"application/octet-stream", b"text", b""]
)
PLAIN_BODY = [
    b"",
    b"plain words",
    b"Noor Haddad wrote this",
    b"From someone",
    b"Tm9vciBIYWRkYWQ=",
    b"caf=C3=A9 =",
    b"long line " * 700,  # longer than the feedparser's 8192-character reads
]
BODY = st.sampled_from(
    [
        *PLAIN_BODY,
        b"--a",
        b"--a--",
        b"--ab",
        b"--ab--",
        b"--a  ",
        b"--a--\t",
        b"--a--x",
        b"--b",
        b"--x y",
        b" --a",
        b"Content-Type: text/plain",
        b"Tm9vc!iBIYW",
        b"=ZZ broken",
        b"\xc3\xa9t\xc3\xa9 \xff",
    ]
)


@st.composite
def entity(draw: st.DrawFn, depth: int, canonical: bool) -> list[bytes]:
    """The lines of one part or message (without line breaks).

    ``canonical``: nothing unusual (one boundary per depth, no boundary-like lines in bodies).
    """
    body = st.sampled_from(PLAIN_BODY) if canonical else BODY
    headers = draw(st.lists(HEADERS, max_size=3))
    if not canonical and draw(st.integers(0, 9)) == 0:
        headers.insert(draw(st.integers(0, len(headers))), draw(ODD_HEADERS))
    kinds = ["leaf", "leaf", "multipart", "message"] if depth < 3 else ["leaf"]
    kind = draw(st.sampled_from(kinds))
    if kind == "message":
        subtype = draw(
            st.sampled_from([b"rfc822", b"rfc822", b"delivery-status"] if not canonical else [b"rfc822"])
        )
        inner = draw(entity(depth + 1, canonical))
        return [*headers, b"Content-Type: message/" + subtype, b"", *inner]
    if kind == "leaf":
        content_type = draw(LEAF_TYPES)
        lines = [*headers, b"Content-Type: " + content_type] if content_type else headers
        if canonical or draw(st.integers(0, 9)):
            lines.append(b"")  # the empty line after the header block
        return lines + draw(st.lists(body, min_size=1 if canonical else 0, max_size=5))
    boundary = f"q{depth}" if canonical else draw(st.sampled_from(BOUNDARIES))
    subtype = draw(
        st.sampled_from([b"mixed", b"alternative", b"related"] + ([] if canonical else [b"digest"]))
    )
    parameter = draw(
        st.sampled_from(
            [
                b'boundary="%s"' % boundary.encode(),
                b"boundary*=''%s" % boundary.replace(" ", "%20").encode(),
                b'boundary*0="%s"; boundary*1=""' % boundary.encode(),
            ]
        )
    )
    if canonical:  # a multipart may not be base64 or quoted-printable
        headers = [header for header in headers if b"base64" not in header and b"quoted" not in header]
    lines = [*headers, b"Content-Type: multipart/" + subtype + b"; " + parameter, b""]
    lines += draw(st.lists(body, max_size=2))  # the preamble
    separator = b"--" + boundary.encode()
    for _ in range(draw(st.integers(1 if canonical else 0, 3))):
        lines.append(
            separator + draw(st.sampled_from([b"", b"", b"  "] if canonical else [b"", b"\t", b"--"]))
        )
        if not canonical and draw(st.integers(0, 9)) == 0:
            lines.append(separator)  # a second boundary line in a row
        lines += draw(entity(depth + 1, canonical))
    if canonical or draw(st.integers(0, 5)):
        lines.append(separator + b"--")
    return lines + draw(st.lists(body, max_size=2))  # the epilogue


@st.composite
def messages(draw: st.DrawFn, canonical: bool) -> bytes:
    lines = [b"From: Ada Quill <ada@example.org>", *draw(entity(1, canonical))]
    # The top level is always a multipart here: single parts have their own fast path.
    head = lines[: lines.index(b"")] if b"" in lines else lines
    if not any(line.startswith(b"Content-Type: multipart/") for line in head):
        lines[1:1] = [b"Content-Type: multipart/mixed; boundary=z", b"", b"--z"]
        lines += [b"--z--"]
    if canonical or draw(st.integers(0, 4)):
        breaks = [draw(st.sampled_from([b"\r\n", b"\n"]))] * len(lines)
    else:
        breaks = draw(
            st.lists(st.sampled_from([b"\r\n", b"\n", b"\r"]), min_size=len(lines), max_size=len(lines))
        )
    raw = b"".join(line + line_break for line, line_break in zip(lines, breaks, strict=True))
    return raw if draw(st.booleans()) else raw.rstrip(b"\r\n")


def split(raw: bytes) -> bool:
    """Whether the splitter (not the feedparser) reads ``raw``."""
    return split_multipart(raw.decode("ascii", "surrogateescape")) is not None


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages(canonical=False))
def test_generated_multiparts_parse_identically(raw: bytes) -> None:
    event("splitter" if split(raw) else "feedparser")
    assert_identical(raw)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages(canonical=True))
def test_well_formed_multiparts_take_the_splitter(raw: bytes) -> None:
    # Without this, a splitter that always gave up would pass every equality test.
    assert split(raw)
    assert_identical(raw)


def test_splitter_serves_most_real_multiparts(real_mail_dir: Path) -> None:
    taken = []
    for name in corpus():
        raw = (real_mail_dir / name).read_bytes()
        if mime_parser.parse_fully(raw).is_multipart() and split(raw):
            taken.append(name)
            assert state(split_multipart(raw.decode("ascii", "surrogateescape"))) == state(  # type: ignore[arg-type]
                mime_parser.parse_fully(raw)
            )
    # 104 of the corpus's 152 multiparts (the others have delivery reports, header defects, missing
    # boundary lines or bare CRs); every real message is also compared in test_mime_fast_path.
    assert len(taken) >= 100
