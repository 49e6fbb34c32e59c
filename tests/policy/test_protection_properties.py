"""Property: a protected identity placed anywhere in any MIME tree, in any encoding, is always found.

Hypothesis builds a random message: the identity (in a random spelling — case, whitespace and line
breaks, invisible characters, look-alike letters) sits inside random text in one carrier (a text
or HTML body, a text attachment, an HTML attribute, a file name, a header, a multipart preamble or
epilogue), encoded at random (7bit, 8bit, quoted-printable with soft breaks anywhere, base64,
encoded-words B/Q, RFC 2231 with continuations, several charsets), and the carrier is wrapped in
random layers of multipart/mixed, alternative, related and attached messages with random
siblings. Sent to an outsider, reporter-protection must report that person; sent only inside the
committee, nothing.
"""

from __future__ import annotations

import html
from dataclasses import replace

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.policy.matcher import IdentityMatcher
from gateway.policy.mime import parse_message
from gateway.policy.model import Envelope, IdentityKind, ProtectedIdentity, RuleContext, Strength
from gateway.policy.rules import reporter_protection
from gateway.policy.variants import examples
from tests.policy.builders import (
    DEFAULT_HEADERS,
    Attached,
    Message,
    Multipart,
    Node,
    Part,
    encoded_word,
    encoded_words,
    render,
)

IDENTITIES = (
    ProtectedIdentity("home-shelf", "r1", IdentityKind.NAME, "Jin Park"),
    ProtectedIdentity("home-shelf", "r1", IdentityKind.ALIAS, "JP"),
    ProtectedIdentity("home-shelf", "r1", IdentityKind.USERNAME, "jpark"),
    ProtectedIdentity("home-shelf", "r1", IdentityKind.ADDRESS, "jin.park@example.org"),
    ProtectedIdentity("home-shelf", "w1", IdentityKind.NAME, "Zoë Müller"),
    ProtectedIdentity("stunned-bulb", "r1", IdentityKind.NAME, "李明"),
)
CONTEXT = RuleContext(
    conduct_address="conduct@example.org",
    committee=frozenset({"ada@example.org", "bram@example.org"}),
    member_names=(),
    internal_domains=frozenset(),
    finder=IdentityMatcher.build(IDENTITIES),
    consents=frozenset(),
)
OUTSIDE = Envelope("ada@example.org", ("bram@example.org", "mod@forum.example.net"), "ada@example.org")
INSIDE = Envelope("ada@example.org", ("bram@example.org", "conduct@example.org"), "ada@example.org")

LOOK_ALIKES = {"a": "а", "e": "е", "o": "о", "p": "р", "c": "с", "i": "і", "j": "ј", "J": "Ј", "P": "Р"}
INVISIBLE = ("\u200b", "\u200c", "\u200d", "\u2060", "\u00ad", "\ufeff")
FILLER = st.text(alphabet="abcdefghkmqrstuvwxyz ,.", max_size=40)


@st.composite
def spellings(draw: st.DrawFn, value: str, *, line_breaks: bool) -> str:
    """``value`` as a sender might disguise it; it still normalises to the same text."""
    out: list[str] = []
    for char in value:
        if char == " ":
            spaces = [" ", "  ", "\t", "\u00a0"] + (["\n", "\r\n", " \r\n "] if line_breaks else [])
            out.append(draw(st.sampled_from(spaces)))
            continue
        choice = draw(st.integers(0, 5))
        if choice == 0:
            char = char.swapcase()
        elif choice == 1 and char in LOOK_ALIKES:
            char = LOOK_ALIKES[char]
        elif choice == 2 and char.isascii() and char.isalpha():
            char = chr(ord(char) + 0xFEE0)  # fullwidth form
        out.append(char)
        if draw(st.integers(0, 6)) == 0:
            out.append(draw(st.sampled_from(INVISIBLE)))
    return "".join(out)


