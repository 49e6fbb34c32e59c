"""Content-Transfer-Encoding: base64 (decoded leniently, checked strictly), quoted-printable, uuencode."""

from __future__ import annotations

import binascii
import re

IDENTITY_ENCODINGS = frozenset({"", "7bit", "8bit", "binary"})
UU_ENCODINGS = frozenset({"x-uuencode", "uuencode", "x-uue", "uue"})
DECODED_ENCODINGS = frozenset({"base64", "quoted-printable"}) | UU_ENCODINGS
_BASE64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
# Deletion sets for bytes.translate, which strips characters in one C pass (a regex substitution
# visits every line break of a large attachment from Python's regex engine).
_NOT_BASE64 = bytes(byte for byte in range(256) if byte not in _BASE64_ALPHABET)
_ASCII_WHITESPACE = b" \t\r\n\f\v"


def lenient_base64(data: bytes) -> bytes:
    cleaned = data.translate(None, _NOT_BASE64)
    cleaned = cleaned[: len(cleaned) - len(cleaned) % 4] if len(cleaned) % 4 == 1 else cleaned
    try:
        return binascii.a2b_base64(cleaned + b"=" * (-len(cleaned) % 4))
    except binascii.Error:
        return b""


def uudecode(data: bytes) -> bytes:
    """Decode uuencoded lines (with or without the begin/end lines), tolerating sloppy encoders."""
    out = bytearray()
    for line in data.splitlines():
        stripped = line.rstrip(b"\r\n")
        if not stripped or stripped.startswith((b"begin ", b"end")):
            continue
        try:
            out += binascii.a2b_uu(stripped)
        except binascii.Error:
            # Some encoders emit extra padding characters; decode only what the length byte says.
            length = ((stripped[0] - 32) & 63) * 4 + 5
            try:
                out += binascii.a2b_uu(stripped[: length // 3])
            except binascii.Error:
                continue
    return bytes(out)


# RFC 2045 6.7: whitespace after a soft line break's "=" was added in transit and is deleted;
# clients do, so "Cast= \r\nellano" reads "Castellano" (binascii keeps the line break).
_SOFT_BREAK_PADDING = re.compile(rb"=[ \t]+(?=\r?\n|\Z)")


def quoted_printable(data: bytes) -> bytes:
    """Decode quoted-printable as mail clients do, soft line breaks with trailing blanks included."""
    if b"= " in data or b"=\t" in data:
        data = _SOFT_BREAK_PADDING.sub(b"=", data)
    return binascii.a2b_qp(data)


def valid_base64(data: bytes) -> bool:
    cleaned = data.translate(None, _ASCII_WHITESPACE)
    # Only the alphabet, then at most two "=" of padding.
    unpadded = cleaned.rstrip(b"=")
    return (
        len(cleaned) % 4 == 0
        and len(cleaned) - len(unpadded) <= 2
        and not unpadded.translate(None, _BASE64_ALPHABET)
    )


def decode_transfer(data: bytes, encoding: str) -> list[bytes]:
    """Every reading of a body under its Content-Transfer-Encoding (several for unknown encodings)."""
    if encoding in IDENTITY_ENCODINGS:
        return [data]
    if encoding == "base64":
        return [lenient_base64(data)]
    if encoding == "quoted-printable":
        return [quoted_printable(data)]
    if encoding in UU_ENCODINGS:
        return [uudecode(data)]
    # An unknown encoding ("7-bit", "quoted printable", ...): readers differ, so read it every way.
    squashed = re.sub(r"[^a-z0-9]", "", encoding)
    # The name is no guide ("x-gzip64", "x-b64"): the recipient can decode the text themselves, so
    # it is read as every encoding whose shape it has.
    readings = [data, quoted_printable(data)]
    if "base64" in squashed or "b64" in squashed or valid_base64(data):
        readings.append(lenient_base64(data))
    if "uu" in squashed or data.lstrip().startswith(b"begin "):
        readings.append(uudecode(data))
    return list(dict.fromkeys(readings))
