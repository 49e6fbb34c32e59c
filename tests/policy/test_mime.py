"""parse_message: every encoding decoded, every part read, ambiguity refused, nothing ever raises."""

from __future__ import annotations

import base64
import io
import re
import zipfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.policy import transfer_encodings
from gateway.policy.extract import parts
from gateway.policy.matcher import IdentityMatcher
from gateway.policy.mime import parse_message
from gateway.policy.mime_parameters import parse_parameters, split_parameters
from gateway.policy.mime_record import MAX_DEPTH, MAX_PARTS
from gateway.policy.model import Address, IdentityKind, ParsedMessage, ProtectedIdentity, SegmentKind
from tests.policy.builders import (
    Attached,
    Message,
    Multipart,
    Part,
    encoded_word,
    encoded_words,
    plain,
    render,
    rfc2231,
    uuencode,
    with_headers,
)

JIN = ProtectedIdentity("home-shelf", "r1", IdentityKind.NAME, "Jin Park")
ZOE = ProtectedIdentity("home-shelf", "w1", IdentityKind.NAME, "Zoë Müller")
ANNA = ProtectedIdentity("home-shelf", "w2", IdentityKind.NAME, "Анна Петрова")
MING = ProtectedIdentity("home-shelf", "w3", IdentityKind.NAME, "李明")
MATCHER = IdentityMatcher.build((JIN, ZOE, ANNA, MING))


def hits(parsed: ParsedMessage) -> list[tuple[str, SegmentKind, str]]:
    """(where, kind, identity value) for every protected identity in the decoded message."""
    return [
        (segment.where, segment.kind, identity.value)
        for segment in parsed.segments
        for identity in MATCHER.find(segment.text)
    ]


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def encrypted_zip(members: dict[str, bytes]) -> bytes:
    """A ZIP whose members are flagged as encrypted (the flag is all a reader goes by)."""
    data = bytearray(zip_bytes(members))
    for signature, flag_offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        start = 0
        while (found := data.find(signature, start)) != -1:
            data[found + flag_offset] |= 0x01
            start = found + 4
    return bytes(data)


DOCX = zip_bytes(
    {
        "[Content_Types].xml": b'<?xml version="1.0"?><Types/>',
        "word/document.xml": (
            b'<?xml version="1.0"?><w:document xmlns:w="x"><w:body>'
            b"<w:p><w:r><w:t>Statement by</w:t></w:r></w:p>"
            b"<w:p><w:r><w:rPr><w:b/></w:rPr><w:t>Ji</w:t></w:r><w:r><w:t>n Pa</w:t></w:r>"
            b"<w:r><w:t>rk</w:t></w:r></w:p></w:body></w:document>"
        ),
        "word/media/image1.png": b"\x89PNG\r\n\x1a\n\x00\x00binary",
    }
)

NAME_IN_HTML = (
    "<html><head><style>p { color: red }</style></head><body><p>Hello</p>"
    "<p>J<b>in</b> <span>Park</span> wrote</p></body></html>"
)


def mixed(*parts: Part | Multipart | Attached, **headers: str) -> bytes:
    return render(Message(headers=with_headers(**headers), body=Multipart(parts=parts)))


def single(part: Part, **headers: str) -> bytes:
    return render(Message(headers=with_headers(**headers), body=part))


