"""apply_rewrite: Cc and banner changes made in place, everything else byte-identical."""

from __future__ import annotations

import base64
import email
import email.policy
import quopri
import re
from email.message import EmailMessage, Message
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.errors import PolicyError
from gateway.policy.mime import parse_message
from gateway.policy.model import Address, Rewrite
from gateway.policy.rewrite import apply_rewrite

CONDUCT = Address("", "conduct@example.org")
BANNER = ("[+ Maya Example]", "[- Alex Doe]")


def crlf(*lines: str) -> bytes:
    return "\r\n".join(lines).encode("utf-8")


def parse(raw: bytes) -> EmailMessage:
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def no_bare_lf(raw: bytes) -> bool:
    return raw.count(b"\n") == raw.count(b"\r\n")


def header_block(raw: bytes) -> bytes:
    return raw.split(b"\r\n\r\n", 1)[0]


def body(raw: bytes) -> bytes:
    return raw.split(b"\r\n\r\n", 1)[1]


def texts(message: EmailMessage) -> list[tuple[str, str]]:
    """(content type, decoded text) of every text/plain and text/html leaf, in order."""
    found = []
    for part in message.walk():
        if part.get_content_type() in ("text/plain", "text/html") and not part.is_attachment():
            content = part.get_content()
            assert isinstance(content, str)
            found.append((part.get_content_type(), content))
    return found


SIMPLE = crlf(
    "From: Ada Quill <ada@example.org>",
    "To: Maya Example <maya@example.com>",
    "Subject: Hello",
    "Message-ID: <m1@example.org>",
    "",
    "Hello Maya,",
    "",
    "thanks.",
    "",
)


# --- Cc ------------------------------------------------------------------------------------------


def test_cc_added_after_to_when_there_is_none() -> None:
    out = apply_rewrite(SIMPLE, Rewrite(add_cc=(CONDUCT,)))
    assert out == SIMPLE.replace(
        b"To: Maya Example <maya@example.com>\r\n",
        b"To: Maya Example <maya@example.com>\r\nCc: conduct@example.org\r\n",
    )
    assert parse(out)["Cc"] == "conduct@example.org"


def test_cc_appended_to_a_folded_cc_keeping_its_bytes() -> None:
    raw = SIMPLE.replace(
        b"Subject:", b"Cc: Bram <bram@example.org>,\r\n\tDana <dana@example.org>  \r\nSubject:"
    )
    out = apply_rewrite(raw, Rewrite(add_cc=(Address("Conduct Committee", "conduct@example.org"),)))
    folded = b"Cc: Bram <bram@example.org>,\r\n\tDana <dana@example.org>,\r\n"
    assert folded + b" Conduct Committee <conduct@example.org>\r\n" in out
    addresses = [a.addr_spec for a in parse(out)["Cc"].addresses]
    assert addresses == ["bram@example.org", "dana@example.org", "conduct@example.org"]
    assert body(out) == body(raw)


def test_empty_cc_header_is_filled_not_given_a_leading_comma() -> None:
    raw = SIMPLE.replace(b"Subject:", b"Cc: \r\nSubject:")
    out = apply_rewrite(raw, Rewrite(add_cc=(CONDUCT,)))
    assert b"\r\nCc: conduct@example.org\r\n" in out


@pytest.mark.parametrize(
    "present",
    [
        pytest.param(b"To: Maya <maya@example.com>, CONDUCT@Example.org\r\n", id="in-to"),
        pytest.param(b"To: Maya <maya@example.com>\r\nCc: Conduct <conduct@EXAMPLE.ORG>\r\n", id="in-cc"),
        pytest.param(
            b"To: "
            + b",\r\n ".join(f"Person {n} <person.{n}@example.com>".encode() for n in range(60))
            + b",\r\n conduct@example.org\r\n",
            id="in-a-long-to: parsed without the cache",
        ),
    ],
)
def test_cc_never_duplicates_an_address(present: bytes) -> None:
    raw = SIMPLE.replace(b"To: Maya Example <maya@example.com>\r\n", present)
    assert apply_rewrite(raw, Rewrite(add_cc=(CONDUCT, CONDUCT))) == raw


