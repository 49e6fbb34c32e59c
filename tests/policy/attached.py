"""Send a file as an attachment through the MIME decoder and see what the gateway read in it."""

from __future__ import annotations

import binascii

from gateway.policy.matcher import IdentityMatcher
from gateway.policy.mime import parse_message
from gateway.policy.model import IdentityKind, ParsedMessage, ProtectedIdentity
from tests.policy.builders import Message, Multipart, Part, base64_lines, render

JIN = ProtectedIdentity("home-shelf", "r1", IdentityKind.NAME, "Jin Park")
MEI = ProtectedIdentity("home-shelf", "w1", IdentityKind.NAME, "Mei Li")
ANNA = ProtectedIdentity("home-shelf", "w2", IdentityKind.NAME, "Анна Петрова")
MATCHER = IdentityMatcher.build((JIN, MEI, ANNA))


def attach(
    data: bytes,
    content_type: str = "application/octet-stream",
    filename: str | None = "file.bin",
    encoding: str = "base64",
) -> bytes:
    """A message with a short text body and ``data`` attached as given (base64 or quoted-printable)."""
    if encoding == "base64":
        encoded = base64_lines(data)
    else:  # binary quoted-printable: line feeds inside the file are encoded too
        encoded = binascii.b2a_qp(data, quotetabs=True, istext=False).replace(b"\n", b"\r\n")
    part = Part(
        content_type=content_type, encoding=encoding, charset=None, filename=filename, encoded=encoded
    )
    return render(Message(body=Multipart(parts=(Part(body="See attached."), part))))


def read(
    data: bytes, content_type: str = "application/octet-stream", filename: str | None = "file.bin"
) -> ParsedMessage:
    parsed = parse_message(attach(data, content_type, filename))
    assert parsed.ambiguities == ()
    return parsed


def names(parsed: ParsedMessage) -> set[str]:
    """The protected names found anywhere in the decoded message."""
    return {identity.value for segment in parsed.segments for identity in MATCHER.find(segment.text)}


def places(parsed: ParsedMessage, name: str) -> set[str]:
    """Where ``name`` was found."""
    return {
        segment.where
        for segment in parsed.segments
        for identity in MATCHER.find(segment.text)
        if identity.value == name
    }


def unreadable(parsed: ParsedMessage) -> list[tuple[str, str]]:
    """(kind, reason) of every part the gateway could not read, pictures included."""
    return [(part.kind, part.reason) for part in (*parsed.uninspectable, *parsed.media)]