DECODING_CASES = [
    # headers
    pytest.param(plain(Subject="About Jin Park"), "header Subject", SegmentKind.HEADER, id="subject-plain"),
    pytest.param(
        plain(Subject=encoded_word("About Jin Park")),
        "header Subject",
        SegmentKind.HEADER,
        id="subject-b-word",
    ),
    pytest.param(
        plain(Subject=encoded_word("About Jin Park", "iso-8859-1", "Q")),
        "header Subject",
        SegmentKind.HEADER,
        id="subject-q-word",
    ),
    pytest.param(
        plain(Subject=encoded_words("Re: Zoë Müller", chunk=2)),
        "header Subject",
        SegmentKind.HEADER,
        id="subject-split-over-encoded-words",
    ),
    pytest.param(
        plain(Subject="About Jin\r\n Park"),
        "header Subject",
        SegmentKind.HEADER,
        id="subject-folded-inside-name",
    ),
    pytest.param(
        plain(Subject=encoded_word("李明", "iso-2022-jp")),
        "header Subject",
        SegmentKind.HEADER,
        id="subject-iso-2022-jp",
    ),
    pytest.param(
        plain(Subject=encoded_word("Анна Петрова", "koi8-r", "Q")),
        "header Subject",
        SegmentKind.HEADER,
        id="subject-koi8-r",
    ),
    pytest.param(
        plain(Subject="Re: Zoë Müller").replace(b"Zo\xc3\xab", b"Zo\xc3\xab"),
        "header Subject",
        SegmentKind.HEADER,
        id="subject-raw-utf8",
    ),
    pytest.param(
        plain(From=f"{encoded_word('Jin Park')} <someone@example.net>"),
        "header From",
        SegmentKind.HEADER,
        id="display-name-encoded",
    ),
    pytest.param(
        plain(To=f'"{encoded_word("Jin Park", "utf-8", "Q")}" <x@example.net>'),
        "header To",
        SegmentKind.HEADER,
        id="encoded-word-inside-quotes",
    ),
    pytest.param(
        plain(Reply_To="Jin Park <x@example.net>"), "header Reply-To", SegmentKind.HEADER, id="reply-to"
    ),
    pytest.param(plain(Bcc="jin park <x@example.net>"), "header Bcc", SegmentKind.HEADER, id="bcc-header"),
    pytest.param(
        plain(X_Notes="see Jin Park"), "a non-standard header", SegmentKind.HEADER, id="non-standard-header"
    ),
    pytest.param(plain(**{"X-Jin-Park": "1"}), "a non-standard header", SegmentKind.HEADER, id="header-name"),
    # bodies and charsets
    pytest.param(plain("Hello Jin Park."), "part 1 (text/plain)", SegmentKind.TEXT, id="7bit"),
    pytest.param(
        single(Part(body="Hello Jin Park.", encoding="quoted-printable", break_at=(8,))),
        "part 1 (text/plain)",
        SegmentKind.TEXT,
        id="qp-soft-break-inside-name",
    ),
    pytest.param(
        single(Part(body="Hello Jin\nPark.", encoding="quoted-printable")),
        "part 1 (text/plain)",
        SegmentKind.TEXT,
        id="qp-hard-line-break-inside-name",
    ),
    pytest.param(
        single(Part(body="Hello Jin Park.", encoding="base64")),
        "part 1 (text/plain)",
        SegmentKind.TEXT,
        id="base64",
    ),
    pytest.param(
        single(Part(body="Grüße an Zoë Müller", encoding="quoted-printable", charset="iso-8859-1")),
        "part 1 (text/plain)",
        SegmentKind.TEXT,
        id="latin-1",
    ),
    pytest.param(
        single(Part(body="Привет, Анна Петрова", encoding="8bit", charset="koi8-r")),
        "part 1 (text/plain)",
        SegmentKind.TEXT,
        id="koi8-r",
    ),
    pytest.param(
        single(Part(body="李明さんへ", encoding="7bit", charset="iso-2022-jp")),
        "part 1 (text/plain)",
        SegmentKind.TEXT,
        id="iso-2022-jp",
    ),
    pytest.param(
        single(Part(body="Hi Jin Park", encoding="base64", charset="utf-16")),
        "part 1 (text/plain)",
        SegmentKind.TEXT,
        id="utf-16",
    ),
    pytest.param(
        single(Part(body="Hi Jin Park", encoding="7bit", charset="utf-7")),
        "part 1 (text/plain)",
        SegmentKind.TEXT,
        id="utf-7",
    ),
    pytest.param(
        single(Part(body="Hi Zoë Müller".encode(), encoding="8bit", charset="x-unknown")),
        "part 1 (text/plain)",
        SegmentKind.TEXT,
        id="unknown-charset",
    ),
    pytest.param(
        single(Part(body="Hi Zoë Müller".encode(), encoding="8bit", charset="us-ascii")),
        "part 1 (text/plain)",
        SegmentKind.TEXT,
        id="wrong-charset",
    ),
    pytest.param(
        single(Part(body="Hi Jin\u200b Pa\u00adrk", encoding="base64")),
        "part 1 (text/plain)",
        SegmentKind.TEXT,
        id="zero-width-inside-name",
    ),
    pytest.param(
        single(Part(body="Hi Јіn Раrk", encoding="quoted-printable")),
        "part 1 (text/plain)",
        SegmentKind.TEXT,
        id="cyrillic-look-alikes",
    ),
    pytest.param(
        single(Part(body="Hi Ｊｉｎ Ｐａｒｋ", encoding="base64")),
        "part 1 (text/plain)",
        SegmentKind.TEXT,
        id="fullwidth",
    ),
    pytest.param(
        single(Part(body=b"notes on Jin Park\n", encoding="x-uuencode")),
        "part 1 (text/plain)",
        SegmentKind.TEXT,
        id="x-uuencode",
    ),
    pytest.param(
        plain("See the attached.\r\n" + uuencode(b"Jin Park\n", "notes.txt").decode() + "\r\n"),
        "uuencoded file 1 in part 1 (text/plain)",
        SegmentKind.ATTACHMENT_TEXT,
        id="inline-uuencode-block",
    ),
    pytest.param(
        single(Part(body="Hi Jin Park", encoding="quoted printable")),
        "part 1 (text/plain)",
        SegmentKind.TEXT,
        id="misspelt-transfer-encoding",
    ),
    pytest.param(
        single(Part(content_type="text/plain; format=flowed; delsp=yes", body="Hello Ji \nn Park.")),
        "part 1 (text/plain)",
        SegmentKind.TEXT,
        id="format-flowed-delsp-inside-name",
    ),
    pytest.param(
        single(Part(content_type="text/plain; format=flowed", body="> Hello Jin \n> Park.")),
        "part 1 (text/plain)",
        SegmentKind.TEXT,
        id="format-flowed-quoted",
    ),
    pytest.param(
        single(Part(content_type="text/enriched", body="Hello <bold>Ji</bold>n Park")),
        "part 1 (text/enriched)",
        SegmentKind.TEXT,
        id="text-enriched",
    ),
    pytest.param(
        single(Part(content_type="text/plain (about Jin Park)", body="x")),
        "header Content-Type of part 1 (text/other)",
        SegmentKind.HEADER,
        id="content-type-comment",
    ),
    # HTML
    pytest.param(
        single(Part(content_type="text/html", body=NAME_IN_HTML, encoding="quoted-printable")),
        "part 1 (text/html)",
        SegmentKind.HTML_TEXT,
        id="html-name-split-by-inline-tags",
    ),
    pytest.param(
        single(Part(content_type="text/html", body="<p>&#x4A;in&nbsp;&#80;ark</p>")),
        "part 1 (text/html)",
        SegmentKind.HTML_TEXT,
        id="html-character-references",
    ),
    pytest.param(
        single(Part(content_type="text/html", body='<img alt="Jin Park" src="cid:1">')),
        "links, attributes and hidden text of part 1 (text/html)",
        SegmentKind.HTML_ATTRIBUTE,
        id="html-alt",
    ),
    pytest.param(
        single(Part(content_type="text/html", body='<a title="Jin&#32;Park" href="#">x</a>')),
        "links, attributes and hidden text of part 1 (text/html)",
        SegmentKind.HTML_ATTRIBUTE,
        id="html-title",
    ),
    pytest.param(
        single(Part(content_type="text/html", body='<a href="https://example.net/?who=Jin%20Park">x</a>')),
        "links, attributes and hidden text of part 1 (text/html)",
        SegmentKind.HTML_ATTRIBUTE,
        id="html-percent-encoded-href",
    ),
    pytest.param(
        single(Part(content_type="text/html", body="<p>hi</p><!-- draft for Jin Park -->")),
        "links, attributes and hidden text of part 1 (text/html)",
        SegmentKind.HTML_ATTRIBUTE,
        id="html-comment",
    ),
    pytest.param(
        single(
            Part(content_type="text/html", body='<style>p::after { content: "Jin Park" }</style><p>x</p>')
        ),
        "links, attributes and hidden text of part 1 (text/html)",
        SegmentKind.HTML_ATTRIBUTE,
        id="html-css-content",
    ),
    pytest.param(
        single(
            Part(
                content_type="text/html",
                body=f'<a href="data:text/plain;base64,{base64.b64encode(b"Jin Park").decode()}">x</a>',
            )
        ),
        "links, attributes and hidden text of part 1 (text/html)",
        SegmentKind.HTML_ATTRIBUTE,
        id="html-data-uri",
    ),
    pytest.param(
        single(
            Part(content_type="text/html", body='<div>Hello</div><span style="display:block">Jin Park</span>')
        ),
        "part 1 (text/html)",
        SegmentKind.HTML_TEXT,
        id="html-block-styled-span",
    ),
    # attachments and file names
    pytest.param(
        mixed(
            Part(body="see attached"),
            Part(content_type="text/csv", body="name\nJin Park\n", filename="a.csv"),
        ),
        "part 2 (text/csv)",
        SegmentKind.ATTACHMENT_TEXT,
        id="csv-attachment",
    ),
    pytest.param(
        mixed(Part(content_type="application/json", body='{"reporter": "Jin Park"}', encoding="base64")),
        "part 1 (application/json)",
        SegmentKind.TEXT,
        id="json-part",
    ),
    pytest.param(
        mixed(Part(content_type="text/calendar", body="BEGIN:VEVENT\nATTENDEE;CN=Jin Park:x\nEND:VEVENT\n")),
        "part 1 (text/calendar)",
        SegmentKind.TEXT,
        id="calendar",
    ),
    pytest.param(
        mixed(
            Part(content_type="text/vcard", body="BEGIN:VCARD\nFN:Jin Park\nEND:VCARD\n", filename="c.vcf")
        ),
        "part 1 (text/vcard)",
        SegmentKind.ATTACHMENT_TEXT,
        id="vcard",
    ),
    pytest.param(
        mixed(
            Part(
                content_type="application/octet-stream",
                body=b"Jin Park said",
                encoding="base64",
                filename="n.txt",
            )
        ),
        "part 1 (application/octet-stream)",
        SegmentKind.ATTACHMENT_TEXT,
        id="octet-stream-text-file",
    ),
    pytest.param(
        mixed(
            Part(content_type="application/octet-stream", body=b"plain words: Jin Park", encoding="base64")
        ),
        "part 1 (application/octet-stream)",
        SegmentKind.TEXT,
        id="octet-stream-sniffed-as-text",
    ),
    pytest.param(
        mixed(Part(content_type="image/png", body=b"Jin Park, as text", encoding="base64", filename="x.png")),
        "part 1 (image/png)",
        SegmentKind.ATTACHMENT_TEXT,
        id="text-disguised-as-image",
    ),
    pytest.param(
        mixed(Part(body="x", filename="Jin Park.txt")),
        "file name of part 1 (text/plain)",
        SegmentKind.FILENAME,
        id="filename-plain",
    ),
    pytest.param(
        mixed(Part(body="x", filename="Jin Park.txt", filename_style="2231")),
        "file name of part 1 (text/plain)",
        SegmentKind.FILENAME,
        id="filename-rfc2231",
    ),
    pytest.param(
        mixed(Part(body="x", filename="Zoë Müller notes.txt", filename_style="2231-split")),
        "file name of part 1 (text/plain)",
        SegmentKind.FILENAME,
        id="filename-rfc2231-continuations",
    ),
    pytest.param(
        mixed(
            Part(
                content_type="application/pdf",
                body=b"%PDF-1.4\x00",
                encoding="base64",
                headers=(
                    (
                        "Content-Disposition",
                        "attachment; " + rfc2231("filename", "Zoë Müller.pdf", "iso-8859-1"),
                    ),
                ),
            )
        ),
        "file name of part 1 (application/pdf)",
        SegmentKind.FILENAME,
        id="filename-rfc2231-latin-1",
    ),
    pytest.param(
        mixed(Part(body="x", filename="Jin Park.txt", filename_style="2047")),
        "file name of part 1 (text/plain)",
        SegmentKind.FILENAME,
        id="filename-rfc2047",
    ),
    # archives
    pytest.param(
        mixed(
            Part(
                content_type="application/zip",
                body=zip_bytes({"a/notes.txt": b"Jin Park"}),
                encoding="base64",
            )
        ),
        "file 1 of the archive in part 1 (application/zip)",
        SegmentKind.ATTACHMENT_TEXT,
        id="zip-member-text",
    ),
    pytest.param(
        mixed(
            Part(content_type="application/zip", body=zip_bytes({"Jin Park.txt": b"x"}), encoding="base64")
        ),
        "file name of file 1 of the archive in part 1 (application/zip)",
        SegmentKind.FILENAME,
        id="zip-member-name",
    ),
    pytest.param(
        mixed(
            Part(
                content_type="application/vnd.openxmlformats-officedocument.wordprocessingml.document",
                body=DOCX,
                encoding="base64",
                filename="statement.docx",
            )
        ),
        "file 2 of the document in part 1 (application/vnd.openxmlformats-officedocument."
        "wordprocessingml.document)",
        SegmentKind.ATTACHMENT_TEXT,
        id="docx-runs",
    ),
    pytest.param(
        mixed(
            Part(
                content_type="application/octet-stream",
                body=zip_bytes({"inner.zip": zip_bytes({"deep.txt": b"Jin Park"})}),
                encoding="base64",
            )
        ),
        "file 1 of the archive in file 1 of the archive in part 1 (application/octet-stream)",
        SegmentKind.ATTACHMENT_TEXT,
        id="zip-in-zip",
    ),
    # structure
    pytest.param(
        mixed(Attached(Message(headers=with_headers(Subject="Fwd: Jin Park")))),
        "header Subject of the message in part 1",
        SegmentKind.HEADER,
        id="forwarded-headers",
    ),
    pytest.param(
        mixed(
            Part(body="fyi"),
            Attached(Message(body=Multipart(parts=(Attached(Message(body=Part(body="from Jin Park"))),)))),
        ),
        "part 2.1.1 (text/plain)",
        SegmentKind.TEXT,
        id="forwarded-twice",
    ),
    pytest.param(
        mixed(Part(body="fyi"), Attached(Message(body=Part(body="Jin Park", encoding="base64")))),
        "part 2.1 (text/plain)",
        SegmentKind.TEXT,
        id="forwarded-base64-body",
    ),
    pytest.param(
        mixed(
            Part(
                content_type="message/rfc822",
                body=render(Message(body=Part(body="Jin Park wrote"))),
                encoding="base64",
                charset=None,
            )
        ),
        "part 1.1 (text/plain)",
        SegmentKind.TEXT,
        id="forwarded-message-base64-encoded",
    ),
    pytest.param(
        render(
            Message(
                body=Multipart(
                    subtype="report",
                    parts=(
                        Part(body="Delivery failed."),
                        Part(
                            content_type="text/rfc822-headers",
                            body="Subject: Jin Park\r\nFrom: a@b.example\r\n",
                        ),
                    ),
                )
            )
        ),
        "header Subject in part 2 (text/rfc822-headers)",
        SegmentKind.HEADER,
        id="rfc822-headers",
    ),
    pytest.param(
        render(Message(body=Multipart(parts=(Part(body="x"),), preamble="Jin Park was here"))),
        "text before the first part of the message body",
        SegmentKind.TEXT,
        id="preamble",
    ),
    pytest.param(
        render(Message(body=Multipart(parts=(Part(body="x"),), epilogue="Jin Park was here"))),
        "text after the last part of the message body",
        SegmentKind.TEXT,
        id="epilogue",
    ),
    pytest.param(
        render(
            Message(
                body=Multipart(
                    subtype="alternative",
                    parts=(Multipart(subtype="related", parts=(Multipart(parts=(Part(body="Jin Park"),)),)),),
                )
            )
        ),
        "part 1.1.1 (text/plain)",
        SegmentKind.TEXT,
        id="deeply-nested-part",
    ),
    pytest.param(
        b"From sender@example.net Mon Jan  1 00:00:00 2024\nSubject: hi\n\nJin Park\n",
        "part 1 (text/plain)",
        SegmentKind.TEXT,
        id="mbox-from-line-lf-endings",
    ),
]