def test_two_new_addresses_once_each() -> None:
    extra = Address("", "second@example.org")
    out = apply_rewrite(SIMPLE, Rewrite(add_cc=(CONDUCT, extra, CONDUCT)))
    assert [a.addr_spec for a in parse(out)["Cc"].addresses] == ["conduct@example.org", "second@example.org"]


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("Comité d’éthique", id="latin"),
        pytest.param("行为准则委员会", id="cjk"),
        pytest.param("Conduct, Committee (main)", id="specials"),
        pytest.param('Say "hi"', id="quotes"),
    ],
)
def test_display_names_are_encoded_and_round_trip(name: str) -> None:
    out = apply_rewrite(SIMPLE, Rewrite(add_cc=(Address(name, "conduct@example.org"),)))
    assert header_block(out).isascii()
    (mailbox,) = parse(out)["Cc"].addresses
    assert (mailbox.display_name, mailbox.addr_spec) == (name, "conduct@example.org")


def test_header_injection_in_a_display_name_is_neutralised() -> None:
    out = apply_rewrite(
        SIMPLE, Rewrite(add_cc=(Address("Evil\r\nBcc: victim@example.com", "conduct@example.org"),))
    )
    message = parse(out)
    assert message["Bcc"] is None
    assert message["Cc"].addresses[0].addr_spec == "conduct@example.org"


@pytest.mark.parametrize(
    "address", ["a@b.example\r\nBcc: x@y.example", "a b@example.org", "<a@example.org>", "noat"]
)
def test_a_malformed_address_is_refused(address: str) -> None:
    with pytest.raises(PolicyError):
        apply_rewrite(SIMPLE, Rewrite(add_cc=(Address("", address),)))


# --- banner in single-part messages ----------------------------------------------------------------


def test_plain_banner_prepended_with_a_blank_line() -> None:
    out = apply_rewrite(SIMPLE, Rewrite(banner_lines=BANNER))
    assert header_block(out) == header_block(SIMPLE)
    assert body(out) == b"[+ Maya Example]\r\n[- Alex Doe]\r\n\r\n" + body(SIMPLE)


def test_banner_and_cc_together_on_a_single_part_message() -> None:
    out = apply_rewrite(SIMPLE, Rewrite(add_cc=(CONDUCT,), banner_lines=("[+ Łukasz Nowak]",)))
    message = parse(out)
    assert message["Cc"] == "conduct@example.org"
    assert message["MIME-Version"] == "1.0"  # the part had to become UTF-8, so it is now MIME
    assert message.get_content_charset() == "utf-8"
    assert message["Content-Transfer-Encoding"] == "quoted-printable"
    assert message.get_content().startswith("[+ Łukasz Nowak]\r\n\r\nHello Maya,")
    assert out.isascii()


def test_lf_only_input_comes_out_with_crlf() -> None:
    raw = SIMPLE.replace(b"\r\n", b"\n")
    out = apply_rewrite(raw, Rewrite(banner_lines=BANNER))
    assert no_bare_lf(out)
    assert out == apply_rewrite(SIMPLE, Rewrite(banner_lines=BANNER))


def test_nothing_to_change_returns_the_message_unchanged() -> None:
    assert apply_rewrite(SIMPLE, Rewrite(add_envelope_recipients=("conduct@example.org",))) == SIMPLE


def test_headers_only_message_gets_a_body() -> None:
    raw = crlf("From: a@example.org", "To: b@example.org", "Subject: x", "")
    out = apply_rewrite(raw, Rewrite(banner_lines=BANNER))
    assert parse(out).get_content() == "[+ Maya Example]\r\n[- Alex Doe]\r\n\r\n"


