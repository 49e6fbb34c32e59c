"""Property: text a reader sees as a protected name is found, however the bytes or characters disguise it.

Each test generates one class of disguise the gateway once let through to an outsider: a charset
label that reads the bytes as something else than a client shows, quoted-printable soft line
breaks padded with blanks, an unknown transfer encoding over base64 or quoted-printable, CSS
escapes in a stylesheet's ``content:`` string, a right-to-left override showing reversed letters
in reading order, two letters written as one Latin ligature letter, percent-escapes in a plain
text link or a header, an encoded-word in a charset that misreads its ASCII, JSON ``\\u`` escapes,
Markdown emphasis inside a name, HTML shown right to left (``<bdo>``, CSS bidi-override), and
letters hidden by CSS inside a word.
"""

from __future__ import annotations

import base64
import binascii
import re
import unicodedata
from dataclasses import replace

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.policy.matcher import IdentityMatcher
from gateway.policy.mime import parse_message
from gateway.policy.model import IdentityKind, ProtectedIdentity
from gateway.policy.normalize import confusable_table, normalize
from gateway.policy.rules import reporter_protection
from tests.policy.test_protection_properties import CONTEXT, IDENTITIES, INSIDE, OUTSIDE

NAMES = [identity for identity in IDENTITIES if identity.kind is IdentityKind.NAME]
LATIN_NAMES = [identity for identity in NAMES if identity.value.isascii() or identity.value == "Zoë Müller"]
FILLER = st.text(alphabet="abcdefghkmqrstuvwxyz ,.", max_size=30)
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def mail(body: bytes, content_type: str, encoding: str = "7bit") -> bytes:
    head = (
        "From: Ada <ada@example.org>\r\nTo: Mods <mod@forum.example.net>\r\nSubject: Note\r\n"
        "Message-ID: <d1@example.org>\r\nMIME-Version: 1.0\r\n"
        f"Content-Type: {content_type}\r\nContent-Transfer-Encoding: {encoding}\r\n\r\n"
    )
    return head.encode("ascii") + body


def people_found(raw: bytes) -> set[tuple[str, str]]:
    parsed = parse_message(raw)
    findings = reporter_protection.check(parsed, OUTSIDE, CONTEXT, reporter_protection.Params())
    return {(finding.case, finding.private_detail) for finding in findings}


def assert_found(raw: bytes, identity: ProtectedIdentity) -> None:
    named = f'name "{identity.value}"'
    assert any(case == identity.case and detail.startswith(named) for case, detail in people_found(raw)), raw
    parsed = parse_message(raw)
    assert reporter_protection.check(parsed, INSIDE, CONTEXT, reporter_protection.Params()) == []


def base64_body(data: bytes) -> bytes:
    return base64.encodebytes(data).replace(b"\n", b"\r\n")


# --- a charset label the bytes do not follow ------------------------------------------------------

# Charsets that do not read ASCII bytes as ASCII. A client that does not know the label, or a
# browser for <meta charset="utf-16"> (read as UTF-8 by the HTML standard), shows the plain text.
ASCII_INCOMPATIBLE = ["utf-16", "utf-16le", "utf-16be", "utf-32", "utf-32le", "cp500", "cp037", "cp1026"]


@SETTINGS
@given(
    identity=st.sampled_from(LATIN_NAMES),
    before=FILLER,
    after=FILLER,
    label=st.sampled_from(ASCII_INCOMPATIBLE),
    where=st.sampled_from(["header", "meta"]),
    html=st.booleans(),
    utf8=st.booleans(),
)
def test_a_charset_label_that_misreads_the_bytes_does_not_hide_them(
    identity: ProtectedIdentity, before: str, after: str, label: str, where: str, html: bool, utf8: bool
) -> None:
    text = f"{before} {identity.value} {after}"
    data = text.encode("utf-8" if utf8 else "latin-1")
    if html:
        page = f'<html><head><meta charset="{label}"></head><body><p>'.encode() + data + b"</p></body></html>"
        content_type = "text/html" if where == "meta" else f"text/html; charset={label}"
        raw = mail(base64_body(page), content_type, "base64")
    else:
        raw = mail(base64_body(data), f"text/plain; charset={label}", "base64")
    assert_found(raw, identity)


