"""Text from mail bytes: the declared charset with fallbacks, every plausible reading, encoded-words."""

from __future__ import annotations

import binascii
import codecs
import re

_ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([BbQq])\?([^?\s]*)\?=")
# Python's own codecs that are not mail charsets: a client would show such text undecoded.
_NON_MAIL_CODECS = frozenset({"unicode_escape", "raw_unicode_escape", "idna", "punycode", "undefined"})


def to_bytes(text: str) -> bytes:
    """Undo the parser's surrogateescape decoding of raw bytes."""
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace")


def mail_codec(charset: str | None) -> str | None:
    """The Python codec for a mail charset name, or None when unknown or not a mail charset."""
    if not charset:
        return None
    name = charset.strip().strip("\"'").lower()
    try:
        info = codecs.lookup(name)
    except (LookupError, ValueError):
        return None
    return None if info.name in _NON_MAIL_CODECS else info.name


def decode_bytes(data: bytes, charset: str | None) -> str:
    """Decode with the declared charset; unknown or wrong charsets fall back to UTF-8, then Latin-1."""
    codec = mail_codec(charset)
    if codec:
        try:
            return data.decode(codec)
        except (UnicodeDecodeError, LookupError):
            pass
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    if codec:
        try:
            return data.decode(codec, "replace")
        except LookupError:
            pass
    return data.decode("latin-1")


def text_readings(data: bytes, charset: str | None) -> list[str]:
    """Every plausible reading of text bytes: the declared charset's, and UTF-8's if it differs."""
    primary = decode_bytes(data, charset)
    if data.isascii():
        # A label is a claim. ASCII bytes labelled with a charset that reads them otherwise (UTF-16,
        # UTF-32, EBCDIC) are shown as plain ASCII by a client that does not know that charset, and
        # by every browser for a <meta> that says UTF-16 (the HTML standard reads it as UTF-8).
        as_ascii = data.decode("ascii")
        return [primary] if as_ascii == primary else [primary, as_ascii]
    try:
        as_utf8 = data.decode("utf-8")
    except UnicodeDecodeError:
        if _ascii_compatible(charset):
            return [primary]
        # Neither the label nor UTF-8 reads it: the bytes as Latin-1 keep every ASCII word intact.
        as_latin1 = data.decode("latin-1")
        return [primary] if as_latin1 == primary else [primary, as_latin1]
    return [primary] if as_utf8 == primary else [primary, as_utf8]


_ASCII_PROBE = bytes(range(0x20, 0x7F))


def _ascii_compatible(charset: str | None) -> bool:
    """Whether the charset reads printable ASCII bytes as ASCII (UTF-16, UTF-32, EBCDIC do not)."""
    codec = mail_codec(charset)
    if codec is None:
        return True  # decode_bytes reads it as UTF-8 or Latin-1
    try:
        return _ASCII_PROBE.decode(codec) == _ASCII_PROBE.decode("ascii")
    except (UnicodeDecodeError, LookupError):
        return False


def decode_encoded_words(text: str) -> str:
    """Decode RFC 2047 encoded-words wherever they occur (adjacent words joined, as clients do)."""
    if "=?" not in text:
        return text
    out: list[str] = []
    pending = bytearray()
    pending_charset: str | None = None
    position = 0

    def flush() -> None:
        nonlocal pending_charset
        if pending_charset is not None:
            data = bytes(pending)
            out.append(decode_bytes(data, pending_charset))
            if data.isascii() and b"\x00" not in data and not _ascii_compatible(pending_charset):
                # ASCII under a charset that reads it otherwise (=?cp500?Q?Robin_Castellano?=): a
                # client that does not know the charset shows the word as it stands.
                out.append(" " + data.decode("ascii"))
            pending.clear()
            pending_charset = None

    for match in _ENCODED_WORD.finditer(text):
        gap = text[position : match.start()]
        if gap and not (pending_charset is not None and gap.isspace()):
            flush()
            out.append(gap)
        charset = match.group(1).split("*", 1)[0]
        encoding, payload = match.group(2).upper(), match.group(3)
        try:
            if encoding == "B":
                padded = payload + "=" * (-len(payload) % 4)
                data = binascii.a2b_base64(padded.encode("ascii", "replace"))
            else:
                data = binascii.a2b_qp(payload.encode("ascii", "replace"), header=True)
        except (binascii.Error, ValueError):
            flush()
            out.append(match.group(0))
            position = match.end()
            continue
        if pending_charset is not None and pending_charset.lower() != charset.lower():
            flush()
        pending += data
        pending_charset = charset
        position = match.end()
    flush()
    out.append(text[position:])
    return "".join(out)