def single(charset: str, encoding: str, text: str, subtype: str = "plain", extra: str = "") -> bytes:
    payload = text.replace("\n", "\r\n").encode(charset)
    if encoding == "base64":
        encoded = base64.encodebytes(payload).replace(b"\n", b"\r\n")
    elif encoding == "quoted-printable":
        # quopri works on LF text; the wire form has CRLF line breaks.
        encoded = quopri.encodestring(text.encode(charset)).replace(b"\n", b"\r\n")
    else:
        encoded = payload
    head = crlf(
        "From: ada@example.org",
        "To: maya@example.com",
        "Subject: test",
        "MIME-Version: 1.0",
        f"Content-Type: text/{subtype}; charset={charset}{extra}",
        f"Content-Transfer-Encoding: {encoding}",
        "",
        "",
    )
    return head + encoded


TEXT = "Grüße aus Köln,\nzweite Zeile.\n"
MATRIX = [
    pytest.param(charset, encoding, name, id=f"{charset}-{encoding}-{label}")
    for charset, encodings in (
        ("utf-8", ("8bit", "quoted-printable", "base64")),
        ("iso-8859-1", ("8bit", "quoted-printable", "base64")),
        ("windows-1252", ("quoted-printable",)),
        ("utf-16", ("base64",)),
    )
    for encoding in encodings
    for label, name in (
        ("ascii", "Maya Example"),
        ("latin", "Zoë Äpfel"),
        ("polish", "Łukasz Żak"),
        ("cjk", "王小明"),
    )
]


@pytest.mark.parametrize(("charset", "encoding", "name"), MATRIX)
def test_plain_banner_in_every_charset_and_transfer_encoding(charset: str, encoding: str, name: str) -> None:
    raw = single(charset, encoding, TEXT)
    out = apply_rewrite(raw, Rewrite(banner_lines=(f"[+ {name}]",)))
    message = parse(out)
    assert not message.defects
    assert message["Content-Transfer-Encoding"] == encoding
    content = message.get_content()
    assert content == f"[+ {name}]\r\n\r\n" + TEXT.replace("\n", "\r\n")
    try:
        f"[+ {name}]".encode(charset)
        expected_charset = charset
    except UnicodeEncodeError:
        expected_charset = "utf-8"
    assert message.get_content_charset() == expected_charset
    assert no_bare_lf(out)
    assert all(len(line) <= 998 for line in out.split(b"\r\n"))


@pytest.mark.parametrize("name", ["Maya Example", "Zoë Äpfel", "王小明"])
def test_seven_bit_part_becomes_quoted_printable_only_when_needed(name: str) -> None:
    raw = single("us-ascii", "7bit", "Plain ASCII text.\n")
    out = apply_rewrite(raw, Rewrite(banner_lines=(f"[+ {name}]",)))
    message = parse(out)
    assert message.get_content() == f"[+ {name}]\r\n\r\nPlain ASCII text.\r\n"
    if name.isascii():
        assert (message["Content-Transfer-Encoding"], message.get_content_charset()) == ("7bit", "us-ascii")
        assert out == raw.replace(b"\r\n\r\nPlain", f"\r\n\r\n[+ {name}]\r\n\r\nPlain".encode())
    else:
        assert (message["Content-Transfer-Encoding"], message.get_content_charset()) == (
            "quoted-printable",
            "utf-8",
        )
        assert out.isascii()


def test_format_flowed_banner_lines_do_not_end_with_a_space() -> None:
    raw = single(
        "utf-8", "8bit", "A flowed paragraph that \ncontinues here.\n", extra="; format=flowed; delsp=no"
    )
    out = apply_rewrite(raw, Rewrite(banner_lines=("[+ Maya Example ]", "[- Alex Doe]")))
    message = parse(out)
    assert message.get_param("format") == "flowed"
    lines = body(out).split(b"\r\n")
    assert lines[:3] == [b"[+ Maya Example ]", b"[- Alex Doe]", b""]
    assert not lines[0].endswith(b" ") and not lines[1].endswith(b" ")


def test_format_flowed_kept_when_switching_to_utf8() -> None:
    raw = single("iso-8859-1", "8bit", "Text.\n", extra="; format=flowed")
    out = apply_rewrite(raw, Rewrite(banner_lines=("[+ Łukasz]",)))
    message = parse(out)
    assert (message.get_content_charset(), message.get_param("format")) == ("utf-8", "flowed")
    assert message.get_content() == "[+ Łukasz]\r\n\r\nText.\r\n"


