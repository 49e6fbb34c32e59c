"""MAPI properties (the fields of an Outlook message) as TNEF and Outlook .msg files store them.

The walker is written here, bounded by the bytes it is given: a count read from the file never
makes it loop past the end of the data (tnefparse's parser loops on such counts unchecked).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

import compressed_rtf

from gateway.policy.extract.parts import Embedded, Extraction

# Property types (MS-OXCDATA 2.11.1)
STRING8, UNICODE, BINARY, OBJECT = 0x001E, 0x001F, 0x0102, 0x000D
_FIXED_SIZES = {
    0x0002: 2, 0x000B: 2, 0x0003: 4, 0x0004: 4, 0x000A: 4, 0x0005: 8, 0x0006: 8, 0x0007: 8,
    0x0014: 8, 0x0040: 8, 0x0048: 16, 0x0001: 0, 0x0000: 0,
}  # fmt: skip
_VARIABLE = frozenset({STRING8, UNICODE, BINARY, OBJECT})
_MULTIPLE = 0x1000
_NAMED = 0x8000

# Property ids (MS-OXPROPS)
RTF_COMPRESSED = 0x1009
BODY_HTML = 0x1013
ATTACH_DATA = 0x3701
ATTACH_FILENAME = 0x3704
ATTACH_LONG_FILENAME = 0x3707
ATTACH_DISPLAY_NAME = 0x3001
# An embedded message's data starts with this GUID, then the message as TNEF.
EMBEDDED_MESSAGE_GUID = bytes.fromhex("0703020000000000c000000000000046")


@dataclass(frozen=True)
class Property:
    id: int
    type: int
    value: bytes | str


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.offset = 0

    def take(self, size: int) -> bytes:
        if size < 0 or self.offset + size > len(self.data):
            raise ValueError("MAPI data ends early")
        chunk = self.data[self.offset : self.offset + size]
        self.offset += size
        return chunk

    def uint(self, size: int = 4) -> int:
        return int.from_bytes(self.take(size), "little")

    def count(self, smallest: int) -> int:
        """A count of items each at least ``smallest`` bytes long: never more than the data holds."""
        number = self.uint()
        if number * max(smallest, 1) > len(self.data) - self.offset:
            raise ValueError("a MAPI count exceeds the data")
        return number


def properties(data: bytes, codepage: str = "cp1252") -> list[Property]:
    """A property list: a count, then each property (raises ValueError on malformed data)."""
    reader = _Reader(data)
    return list(_properties(reader, codepage))


def recipient_rows(data: bytes, codepage: str = "cp1252") -> list[Property]:
    """TNEF's recipient table: a row count, then a property list per row (flattened)."""
    reader = _Reader(data)
    found: list[Property] = []
    for _ in range(reader.count(4)):
        found.extend(_properties(reader, codepage))
    return found


def _properties(reader: _Reader, codepage: str) -> Iterator[Property]:
    for _ in range(reader.count(4)):
        kind = reader.uint(2)
        prop_id = reader.uint(2)
        if prop_id >= _NAMED:
            reader.take(16)  # property set GUID
            if reader.uint() == 0:
                reader.take(4)
            else:
                reader.take(_padded(reader.uint()))
        values = reader.count(4) if kind & _MULTIPLE else 1
        base = kind & ~_MULTIPLE
        for _ in range(values):
            if base in _VARIABLE:
                # A single variable-size value is itself preceded by a count (always 1).
                items = 1 if kind & _MULTIPLE else reader.count(4)
                for _ in range(items):
                    size = reader.uint()
                    raw = reader.take(_padded(size))[:size]
                    yield Property(prop_id, base, _string(raw, base, codepage))
            elif base in _FIXED_SIZES:
                reader.take(_FIXED_SIZES[base])
                if base in (0x0002, 0x000B) and not kind & _MULTIPLE:
                    reader.take(2)  # 16-bit values are padded to 4 bytes
            else:
                raise ValueError("unknown MAPI property type")


def _padded(size: int) -> int:
    return size + (-size % 4)


def _string(raw: bytes, kind: int, codepage: str) -> bytes | str:
    if kind == UNICODE:
        return raw.decode("utf-16-le", "replace").rstrip("\x00")
    if kind == STRING8:
        return raw.decode(codepage, "replace").rstrip("\x00")
    return raw


def collect(props: list[Property], found: Extraction, where: str) -> None:
    """Strings as text; the HTML and compressed RTF bodies and attachment data as files to read."""
    found.text("\n".join(p.value for p in props if isinstance(p.value, str)), where)
    for prop in props:
        if not isinstance(prop.value, bytes):
            continue
        if prop.id == RTF_COMPRESSED:
            try:
                body = compressed_rtf.decompress(prop.value)
            except Exception:
                found.cannot_read("a compressed RTF body the gateway cannot decompress", "binary", where)
                continue
            found.files.append(Embedded("body.rtf", body, f"the formatted body of {where}"))
        elif prop.id == BODY_HTML:
            found.files.append(Embedded("body.html", prop.value, f"the HTML body of {where}"))
        elif prop.id == ATTACH_DATA:
            data = prop.value
            if prop.type == OBJECT and data.startswith(EMBEDDED_MESSAGE_GUID):
                data = data[len(EMBEDDED_MESSAGE_GUID) :]
            found.files.append(Embedded(attachment_name(props), data, f"an attachment in {where}"))


def attachment_name(props: list[Property]) -> str:
    for wanted in (ATTACH_LONG_FILENAME, ATTACH_FILENAME, ATTACH_DISPLAY_NAME):
        for prop in props:
            if prop.id == wanted and isinstance(prop.value, str):
                return prop.value
    return ""


def unpack_uint32(data: bytes) -> int:
    return int(struct.unpack_from("<I", data)[0]) if len(data) >= 4 else 0