@pytest.mark.parametrize(("raw", "where", "kind"), DECODING_CASES)
def test_decodes_and_finds(raw: bytes, where: str, kind: SegmentKind) -> None:
    parsed = parse_message(raw)
    assert parsed.ambiguities == ()
    assert any(hit_where == where and hit_kind is kind for hit_where, hit_kind, _ in hits(parsed)), hits(
        parsed
    )


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(single(Part(body="Jingle bells in Beijing", encoding="base64")), id="name-inside-words"),
        pytest.param(
            mixed(Part(content_type="image/png", body=b"\x89PNG\r\n\x1a\n\x00 Jin Park", encoding="base64")),
            id="binary-image-not-decoded-as-text",
        ),
        pytest.param(
            single(Part(content_type="text/html", body="<p>Ji</p><p>n Park</p>")), id="html-blocks-split"
        ),
        pytest.param(
            single(Part(content_type="text/html", body='<img src="data:image/png;base64,AAA+Jin/Park+AAA">')),
            id="inline-image-data-uri-not-read",
        ),
        pytest.param(
            plain(Subject="x", To="Jin <jin@example.net>", Cc="Park <park@example.net>"),
            id="name-parts-in-two-headers",
        ),
    ],
)
def test_does_not_find(raw: bytes) -> None:
    assert hits(parse_message(raw)) == []


