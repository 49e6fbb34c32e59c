"""The real format of a file, from its first bytes (never from its declared type or name)."""

from __future__ import annotations

import codecs
import re
from enum import StrEnum


class Format(StrEnum):
    PDF = "pdf"
    ZIP = "zip"
    TAR = "tar"
    GZIP = "gzip"
    BZIP2 = "bzip2"
    XZ = "xz"
    OTHER_ARCHIVE = "other-archive"  # 7-Zip, RAR, Zstandard, CAB, disk images: not opened
    RTF = "rtf"
    TNEF = "tnef"
    CALENDAR = "calendar"  # iCalendar
    VCARD = "vcard"
    OLE = "ole"  # Compound File Binary: Outlook .msg, Office 97-2003 .doc/.xls/.ppt
    IMAGE = "image"
    AUDIO = "audio"
    VIDEO = "video"
    UNKNOWN = "unknown"  # anything else: the declared type and the bytes decide (text, HTML, XML...)


MEDIA = frozenset({Format.IMAGE, Format.AUDIO, Format.VIDEO})

_PREFIXES: tuple[tuple[bytes, Format], ...] = (
    (b"PK\x03\x04", Format.ZIP),
    (b"PK\x05\x06", Format.ZIP),  # an empty archive
    (b"PK\x07\x08", Format.ZIP),  # a spanned archive
    (b"\x1f\x8b", Format.GZIP),
    (b"BZh", Format.BZIP2),
    (b"\xfd7zXZ\x00", Format.XZ),
    (b"7z\xbc\xaf\x27\x1c", Format.OTHER_ARCHIVE),
    (b"Rar!\x1a\x07", Format.OTHER_ARCHIVE),
    (b"\x28\xb5\x2f\xfd", Format.OTHER_ARCHIVE),  # Zstandard
    (b"MSCF\x00\x00\x00\x00", Format.OTHER_ARCHIVE),  # CAB
    (b"\x78\x9f\x3e\x22", Format.TNEF),  # 0x223E9F78, little-endian
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", Format.OLE),
    (b"\x89PNG", Format.IMAGE),
    (b"\xff\xd8\xff", Format.IMAGE),
    (b"GIF87a", Format.IMAGE),
    (b"GIF89a", Format.IMAGE),
    (b"II*\x00", Format.IMAGE),
    (b"MM\x00*", Format.IMAGE),
    (b"\x00\x00\x01\x00", Format.IMAGE),  # ICO
    (b"8BPS", Format.IMAGE),  # Photoshop
    (b"\xd7\xcd\xc6\x9a", Format.IMAGE),  # WMF
    (b"\x00\x00\x00\x0cjP  ", Format.IMAGE),  # JPEG 2000
    (b"\xff\x0a", Format.IMAGE),  # JPEG XL
    (b"OggS", Format.AUDIO),
    (b"fLaC", Format.AUDIO),
    (b"\x1a\x45\xdf\xa3", Format.VIDEO),  # Matroska, WebM
)
_RIFF = {b"WEBP": Format.IMAGE, b"WAVE": Format.AUDIO, b"AVI ": Format.VIDEO}
_FTYP_IMAGES = frozenset({b"heic", b"heix", b"hevc", b"mif1", b"msf1", b"avif", b"avis"})
_FTYP_AUDIO = frozenset({b"M4A ", b"M4B ", b"M4P "})
# What may come before a text format's first line: byte order marks and blank space.
_TEXT_START = re.compile(rb"^(?:\xef\xbb\xbf)?[ \t\r\n]*")
_CALENDAR = re.compile(rb"begin:vcalendar\b", re.IGNORECASE)
_VCARD = re.compile(rb"begin:vcard\b", re.IGNORECASE)


def sniff(data: bytes) -> Format:
    """The format ``data`` is in, by its signature (magic number)."""
    head = data[:64]
    for prefix, found in _PREFIXES:
        if head.startswith(prefix):
            return found
    if head[:4] == b"RIFF" and head[8:12] in _RIFF:
        return _RIFF[head[8:12]]
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in _FTYP_IMAGES:
            return Format.IMAGE
        return Format.AUDIO if brand in _FTYP_AUDIO else Format.VIDEO
    if head[:2] == b"BM" and head[6:10] == b"\x00\x00\x00\x00" and len(data) > 26:
        return Format.IMAGE  # BMP: two reserved words must be zero (text starting "BM" is not a bitmap)
    if head[:3] == b"ID3" and head[3:4] in (b"\x02", b"\x03", b"\x04") and head[4:5] == b"\x00":
        return Format.AUDIO
    if data[40:44] == b" EMF":
        return Format.IMAGE
    if b"%PDF-" in data[:1024]:  # readers accept the header anywhere in the first kilobyte
        return Format.PDF
    if data[257:262] == b"ustar":
        return Format.TAR
    return _text_format(data)


def _text_format(data: bytes) -> Format:
    head = data[:256]
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        try:
            head = data[:512].decode("utf-16").encode("utf-8", "replace")
        except UnicodeDecodeError:
            return Format.UNKNOWN
    start = _TEXT_START.match(head)
    rest = head[start.end() if start else 0 :]
    if rest.startswith(b"{\\rtf"):
        return Format.RTF
    if _CALENDAR.match(rest):
        return Format.CALENDAR
    if _VCARD.match(rest):
        return Format.VCARD
    return Format.UNKNOWN