@st.composite
def sentences(draw: st.DrawFn, identity: ProtectedIdentity, *, line_breaks: bool) -> str:
    shown = draw(spellings(identity.value, line_breaks=line_breaks))
    if identity.kind is IdentityKind.USERNAME and draw(st.booleans()):
        shown = "@" + shown
    before = draw(st.sampled_from([" ", "\n", " (", ": ", ", "])) if line_breaks else " "
    after = draw(st.sampled_from([" ", ". ", ") ", ", ", "\n"])) if line_breaks else " "
    return draw(FILLER) + before + shown + after + draw(FILLER)


def charset_for(text: str, wanted: str) -> str:
    try:
        text.encode(wanted)
    except UnicodeEncodeError:
        return "utf-8"
    return wanted


@st.composite
def body_carriers(draw: st.DrawFn, identity: ProtectedIdentity) -> Node:
    text = draw(sentences(identity, line_breaks=True))
    content_type = draw(
        st.sampled_from(["text/plain", "text/html", "text/csv", "application/json", "html-attribute"])
    )
    if content_type == "text/html":
        words = html.escape(text).split(" ")
        text = "<html><body><p>" + "<b></b> ".join(words) + "</p></body></html>"
    elif content_type == "html-attribute":
        attribute = draw(st.sampled_from(["title", "alt", "data-note"]))
        text = f'<p>hello</p><img {attribute}="{html.escape(text, quote=True)}" src="cid:x">'
        content_type = "text/html"
    encoding = draw(st.sampled_from(["7bit", "8bit", "quoted-printable", "base64"]))
    charset = charset_for(text, draw(st.sampled_from(["utf-8", "iso-8859-1", "utf-16"])))
    if charset == "utf-16" and encoding != "base64":
        charset = "utf-8"
    if encoding == "7bit" and not text.isascii():
        encoding = "8bit"
    size = len(text.encode(charset))
    breaks = tuple(draw(st.lists(st.integers(0, max(size - 1, 0)), max_size=4)))
    attachment = draw(st.booleans())
    return Part(
        content_type=content_type,
        body=text,
        encoding=encoding,
        charset=charset,
        break_at=breaks if encoding == "quoted-printable" else (),
        disposition="attachment" if attachment else "inline",
        filename="notes.txt" if attachment and draw(st.booleans()) else None,
    )


@st.composite
def filename_carriers(draw: st.DrawFn, identity: ProtectedIdentity) -> Node:
    name = draw(spellings(identity.value, line_breaks=False)).replace("\t", " ") + ".txt"
    style = draw(st.sampled_from(["plain", "2231", "2231-split", "2047"]))
    if style == "plain" and not name.isascii():
        style = "2231"
    return Part(
        content_type="application/octet-stream",
        body=b"\x00\x01binary",
        encoding="base64",
        filename=name,
        filename_style=style,
        charset=None,
    )


@st.composite
def header_values(draw: st.DrawFn, identity: ProtectedIdentity) -> tuple[str, str]:
    text = draw(sentences(identity, line_breaks=False)).replace("\t", " ").strip() or "x"
    name = draw(st.sampled_from(["Subject", "X-Note", "To", "Reply-To", "Comments"]))
    style = draw(st.sampled_from(["raw", "folded", "b", "q", "split"]))
    if style in ("raw", "folded") and any(ord(char) < 32 or char in "\u0085" for char in text):
        style = "b"
    if style == "raw":
        value = text
    elif style == "folded":
        value = text.replace(" ", "\r\n ", 1) if " " in text.strip() else text
    elif style == "split":
        value = encoded_words(text, charset_for(text, "iso-8859-1"), draw(st.sampled_from(["B", "Q"])))
    else:
        value = encoded_word(text, charset_for(text, "iso-8859-1"), style.upper())
    if name in ("To", "Reply-To"):
        value = f"{value} <x@example.net>" if style in ("b", "q", "split") else f'"{value}" <x@example.net>'
    return name, value


def headers_with(extra: tuple[str, str] | None) -> tuple[tuple[str, str], ...]:
    if extra is None:
        return DEFAULT_HEADERS
    return (*(header for header in DEFAULT_HEADERS if header[0] != extra[0]), extra)