# --- where, leading text, signatures, addresses ---------------------------------------------------


def test_locations_never_echo_sender_chosen_text() -> None:
    raw = mixed(
        Part(
            content_type="application/x-jin-park",
            body=b"\x00\x01",
            encoding="base64",
            filename="Jin Park.bin",
        ),
        **{"X-Jin-Park": "v"},
    )
    parsed = parse_message(raw)
    places = [segment.where for segment in parsed.segments] + [part.where for part in parsed.uninspectable]
    assert places
    assert not any("jin" in place.lower() for place in places)
    assert parsed.uninspectable[0].where == "part 1 (application/other)"


def test_leading_text_is_each_top_level_body() -> None:
    raw = render(
        Message(
            body=Multipart(
                parts=(
                    Multipart(
                        subtype="alternative",
                        parts=(
                            Part(body="[+ Maya]\nplain body"),
                            Part(content_type="text/html", body="<p>[+ Maya]</p>"),
                        ),
                    ),
                    Part(body="attachment text", filename="a.txt"),
                    Part(body="second inline part"),
                )
            )
        )
    )
    assert parse_message(raw).leading_text == ("[+ Maya]\r\nplain body", "[+ Maya]")


def test_leading_text_of_html_is_its_body() -> None:
    html = (
        "<html><head><title>Re: event</title><style>p {}</style></head>"
        "<body><p>[+ Maya]</p><p>Hi</p></body></html>"
    )
    parsed = parse_message(single(Part(content_type="text/html", body=html)))
    assert parsed.leading_text == ("[+ Maya]\n\nHi",)
    assert any("Re: event" in segment.text for segment in parsed.segments)  # the title is still read