# --- quoted-printable soft line breaks with trailing blanks ---------------------------------------


@SETTINGS
@given(
    identity=st.sampled_from(NAMES),
    cut=st.integers(1, 20),
    padding=st.text(alphabet=" \t", min_size=1, max_size=4),
    newline=st.sampled_from(["\r\n", "\n"]),
)
def test_a_soft_line_break_padded_with_blanks_joins_the_lines(
    identity: ProtectedIdentity, cut: int, padding: str, newline: str
) -> None:
    encoded = binascii.b2a_qp(f"Note: {identity.value} said so".encode()).decode("ascii")
    position = min(cut + len("Note: "), len(encoded) - 1)
    while encoded[position - 2 : position].startswith("=") or encoded[position - 1] == "=":
        position -= 1  # never inside an =XX escape
    body = encoded[:position] + "=" + padding + newline + encoded[position:] + "\r\n"
    assert_found(mail(body.encode("ascii"), "text/plain; charset=utf-8", "quoted-printable"), identity)


# --- an unknown Content-Transfer-Encoding ----------------------------------------------------------


@SETTINGS
@given(
    identity=st.sampled_from(NAMES),
    name=st.from_regex(r"\Ax-[a-z0-9]{1,10}\Z").filter(lambda name: not re.search("b64|base64|uu|qp", name)),
    inner=st.sampled_from(["base64", "quoted-printable"]),
)
def test_an_unknown_transfer_encoding_is_read_as_every_encoding_it_looks_like(
    identity: ProtectedIdentity, name: str, inner: str
) -> None:
    data = f"Note: {identity.value} said so".encode()
    body = base64_body(data) if inner == "base64" else binascii.b2a_qp(data, quotetabs=True, istext=False)
    if inner == "quoted-printable":
        body = body.replace(b" ", b"=20")  # so that the raw text does not already show the name
    assert_found(mail(body, "text/plain; charset=utf-8", name), identity)


# --- CSS escapes in a stylesheet's generated content ------------------------------------------------


@st.composite
def css_escaped(draw: st.DrawFn, text: str) -> str:
    out = []
    for index, char in enumerate(text):
        following = text[index + 1 : index + 2]
        choice = draw(st.integers(0, 2))
        if choice == 1:
            # A hex escape ends after 6 digits or at one blank, which it swallows: end it with a
            # blank when the next character would read as a digit of the escape or be swallowed.
            needs_end = following != "" and following in "0123456789abcdefABCDEF \t"
            end = " " if needs_end else draw(st.sampled_from(["", " "]))
            out.append(f"\\{ord(char):0{draw(st.integers(1, 6))}x}{end}")
        elif choice == 2 and char.isalpha() and char not in "abcdefABCDEF":
            out.append("\\" + char)  # an escaped character that is not a hex digit is itself
        else:
            out.append(char)
    return "".join(out)


@SETTINGS
@given(identity=st.sampled_from(NAMES), data=st.data())
def test_css_escapes_in_generated_content_are_read_as_shown(
    identity: ProtectedIdentity, data: st.DataObject
) -> None:
    escaped = data.draw(css_escaped(identity.value))
    page = (
        f'<html><head><style>p::after {{ content: "{escaped}"; }}</style></head><body><p>Hi</p></body></html>'
    )
    assert_found(mail(page.encode(), "text/html; charset=utf-8"), identity)


# --- right-to-left override ------------------------------------------------------------------------


@SETTINGS
@given(
    identity=st.sampled_from(NAMES),
    before=FILLER,
    after=FILLER,
    end=st.sampled_from(["\u202c", "\u2069", "\r\n", ""]),
)
def test_a_right_to_left_override_is_read_in_the_order_shown(
    identity: ProtectedIdentity, before: str, after: str, end: str
) -> None:
    text = f"{before} \u202e{identity.value[::-1]}{end} {after}\r\n"
    assert_found(mail(text.encode(), "text/plain; charset=utf-8", "8bit"), identity)