@st.composite
def messages(draw: st.DrawFn) -> tuple[bytes, ProtectedIdentity]:
    identity = draw(st.sampled_from(IDENTITIES))
    carrier = draw(st.sampled_from(["body", "filename", "header", "preamble", "epilogue"]))
    header: tuple[str, str] | None = None
    node: Node
    if carrier == "body":
        node = draw(body_carriers(identity))
    elif carrier == "filename":
        node = draw(filename_carriers(identity))
    elif carrier == "header":
        header = draw(header_values(identity))
        node = Part(body=draw(FILLER))
    else:
        text = draw(sentences(identity, line_breaks=True))
        # A line starting with "--" could be read as a boundary; keep the text a plain paragraph.
        node = Multipart(parts=(Part(body="x"),), **{carrier: text.replace("\r", " ").replace("\n-", "\n ")})
    for _ in range(draw(st.integers(0, 3))):
        if header is None and draw(st.booleans()):
            node = Attached(Message(body=node))
            continue
        siblings = draw(st.lists(st.sampled_from(["text", "html", "image"]), max_size=2))
        others: list[Node] = [
            Part(body="filler")
            if kind == "text"
            else Part(content_type="text/html", body="<p>filler</p>")
            if kind == "html"
            else Part(content_type="image/png", body=b"\x89PNG\x00", encoding="base64", charset=None)
            for kind in siblings
        ]
        others.insert(draw(st.integers(0, len(others))), node)
        subtype = draw(st.sampled_from(["mixed", "alternative", "related"]))
        node = Multipart(subtype=subtype, parts=tuple(others))
        if header is not None and draw(st.booleans()):
            node = Attached(Message(headers=headers_with(header), body=node))
            header = None
    return render(Message(headers=headers_with(header), body=node)), identity


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages())
def test_protected_identity_is_never_delivered_to_an_outsider(
    example: tuple[bytes, ProtectedIdentity],
) -> None:
    raw, identity = example
    parsed = parse_message(raw)
    assert parsed.ambiguities == ()
    findings = reporter_protection.check(parsed, OUTSIDE, CONTEXT, reporter_protection.Params())
    people = {
        (finding.case, finding.private_detail) for finding in findings if finding.code == "PROTECTED_IDENTITY"
    }
    assert any(case == identity.case and f'"{identity.value}"' in detail for case, detail in people), raw
    assert all(finding.recipients == ("mod@forum.example.net",) for finding in findings)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages())
def test_nothing_is_reported_inside_the_committee(example: tuple[bytes, ProtectedIdentity]) -> None:
    raw, _identity = example
    assert reporter_protection.check(parse_message(raw), INSIDE, CONTEXT, reporter_protection.Params()) == []


# --- derived name forms in any carrier -------------------------------------------------------------

NAMED = ProtectedIdentity("home-shelf", "w2", IdentityKind.NAME, "Noor Okonkwo-Haddad")
NAMED_CONTEXT = replace(CONTEXT, finder=IdentityMatcher.build((*IDENTITIES, NAMED)))
STRONG_FORMS = tuple(example.text for example in examples(NAMED) if example.strength is Strength.STRONG)


@st.composite
def derived_form_messages(draw: st.DrawFn) -> bytes:
    # A strong form the gateway derives (surname first, title or initial + surname...) stands in
    # for the registered name, in a random spelling, carrier and encoding.
    shown = replace(NAMED, value=draw(st.sampled_from(STRONG_FORMS)))
    carrier = draw(st.sampled_from(["body", "filename", "header"]))
    if carrier == "header":
        return render(Message(headers=headers_with(draw(header_values(shown))), body=Part(body="x")))
    node = draw(body_carriers(shown)) if carrier == "body" else draw(filename_carriers(shown))
    return render(Message(body=Multipart(parts=(Part(body="see attached"), node))))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(derived_form_messages())
def test_a_derived_name_form_is_never_delivered_to_an_outsider(raw: bytes) -> None:
    findings = reporter_protection.check(
        parse_message(raw), OUTSIDE, NAMED_CONTEXT, reporter_protection.Params()
    )
    assert any(
        finding.code == "PROTECTED_IDENTITY" and f'"{NAMED.value}"' in finding.private_detail
        for finding in findings
    ), raw