@pytest.mark.parametrize(
    ("html", "expected_prefix"),
    [
        pytest.param(
            '<html><head><title>x</title></head><body class="a">\nHi</body></html>',
            '<html><head><title>x</title></head><body class="a"><div>',
            id="after-body",
        ),
        pytest.param("<html><head></head>Hi</html>", "<div>", id="no-body-tag-at-start"),
        pytest.param("<p>Hi</p>", "<div>", id="fragment-at-start"),
        pytest.param("<BODY BGCOLOR=white>Hi", "<BODY BGCOLOR=white><div>", id="upper-case-tag"),
    ],
)
def test_html_banner_goes_after_the_body_tag_or_first(html: str, expected_prefix: str) -> None:
    raw = single("utf-8", "quoted-printable", html, subtype="html")
    out = apply_rewrite(raw, Rewrite(banner_lines=("[+ Maya <maya@example.com> & co]",)))
    content = parse(out).get_content()
    assert content.startswith(expected_prefix)
    inserted = "<div>[+ Maya &lt;maya@example.com&gt; &amp; co]</div>\r\n<div><br></div>\r\n"
    assert content.replace(inserted, "", 1) == html.replace("\n", "\r\n")


@pytest.mark.parametrize(
    ("charset", "encoding"), [("us-ascii", "7bit"), ("iso-8859-1", "base64"), ("utf-16", "base64")]
)
def test_html_names_the_charset_cannot_hold_are_character_references(charset: str, encoding: str) -> None:
    raw = single(charset, encoding, "<body>Hi</body>", subtype="html")
    out = apply_rewrite(raw, Rewrite(banner_lines=("[+ 王小明]",)))
    message = parse(out)
    assert message.get_content_charset() == charset
    assert message["Content-Transfer-Encoding"] == encoding
    name = "王小明" if charset == "utf-16" else "&#29579;&#23567;&#26126;"  # UTF-16 can spell it
    assert message.get_content() == f"<body><div>[+ {name}]</div>\r\n<div><br></div>\r\nHi</body>"


def test_an_ascii_based_charset_keeps_bytes_it_does_not_need_to_decode() -> None:
    raw = single("utf-8", "8bit", "Text\n").replace(b"Text", b"T\xffxt")
    out = apply_rewrite(raw, Rewrite(banner_lines=("[+ 王]",)))
    assert body(out) == "[+ 王]\r\n\r\n".encode() + body(raw)


def test_unknown_charset_takes_an_ascii_banner_unchanged() -> None:
    raw = single("utf-8", "8bit", "Text\n").replace(b"charset=utf-8", b"charset=x-unknown-8bit")
    out = apply_rewrite(raw, Rewrite(banner_lines=("[+ Maya]",)))
    assert body(out) == b"[+ Maya]\r\n\r\n" + body(raw)


def test_unknown_charset_cannot_take_a_non_ascii_banner() -> None:
    raw = single("utf-8", "8bit", "Text\n").replace(b"charset=utf-8", b"charset=x-unknown-8bit")
    with pytest.raises(PolicyError, match="unknown charset"):
        apply_rewrite(raw, Rewrite(banner_lines=("[+ Łukasz]",)))


@pytest.mark.parametrize(
    ("name", "banner", "expected"),
    [
        pytest.param("8bits", "[+ Maya]", "8bits", id="ascii-banner-keeps-it"),
        pytest.param("7-bit", "[+ Łukasz]", "quoted-printable", id="non-ascii-banner-repairs-it"),
    ],
)
def test_unknown_transfer_encoding_is_read_as_is_like_pythons_parser(
    name: str, banner: str, expected: str
) -> None:
    raw = single("utf-8", "8bit", "Text\n").replace(
        b"Transfer-Encoding: 8bit", f"Transfer-Encoding: {name}".encode()
    )
    message = parse(apply_rewrite(raw, Rewrite(banner_lines=(banner,))))
    assert message["Content-Transfer-Encoding"] == expected
    assert message.get_content() == f"{banner}\r\n\r\nText\r\n"