def test_leading_text_is_bounded() -> None:
    assert len(parse_message(plain("x" * 10_000)).leading_text[0]) == 2048


@pytest.mark.parametrize(
    ("raw", "signed"),
    [
        pytest.param(
            mixed(
                Part(body="signed text"),
                Part(
                    content_type="application/pgp-signature",
                    body="-----BEGIN PGP SIGNATURE-----\n",
                    charset=None,
                ),
            ).replace(b"multipart/mixed", b"multipart/signed"),
            True,
            id="multipart-signed",
        ),
        pytest.param(
            mixed(
                Part(
                    content_type="application/pkcs7-mime; smime-type=signed-data",
                    body=b"\x30\x80",
                    encoding="base64",
                )
            ),
            True,
            id="smime-opaque-signed",
        ),
        pytest.param(
            plain("-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA256\n\nhello\n"), True, id="inline-pgp-signed"
        ),
        pytest.param(plain("hello"), False, id="unsigned"),
    ],
)
def test_signed(raw: bytes, signed: bool) -> None:
    assert parse_message(raw).signed is signed


def test_envelope_facts_from_headers() -> None:
    raw = plain(
        From=f"{encoded_word('Ada Quill')} <ada@example.org>",
        To="a@example.net, Bo <b@example.net>",
        Cc="conduct@example.org",
        Subject=encoded_word("Re: hello"),
        In_Reply_To="<parent@example.org>",
        References="<root@example.org>\r\n <parent@example.org>",
    )
    parsed = parse_message(raw)
    assert parsed.from_[0].name == "Ada Quill"
    assert parsed.from_[0].address == "ada@example.org"
    assert [mailbox.address for mailbox in parsed.to] == ["a@example.net", "b@example.net"]
    assert parsed.cc[0].address == "conduct@example.org"
    assert parsed.subject == "Re: hello"
    assert parsed.message_id == "<builder@committee.example.org>"
    assert parsed.in_reply_to == ("<parent@example.org>",)
    assert parsed.references == ("<root@example.org>", "<parent@example.org>")


