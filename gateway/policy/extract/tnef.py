"""TNEF (``winmail.dat``, ``application/ms-tnef``): Outlook's message wrapper, read attribute by attribute.

Read: the subject, the plain, HTML and compressed RTF bodies, every string property (sender,
recipients, named properties), attachment names, and attachments (files to read in turn,
embedded messages included). A file that does not parse to its end cannot be read.
"""

from __future__ import annotations

import codecs
import struct

from gateway.policy.extract import mapi
from gateway.policy.extract.parts import Embedded, Extraction

_SIGNATURE = b"\x78\x9f\x3e\x22"
_LEVEL_ATTACHMENT = 2
# Attribute ids (low 16 bits of the TNEF attribute tag)
_SUBJECT, _BODY, _ATTACH_DATA, _ATTACH_TITLE = 0x8004, 0x800C, 0x800F, 0x8010
_MAPI_PROPS, _RECIPIENTS, _ATTACHMENT_PROPS, _ATTACH_RENDDATA, _CODEPAGE = (
    0x9003, 0x9004, 0x9005, 0x9002, 0x9007,
)  # fmt: skip
_STRING_TYPES = frozenset({0x0001, 0x0002})  # triples and strings: text in the codepage


def read_tnef(data: bytes) -> Extraction:
    found = Extraction()
    try:
        _read(data, found)
    except Exception:  # truncated or malformed: fail closed
        found.cannot_read("an Outlook TNEF file (winmail.dat) the gateway cannot read", "binary")
    return found


def _read(data: bytes, found: Extraction) -> None:
    if not data.startswith(_SIGNATURE) or len(data) < 6:
        raise ValueError("not TNEF")
    offset = 6
    codepage = "cp1252"
    attachment = 0
    name = ""  # the current attachment's short name (attAttachTitle)
    while offset < len(data):
        if offset + 9 > len(data):
            raise ValueError("TNEF attribute header ends early")
        level, attribute, kind, size = struct.unpack_from("<BHHI", data, offset)
        value = data[offset + 9 : offset + 9 + size]
        if len(value) != size or offset + 11 + size > len(data):
            raise ValueError("TNEF attribute ends early")
        offset += 11 + size  # header, value, checksum
        if attribute == _CODEPAGE and size >= 4:
            codepage = _codec(mapi.unpack_uint32(value))
        elif attribute == _ATTACH_RENDDATA:
            attachment += 1
            name = ""
        elif attribute == _MAPI_PROPS:
            mapi.collect(mapi.properties(value, codepage), found, "the message properties")
        elif attribute == _RECIPIENTS:
            mapi.collect(mapi.recipient_rows(value, codepage), found, "the recipients")
        elif attribute == _ATTACHMENT_PROPS:
            mapi.collect(
                mapi.properties(value, codepage), found, f"the properties of attachment {attachment}"
            )
        elif level == _LEVEL_ATTACHMENT and attribute == _ATTACH_DATA:
            found.files.append(Embedded(name, value, f"attachment {attachment}"))
        elif level == _LEVEL_ATTACHMENT and attribute == _ATTACH_TITLE:
            name = value.decode(codepage, "replace").rstrip("\x00")
            found.text(name, f"the name of attachment {attachment}")
        elif kind in _STRING_TYPES or attribute in (_SUBJECT, _BODY):
            found.text(value.decode(codepage, "replace").rstrip("\x00"), "the message")


def _codec(codepage: int) -> str:
    name = {65001: "utf-8", 20127: "ascii", 28591: "latin-1"}.get(codepage, f"cp{codepage}")
    try:
        return codecs.lookup(name).name
    except LookupError:
        return "cp1252"