def test_invalid_text_in_the_declared_charset_is_not_guessed() -> None:
    # Switching to UTF-8 means decoding the part; bytes the charset does not allow cannot be decoded.
    raw = single("us-ascii", "8bit", "Text\n").replace(b"Text", b"T\xffxt")
    with pytest.raises(PolicyError, match="not valid"):
        apply_rewrite(raw, Rewrite(banner_lines=("[+ 王]",)))


# --- multipart ---------------------------------------------------------------------------------------

ATTACHED_TEXT = crlf(
    "Content-Type: text/plain; charset=utf-8; name=notes.txt",
    "Content-Disposition: attachment; filename=notes.txt",
    "",
    "Attached notes must not get a banner.",
)
IMAGE = crlf(
    "Content-Type: image/png",
    "Content-Transfer-Encoding: base64",
    "Content-Disposition: inline",
    "",
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==",
)
FORWARDED = crlf(
    "Content-Type: message/rfc822",
    "",
    "From: someone@example.net",
    "Subject: forwarded",
    "Content-Type: text/plain",
    "",
    "A forwarded message keeps its own text.",
)
HTML_PART = crlf(
    "Content-Type: text/html; charset=iso-8859-1",
    "Content-Transfer-Encoding: quoted-printable",
    "",
    '<html><body style=3D"x"><p>Gr=FC=DFe</p></body></html>',
)
PLAIN_PART = crlf(
    "Content-Type: text/plain; charset=iso-8859-1", "Content-Transfer-Encoding: 8bit", "", ""
) + "Grüße\r\n".encode("iso-8859-1")


def multipart(subtype: str, boundary: str, *parts: bytes, headers: tuple[str, ...] = ()) -> bytes:
    out = crlf(f'Content-Type: multipart/{subtype}; boundary="{boundary}"', *headers, "", "preamble", "")
    for part in parts:
        out += f"--{boundary}\r\n".encode() + part + b"\r\n"
    return out + f"--{boundary}--\r\nepilogue\r\n".encode()


def top(inner: bytes) -> bytes:
    return (
        crlf("From: ada@example.org", "To: maya@example.com", "Subject: multipart", "MIME-Version: 1.0", "")
        + inner
    )


def test_alternative_and_mixed_get_banners_only_in_body_parts() -> None:
    alternative = multipart("alternative", "alt-b", PLAIN_PART, HTML_PART)
    raw = top(multipart("mixed", "mix-b", alternative, ATTACHED_TEXT, IMAGE, FORWARDED))
    out = apply_rewrite(raw, Rewrite(add_cc=(CONDUCT,), banner_lines=("[+ Maya Example]", "[- Łukasz Żak]")))
    for untouched in (ATTACHED_TEXT, IMAGE, FORWARDED, b"preamble", b"epilogue", b'boundary="alt-b"'):
        assert untouched in out
    assert out.count(b"--alt-b") == raw.count(b"--alt-b") and out.count(b"--mix-b") == raw.count(b"--mix-b")
    message = parse(out)
    assert [part.get_content_type() for part in message.walk()] == [
        part.get_content_type() for part in parse(raw).walk()
    ]
    assert all(not part.defects for part in message.walk())
    (_, plain_text), (_, html_text) = texts(message)[:2]
    assert plain_text == "[+ Maya Example]\r\n[- Łukasz Żak]\r\n\r\nGrüße\r\n"
    assert html_text.startswith(
        '<html><body style="x"><div>[+ Maya Example]</div>\r\n<div>[- &#321;ukasz &#379;ak]</div>'
    )
    assert html_text.endswith("<p>Grüße</p></body></html>")
    forwarded = next(part for part in message.walk() if part.get_content_type() == "message/rfc822")
    assert "[+" not in forwarded.as_string()
    assert [a.addr_spec for a in message["Cc"].addresses] == ["conduct@example.org"]
    assert no_bare_lf(out)