def test_raw_utf8_headers_are_read_as_utf8() -> None:
    raw = plain(Subject="Grüße", From="Zoë <zoe@example.net>")
    parsed = parse_message(raw)
    assert parsed.ambiguities == ()
    assert parsed.subject == "Grüße"
    assert parsed.from_[0].name == "Zoë"


# --- what cannot be read --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "kind"),
    [
        pytest.param(
            mixed(
                Part(content_type="application/pgp-encrypted", body="Version: 1"),
                Part(content_type="application/octet-stream", body=b"x"),
            ).replace(b"multipart/mixed", b"multipart/encrypted"),
            "encrypted",
            id="pgp-mime-encrypted",
        ),
        pytest.param(
            mixed(
                Part(
                    content_type="application/pkcs7-mime; smime-type=enveloped-data",
                    body=b"\x30\x80",
                    encoding="base64",
                )
            ),
            "encrypted",
            id="smime-enveloped",
        ),
        pytest.param(
            plain("-----BEGIN PGP MESSAGE-----\nhQEMA\n-----END PGP MESSAGE-----\n"),
            "encrypted",
            id="inline-pgp",
        ),
        pytest.param(
            mixed(
                Part(
                    content_type="application/zip",
                    body=encrypted_zip({"a.txt": b"secret"}),
                    encoding="base64",
                )
            ),
            "encrypted",
            id="password-protected-zip",
        ),
        pytest.param(
            mixed(
                Part(content_type="application/zip", body=b"PK\x03\x04 not really a zip", encoding="base64")
            ),
            "archive",
            id="damaged-zip",
        ),
        pytest.param(
            mixed(
                Part(
                    content_type="application/pdf",
                    body=b"%PDF-1.7\n\x00\x01\x02",
                    encoding="base64",
                    filename="r.pdf",
                )
            ),
            "binary",
            id="pdf",
        ),
        pytest.param(
            mixed(Part(content_type="application/octet-stream", body=bytes(range(256)), encoding="base64")),
            "binary",
            id="unknown-binary",
        ),
        pytest.param(
            mixed(Part(content_type="application/gzip", body=b"\x1f\x8b\x08\x00\x00\x00", encoding="base64")),
            "archive",
            id="truncated-gzip",
        ),
        pytest.param(
            mixed(Part(content_type="message/partial; id=x; number=1", body="part", charset=None)),
            "binary",
            id="message-partial",
        ),
    ],
)
def test_uninspectable(raw: bytes, kind: str) -> None:
    parsed = parse_message(raw)
    assert parsed.ambiguities == ()
    assert [part.kind for part in parsed.uninspectable] == [kind]


def test_archive_bombs_are_not_unpacked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(parts, "MAX_ARCHIVE_MEMBER_BYTES", 10_000)
    bomb = zip_bytes({"zeros.txt": b"0" * 50_000, "small.txt": b"Jin Park"})
    parsed = parse_message(mixed(Part(content_type="application/zip", body=bomb, encoding="base64")))
    assert [(part.where, part.kind) for part in parsed.uninspectable] == [
        ("file 1 of the archive in part 1 (application/zip)", "archive")
    ]
    assert (
        "file 2 of the archive in part 1 (application/zip)",
        SegmentKind.ATTACHMENT_TEXT,
        "Jin Park",
    ) in hits(parsed)


def test_archives_with_too_many_files_are_not_unpacked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(parts, "MAX_ARCHIVE_MEMBERS", 3)
    many = zip_bytes({f"{n}.txt": b"x" for n in range(4)})
    parsed = parse_message(mixed(Part(content_type="application/zip", body=many, encoding="base64")))
    assert [part.kind for part in parsed.uninspectable] == ["archive"]


def test_images_are_media_not_uninspectable() -> None:
    parsed = parse_message(
        mixed(Part(body="hi"), Part(content_type="image/jpeg", body=b"\xff\xd8\xff\x00", encoding="base64"))
    )
    assert parsed.uninspectable == ()
    assert [(part.where, part.kind) for part in parsed.media] == [("part 2 (image/jpeg)", "media")]


def test_office_layout_members_and_images_are_not_uninspectable() -> None:
    parsed = parse_message(
        mixed(Part(content_type="application/octet-stream", body=DOCX, encoding="base64", filename="s.docx"))
    )
    assert parsed.uninspectable == ()
    assert len(parsed.media) == 1


# --- ambiguity --------------------------------------------------------------------------------------