# --- two letters written as one --------------------------------------------------------------------


def ligatures() -> list[tuple[str, str]]:
    """Latin letters named for two letters ("LATIN SMALL LETTER MIDDLE-WELSH LL"), with them."""
    found = []
    for code_point in range(0x80, 0x30000):
        char = chr(code_point)
        match = re.fullmatch(
            r"LATIN (?:SMALL|CAPITAL) (?:LETTER|LIGATURE) (?:MIDDLE-WELSH )?([A-Z]{2})",
            unicodedata.name(char, ""),
        )
        if match and unicodedata.category(char)[0] == "L" and unicodedata.normalize("NFKD", char) == char:
            found.append((char, match.group(1).lower()))
    return found


# Those the UTS #39 data does not read by their shape instead (Ꝡ as "w", Ȣ as "8").
LIGATURES = [(char, letters) for char, letters in ligatures() if ord(char) not in confusable_table()]


@SETTINGS
@given(ligature=st.sampled_from(LIGATURES), before=FILLER, after=FILLER)
def test_a_ligature_letter_reads_as_its_two_letters(
    ligature: tuple[str, str], before: str, after: str
) -> None:
    char, letters = ligature
    assert normalize(f"{before}{char}{after}") == normalize(f"{before}{letters}{after}")


@SETTINGS
@given(ligature=st.sampled_from(LIGATURES), before=FILLER)
def test_a_name_written_with_a_ligature_letter_is_found(ligature: tuple[str, str], before: str) -> None:
    char, letters = ligature
    person = ProtectedIdentity("home-shelf", "r9", IdentityKind.NAME, f"Robin Ca{letters}stellano")
    context = replace(CONTEXT, finder=IdentityMatcher.build((person,)))
    raw = mail(f"{before} Robin Ca{char}stellano\r\n".encode(), "text/plain; charset=utf-8", "8bit")
    findings = reporter_protection.check(parse_message(raw), OUTSIDE, context, reporter_protection.Params())
    assert [finding.private_detail for finding in findings] == [f'name "{person.value}"'], raw


# --- percent-escapes in a plain text link ------------------------------------------------------------


@SETTINGS
@given(identity=st.sampled_from(NAMES), data=st.data())
def test_percent_escapes_in_plain_text_are_read_decoded(
    identity: ProtectedIdentity, data: st.DataObject
) -> None:
    escaped = "".join(
        "".join(f"%{byte:02X}" for byte in char.encode())
        if char == " " or data.draw(st.booleans(), label=f"escape {char!r}")
        else char
        for char in identity.value
    )
    text = f"See https://people.example.net/find?q={escaped} for details.\r\n"
    assert_found(mail(text.encode(), "text/plain; charset=utf-8", "8bit"), identity)


# --- an encoded-word whose charset reads its ASCII otherwise ---------------------------------------


@SETTINGS
@given(
    identity=st.sampled_from([identity for identity in NAMES if identity.value.isascii()]),
    label=st.sampled_from(ASCII_INCOMPATIBLE),
    encoding=st.sampled_from(["B", "Q"]),
    header=st.sampled_from(["Subject", "Comments"]),
)
def test_an_encoded_word_in_a_charset_that_misreads_its_ascii_does_not_hide_it(
    identity: ProtectedIdentity, label: str, encoding: str, header: str
) -> None:
    data = identity.value.encode("ascii")
    payload = base64.b64encode(data).decode() if encoding == "B" else identity.value.replace(" ", "_")
    raw = mail(b"Hello\r\n", "text/plain; charset=utf-8").replace(
        b"Subject: Note\r\n", f"{header}: =?{label}?{encoding}?{payload}?=\r\n".encode()
    )
    if header != "Subject":
        raw = raw.replace(b"MIME-Version", b"Subject: Note\r\nMIME-Version")
    assert_found(raw, identity)


# --- JSON and JavaScript \u escapes -----------------------------------------------------------------