def test_related_html_inside_alternative_gets_the_banner_but_not_its_images() -> None:
    related = multipart("related", "rel-b", crlf("Content-Type: text/html", "", "<body>Hi</body>"), IMAGE)
    raw = top(multipart("alternative", "alt-b", crlf("Content-Type: text/plain", "", "Hi"), related))
    out = apply_rewrite(raw, Rewrite(banner_lines=("[+ Maya]",)))
    assert IMAGE in out
    assert [text for _, text in texts(parse(out))] == [
        "[+ Maya]\r\n\r\nHi",
        "<body><div>[+ Maya]</div>\r\n<div><br></div>\r\nHi</body>",
    ]


def test_header_block_ends_where_pythons_parser_ends_it() -> None:
    # No blank line after the part's headers: "bar" is the first body line, as email.parser reads it.
    part = crlf("Content-Type: text/plain", "bar", "")
    raw = top(multipart("mixed", "foo", part, ATTACHED_TEXT))
    out = apply_rewrite(raw, Rewrite(banner_lines=("[+ Maya]",)))
    assert texts(parse(out))[0] == ("text/plain", "[+ Maya]\r\n\r\nbar\r\n")


def test_root_header_block_ends_at_a_line_that_is_no_header() -> None:
    raw = crlf("From: ada@example.org", "To   : maya@example.com", "Subject: x", "", "Hi")
    out = apply_rewrite(raw, Rewrite(add_cc=(CONDUCT,), banner_lines=("[+ Maya]",)))
    assert out.startswith(b"From: ada@example.org\r\nCc: conduct@example.org\r\n\r\n[+ Maya]\r\n\r\nTo   :")
    assert parse(out)["Cc"] == "conduct@example.org"


def test_part_without_headers_is_plain_text_and_gets_the_banner() -> None:
    raw = top(multipart("mixed", "b", b"\r\nBare part text.", ATTACHED_TEXT))
    out = apply_rewrite(raw, Rewrite(banner_lines=("[+ Maya]",)))
    assert texts(parse(out))[0][1] == "[+ Maya]\r\n\r\nBare part text."
    assert ATTACHED_TEXT in out


def test_a_part_switched_to_utf8_gets_its_own_headers_changed() -> None:
    seven_bit = crlf(
        "Content-Type: text/plain; charset=us-ascii; format=flowed",
        "Content-Transfer-Encoding: 7bit",
        "",
        "Hi",
    )
    raw = top(multipart("mixed", "b", seven_bit, ATTACHED_TEXT))
    out = apply_rewrite(raw, Rewrite(banner_lines=("[+ Łukasz]",)))
    part = next(p for p in parse(out).walk() if p.get_content_type() == "text/plain")
    assert (part.get_content_charset(), part["Content-Transfer-Encoding"], part.get_param("format")) == (
        "utf-8",
        "quoted-printable",
        "flowed",
    )
    assert part.get_content() == "[+ Łukasz]\r\n\r\nHi"
    assert header_block(out) == header_block(raw)  # the top-level headers are untouched


def test_only_attachments_means_no_place_for_a_banner() -> None:
    raw = top(multipart("mixed", "b", ATTACHED_TEXT, IMAGE))
    with pytest.raises(PolicyError, match="no text body"):
        apply_rewrite(raw, Rewrite(banner_lines=("[+ Maya]",)))


def test_cc_on_a_multipart_message_leaves_every_part_identical() -> None:
    raw = top(multipart("mixed", "b", PLAIN_PART, ATTACHED_TEXT))
    out = apply_rewrite(raw, Rewrite(add_cc=(CONDUCT,)))
    assert body(out) == body(raw)


@pytest.mark.parametrize("subtype", ["signed", "encrypted"])
def test_signed_or_encrypted_messages_are_never_changed(subtype: str) -> None:
    raw = top(multipart(subtype, "b", PLAIN_PART, crlf("Content-Type: application/pgp-signature", "", "sig")))
    with pytest.raises(PolicyError, match="signed or encrypted"):
        apply_rewrite(raw, Rewrite(add_cc=(CONDUCT,)))


