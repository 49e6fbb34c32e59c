"""Compound files (OLE2): Outlook ``.msg`` messages are read; Office 97-2003 documents cannot be.

An Outlook message keeps each MAPI property in a stream named ``__substg1.0_IIIITTTT`` (property
id, type): every string property is read (subject, body, sender, recipients, attachment names),
the HTML and compressed RTF bodies and attachment data are files to read in turn (an attached
message's properties are streams of the same file and are read with it). The binary formats of
Word, Excel and PowerPoint 97-2003 are not read: such a file cannot be inspected.
"""

from __future__ import annotations

import io

import olefile

from gateway.policy.extract import mapi
from gateway.policy.extract.parts import Budget, Extraction

_PROPERTY_STREAM = "__substg1.0_"
_MAX_STREAMS = 10_000


def read_ole(data: bytes, budget: Budget) -> Extraction:
    found = Extraction()
    try:
        _read(data, budget, found)
    except Exception:  # a damaged file or a library failure: fail closed
        found.cannot_read("an Outlook or Office file the gateway cannot read", "binary")
    return found


def _read(data: bytes, budget: Budget, found: Extraction) -> None:
    with olefile.OleFileIO(io.BytesIO(data)) as ole:
        streams = ole.listdir(streams=True, storages=False)
        if len(streams) > _MAX_STREAMS:
            found.cannot_read("an Outlook or Office file with too many parts to inspect", "binary")
            return
        if not any(path[-1].startswith(_PROPERTY_STREAM) for path in streams):
            found.cannot_read(
                "an Office 97-2003 document (.doc, .xls, .ppt), a format the gateway cannot read",
                "binary",
            )
            return
        by_storage: dict[tuple[str, ...], list[mapi.Property]] = {}
        for path in streams:
            leaf = path[-1]
            if not leaf.startswith(_PROPERTY_STREAM) or len(leaf) < len(_PROPERTY_STREAM) + 8:
                continue
            tag = leaf[len(_PROPERTY_STREAM) : len(_PROPERTY_STREAM) + 8]
            try:
                prop_id, prop_type = int(tag[:4], 16), int(tag[4:], 16)
            except ValueError:
                continue
            size = ole.get_size(path)
            if size > budget.allowed():
                found.cannot_read("a part of an Outlook message too large to inspect", "archive")
                continue
            raw = ole.openstream(path).read()
            budget.spend(len(raw))
            value: bytes | str = raw
            if prop_type == mapi.UNICODE:
                value = raw.decode("utf-16-le", "replace").rstrip("\x00")
            elif prop_type == mapi.STRING8:
                value = raw.decode("cp1252", "replace").rstrip("\x00")
            by_storage.setdefault(tuple(path[:-1]), []).append(mapi.Property(prop_id, prop_type, value))
        for number, props in enumerate(by_storage.values(), start=1):
            mapi.collect(props, found, f"section {number} of the Outlook message")