BOUNDARY_REUSED = (
    b'Content-Type: multipart/mixed; boundary="b1"\r\n\r\n--b1\r\n'
    b'Content-Type: multipart/alternative; boundary="b1"\r\n\r\n'
    b"--b1\r\nContent-Type: text/plain\r\n\r\nx\r\n--b1--\r\n"
)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        pytest.param(
            b"From: a@example.org\r\nFrom: b@example.org\r\n\r\nx\r\n",
            "the message has more than one From header",
            id="two-from",
        ),
        pytest.param(
            b"Subject: a\r\nSubject: b\r\n\r\nx\r\n",
            "the message has more than one Subject header",
            id="two-subjects",
        ),
        pytest.param(
            b"To: a@example.org\r\nTo: b@example.org\r\n\r\nx\r\n",
            "the message has more than one To header",
            id="two-to",
        ),
        pytest.param(
            b"Content-Type: text/plain\r\nContent-Type: text/html\r\n\r\nx\r\n",
            "the message has more than one Content-Type header",
            id="two-content-types",
        ),
        pytest.param(
            b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\nContent-Transfer-Encoding: base64\r\n'
            b"Content-Transfer-Encoding: 7bit\r\n\r\nx\r\n--b--\r\n",
            "a MIME part or attached message has more than one Content-Transfer-Encoding header",
            id="two-transfer-encodings-in-a-part",
        ),
        pytest.param(
            b'Content-Type: multipart/mixed; boundary="a"; boundary="b"\r\n\r\n--a\r\n\r\nx\r\n--a--\r\n',
            "conflicting boundary parameters in a Content-Type header",
            id="two-boundaries",
        ),
        pytest.param(
            b"Content-Type: text/plain; charset=utf-8; charset*=iso-8859-1''x\r\n\r\nx\r\n",
            "conflicting charset parameters in a Content-Type header",
            id="charset-plain-and-extended",
        ),
        pytest.param(
            BOUNDARY_REUSED,
            "a nested multipart reuses the boundary of an enclosing multipart",
            id="boundary-reused",
        ),
        pytest.param(
            b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
            b"--b\r\nContent-Type: text/plain\r\n\r\nx\r\n",
            "a multipart has no closing boundary",
            id="no-closing-boundary",
        ),
        pytest.param(
            b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
            b"--c\r\nContent-Type: text/plain\r\n\r\nx\r\n--c--\r\n",
            "a multipart has no part matching its boundary",
            id="boundary-never-used",
        ),
        pytest.param(
            b"Content-Type: multipart/mixed\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nx\r\n--b--\r\n",
            "a multipart has no boundary parameter",
            id="no-boundary-parameter",
        ),
        pytest.param(
            b"Content-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\n"
            b"SmluIFBhcmsK\r\nJin Park\r\n",
            "part 1 has invalid base64",
            id="text-after-base64",
        ),
        pytest.param(
            b"Content-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\nSmluIFBhcms\r\n",
            "part 1 has invalid base64",
            id="base64-missing-padding",
        ),
        pytest.param(
            b"Content-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\nSmlu=IFBhcms=\r\n",
            "part 1 has invalid base64",
            id="base64-padding-inside",
        ),
        pytest.param(
            b"Subject: caf\xe9 Jin Park\r\n\r\nx\r\n",
            "a header contains 8-bit bytes that are not valid UTF-8",
            id="latin-1-header-bytes",
        ),
    ],
)
def test_ambiguous(raw: bytes, reason: str) -> None:
    parsed = parse_message(raw)
    assert reason in parsed.ambiguities
    assert not any("jin" in text.lower() or "park" in text.lower() for text in parsed.ambiguities)


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(
            b"From someone Mon Jan 1 00:00:00 2024\r\nSubject: x\r\n\r\nbody\r\n", id="mbox-from-line"
        ),
        pytest.param(b" " * 255 + b"\r\nSubject: x\r\n\r\nbody\r\n", id="leading-whitespace-line"),
        pytest.param(b"Subject: x\nTo: a@example.net\n\nbody\n", id="lf-line-endings"),
        pytest.param(
            b'Content-Type: multipart/mixed; boundary="abc"\r\n\r\n--abc\r\n'
            b'Content-Type: multipart/alternative; boundary="abc_alt"\r\n\r\n'
            b"--abc_alt\r\n\r\nx\r\n--abc_alt--\r\n--abc--\r\n",
            id="boundary-prefix-of-nested-boundary",
        ),
        pytest.param(
            mixed(Part(content_type="image/gif", body=b"GIF89a\x00\x01", encoding="base64")).replace(
                b"AAE=", b"AAE"
            ),
            id="image-base64-without-padding",
        ),
        pytest.param(b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n', id="multipart-without-body"),
        pytest.param(b"", id="empty"),
    ],
)
def test_ordinary_mail_is_not_ambiguous(raw: bytes) -> None:
    assert parse_message(raw).ambiguities == ()


def test_too_many_parts() -> None:
    raw = render(Message(body=Multipart(parts=tuple(Part(body="x") for _ in range(MAX_PARTS + 1)))))
    parsed = parse_message(raw)
    assert parsed.ambiguities == (f"too many MIME parts (limit {MAX_PARTS})",)
    assert parsed.segments == ()