def test_stdlib_reads_back_every_rewritten_part_like_the_original() -> None:
    # Every leaf other than the text bodies decodes to the same payload as before.
    raw = top(
        multipart(
            "mixed", "mix-b", multipart("alternative", "alt-b", PLAIN_PART, HTML_PART), ATTACHED_TEXT, IMAGE
        )
    )
    out = apply_rewrite(raw, Rewrite(banner_lines=("[+ Maya]",)))

    def payloads(message: Message) -> list[object]:
        return [
            part.get_payload(decode=True)
            for part in message.walk()
            if not part.is_multipart() and part.get_content_disposition() in ("attachment", "inline")
        ]

    assert payloads(parse(out)) == payloads(parse(raw))


# --- the shared corpus of real mail ------------------------------------------------------------------


def _body_leaves(part: Message) -> list[Message]:
    """The parts a banner belongs in, read with the stdlib: every alternative, else the first part."""
    content_type = part.get_content_type()
    if content_type in ("text/plain", "text/html"):
        attachment = (
            part.get_content_disposition() == "attachment" or part.get_filename() or part.get_param("name")
        )
        return [] if attachment else [part]
    if not part.is_multipart() or content_type in ("multipart/signed", "multipart/encrypted"):
        return []
    payload = part.get_payload()
    assert isinstance(payload, list)
    children = [child for child in payload if isinstance(child, Message)]
    if content_type != "multipart/alternative":
        children = children[:1]
    return [leaf for child in children for leaf in _body_leaves(child)]


def _decoded(part: Message) -> str:
    payload = part.get_payload(decode=True)
    assert isinstance(payload, bytes)
    return payload.decode(
        part.get_content_charset() or "us-ascii", errors="replace"
    )  # originals may be broken


def test_every_real_message_is_rewritten_correctly_or_refused_cleanly(real_mail_dir: Path) -> None:
    lines = ("[+ Łukasz Żak]", "[- Maya <maya@example.com>]")
    rewrite = Rewrite(add_cc=(Address("Comité", "conduct@example.org"),), banner_lines=lines)
    rewritten = 0
    for path in sorted(real_mail_dir.rglob("*.eml")):
        raw = path.read_bytes()
        try:
            out = apply_rewrite(raw, rewrite)
        except PolicyError:
            continue  # a clear refusal (signed, no text body, unreadable charset) is allowed
        rewritten += 1
        assert no_bare_lf(out), path
        if not parse_message(raw).ambiguities:
            assert not parse_message(out).ambiguities, path  # the gateway must accept its own output
        before = email.message_from_bytes(apply_rewrite(raw, Rewrite()), policy=email.policy.compat32)
        after = email.message_from_bytes(out, policy=email.policy.compat32)
        assert [p.get_content_type() for p in after.walk()] == [
            p.get_content_type() for p in before.walk()
        ], path
        assert "conduct@example.org" in str(after["Cc"]), path
        leaves = _body_leaves(after)
        assert leaves, path
        for leaf in leaves:
            text = _decoded(leaf)
            if leaf.get_content_type() == "text/plain":
                assert text.startswith("[+ Łukasz Żak]"), path
            else:
                assert "[+ &#321;ukasz &#379;ak]</div>" in text or "[+ Łukasz Żak]</div>" in text, path
                assert "[- Maya &lt;maya@example.com&gt;]</div>" in text, path
        touched = {id(leaf) for leaf in leaves}
        kept_before = [
            p.get_payload(decode=True)
            for p in before.walk()
            if not p.is_multipart() and p not in _body_leaves(before)
        ]
        kept_after = [
            p.get_payload(decode=True) for p in after.walk() if not p.is_multipart() and id(p) not in touched
        ]
        assert kept_after == kept_before, path
    assert rewritten >= 250, f"only {rewritten} of the corpus could be rewritten"


@settings(max_examples=500, deadline=None)
@given(
    st.lists(st.sampled_from((b"\r\n", b"\n", b"\r", b"\r\r\n", b"\n\r", b"x", b"yz")), max_size=12).map(
        b"".join
    )
)
def test_bare_line_feeds_become_crlf_and_nothing_else_changes(data: bytes) -> None:
    expected = re.sub(rb"(?<!\r)\n", b"\r\n", data)
    assert apply_rewrite(data, Rewrite()) == expected