@SETTINGS
@given(
    identity=st.sampled_from(NAMES),
    data=st.data(),
    content_type=st.sampled_from(["application/json", "text/plain"]),
)
def test_unicode_escapes_are_read_decoded(
    identity: ProtectedIdentity, data: st.DataObject, content_type: str
) -> None:
    def escape(char: str) -> str:
        units = char.encode("utf-16-be")
        return "".join(f"\\u{units[i]:02x}{units[i + 1]:02x}" for i in range(0, len(units), 2))

    escaped = "".join(
        escape(char) if char != " " and data.draw(st.booleans(), label=f"escape {char!r}") else char
        for char in identity.value
    )
    body = ('{"note": "' + escaped + '"}\r\n').encode()
    assert_found(mail(body, f"{content_type}; charset=utf-8"), identity)


# --- Markdown emphasis inside words ------------------------------------------------------------------


@SETTINGS
@given(identity=st.sampled_from(NAMES), data=st.data())
def test_emphasis_markers_inside_a_name_do_not_split_it(
    identity: ProtectedIdentity, data: st.DataObject
) -> None:
    marked = "".join(
        char
        + (data.draw(st.sampled_from(["", "", "*", "**", "`", "~~"]), label="marker") if char != " " else "")
        for char in identity.value
    )
    assert_found(mail(f"Note: {marked} said\r\n".encode(), "text/plain; charset=utf-8", "8bit"), identity)


# --- HTML that displays letters in reverse order --------------------------------------------------


@SETTINGS
@given(
    identity=st.sampled_from(NAMES),
    before=FILLER,
    wrapper=st.sampled_from(
        [
            '<bdo dir="rtl">{}</bdo>',
            "<BDO DIR=rtl><span>{}</span></BDO>",
            '<p style="direction: rtl; unicode-bidi: bidi-override">{}</p>',
            '<div style="unicode-bidi:Bidi-Override;direction:rtl"><b>{}</b></div>',
        ]
    ),
)
def test_html_shown_right_to_left_is_read_in_the_order_shown(
    identity: ProtectedIdentity, before: str, wrapper: str
) -> None:
    page = f"<html><body><p>{before}</p>{wrapper.format(identity.value[::-1])}</body></html>"
    assert_found(mail(page.encode(), "text/html; charset=utf-8"), identity)


# --- escapes in headers ------------------------------------------------------------------------------


@SETTINGS
@given(identity=st.sampled_from([identity for identity in NAMES if identity.value.isascii()]), data=st.data())
def test_percent_escapes_in_a_subject_are_read_decoded(
    identity: ProtectedIdentity, data: st.DataObject
) -> None:
    escaped = "".join(
        f"%{ord(char):02X}" if char == " " or data.draw(st.booleans(), label=f"escape {char!r}") else char
        for char in identity.value
    )
    raw = mail(b"Hello\r\n", "text/plain; charset=utf-8").replace(
        b"Subject: Note", f"Subject: see https://people.example.net/{escaped}".encode()
    )
    assert_found(raw, identity)


# --- invisible letters inside a word -------------------------------------------------------------------


@SETTINGS
@given(
    identity=st.sampled_from(NAMES),
    cut=st.integers(1, 6),
    junk=st.text(alphabet="qxzvw", min_size=1, max_size=5),
    tag=st.sampled_from(["span", "font", "b", "SPAN"]),
    hiding=st.sampled_from(
        [
            'style="display:none"',
            "style='font-size: 0px'",
            'style="color:red; visibility : hidden"',
            'style="opacity:0"',
            'style="mso-hide:all;font-size:0"',
            "hidden",
        ]
    ),
)
def test_letters_hidden_inside_a_word_do_not_change_the_word(
    identity: ProtectedIdentity, cut: int, junk: str, tag: str, hiding: str
) -> None:
    position = min(cut, len(identity.value) - 1)
    hidden = f"<{tag} {hiding}>{junk}</{tag}>"
    shown = f"{identity.value[:position]}{hidden}{identity.value[position:]}"
    page = f"<html><body><p>Hello {shown}.</p></body></html>"
    assert_found(mail(page.encode(), "text/html; charset=utf-8"), identity)