@pytest.mark.parametrize("levels", [MAX_DEPTH + 1, 2000], ids=["past-limit", "past-python-recursion"])
def test_too_deeply_nested(levels: int) -> None:
    head = b"".join(
        b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (n, n) for n in range(levels)
    )
    tail = b"".join(b"\r\n--b%d--\r\n" % n for n in reversed(range(levels)))
    parsed = parse_message(head + b"Content-Type: text/plain\r\n\r\nJin Park" + tail)
    assert parsed.ambiguities == (f"MIME parts are nested too deeply (limit {MAX_DEPTH} levels)",)


# --- parameters and robustness -----------------------------------------------------------------


def test_rfc2231_continuations_mixed_with_plain_sections() -> None:
    parameters = parse_parameters('attachment; filename*0="Jin "; filename*1*=%50ark; filename*2=.txt')
    assert parameters.first("filename") == "Jin Park.txt"
    assert parameters.conflicts == set()


INTERNAL_ERROR = "the message structure could not be decoded"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2000))
def test_never_raises_on_random_bytes(raw: bytes) -> None:
    parsed = parse_message(raw)
    assert isinstance(parsed, ParsedMessage)
    assert INTERNAL_ERROR not in parsed.ambiguities  # the safety net is for bugs; random input is no bug


_SEED = mixed(
    Part(body="Hello Jin Park", encoding="quoted-printable"),
    Part(content_type="text/html", body=NAME_IN_HTML, encoding="base64"),
    Attached(
        Message(
            headers=with_headers(Subject=encoded_word("Fwd")),
            body=Part(body="x", filename="a.txt", filename_style="2231"),
        )
    ),
    Part(content_type="application/zip", body=zip_bytes({"a.txt": b"x"}), encoding="base64"),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, len(_SEED) - 1), st.binary(min_size=0, max_size=8)), max_size=6))
def test_never_raises_on_damaged_messages(edits: list[tuple[int, bytes]]) -> None:
    raw = bytearray(_SEED)
    for position, replacement in edits:
        raw[position : position + len(replacement)] = replacement
    parsed = parse_message(bytes(raw))
    assert isinstance(parsed, ParsedMessage)
    assert INTERNAL_ERROR not in parsed.ambiguities


# Bytes a base64 body is made of, and what breaks it.
_BASE64_LIKE = st.lists(st.sampled_from(b"AZaz09+/= \t\r\n\f\v\x00\xff-_.="), max_size=24).map(bytes)


@settings(max_examples=500, deadline=None)
@given(_BASE64_LIKE)
def test_base64_validity_is_the_regex_definition(data: bytes) -> None:
    # valid_base64 strips and checks with bytes.translate; the rule it implements, as regexes:
    cleaned = re.sub(rb"[ \t\r\n\f\v]+", b"", data)
    expected = len(cleaned) % 4 == 0 and re.fullmatch(rb"[A-Za-z0-9+/]*={0,2}", cleaned) is not None
    assert transfer_encodings.valid_base64(data) == expected


@settings(max_examples=500, deadline=None)
@given(_BASE64_LIKE)
def test_lenient_base64_drops_exactly_what_is_not_base64(data: bytes) -> None:
    cleaned = re.sub(rb"[^A-Za-z0-9+/]", b"", data)
    cleaned = cleaned[: len(cleaned) - 1] if len(cleaned) % 4 == 1 else cleaned
    assert transfer_encodings.lenient_base64(data) == base64.b64decode(cleaned + b"=" * (-len(cleaned) % 4))


@pytest.mark.parametrize(
    "recipients",
    [
        pytest.param(2, id="short-header-remembered"),
        pytest.param(200, id="long-header-parsed-every-time"),
    ],
)
def test_address_headers_parse_the_same_every_time(recipients: int) -> None:
    to = ", ".join(f'"Jin {n}" <jin.{n}@example.net>' for n in range(recipients))
    raw = f"From: Ada <ada@example.org>\r\nTo: {to}\r\nSubject: x\r\n\r\nHello\r\n".encode()
    first, again = parse_message(raw), parse_message(raw)
    assert first.to == again.to
    assert [(a.name, a.address) for a in first.to] == [
        (f"Jin {n}", f"jin.{n}@example.net") for n in range(recipients)
    ]
    assert first.from_ == again.from_ == (Address(name="Ada", address="ada@example.org"),)


def _split_parameters_char_by_char(header: str) -> list[str]:
    """mime_parameters.split_parameters as first written: one character at a time."""
    pieces: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    for char in header:
        if escaped:
            escaped = False
        elif quoted and char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == ";" and not quoted:
            pieces.append("".join(current))
            current = []
            continue
        current.append(char)
    pieces.append("".join(current))
    return pieces


@settings(max_examples=1000, deadline=None)
@given(
    st.lists(st.sampled_from(('"', "\\", ";", "a", " ", "=", "\\\\", '\\"', "\\;")), max_size=16).map("".join)
)
def test_parameters_split_as_char_by_char(header: str) -> None:
    assert split_parameters(header) == _split_parameters_char_by_char(header)
