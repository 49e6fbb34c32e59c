"""Read a file of a sniffed document or archive format: the one entry point of this package."""

from __future__ import annotations

from gateway.policy.extract.archive import read_compressed, read_tar, read_zip
from gateway.policy.extract.calendar import read_calendar
from gateway.policy.extract.ole import read_ole
from gateway.policy.extract.parts import Budget, Extraction
from gateway.policy.extract.pdf import read_pdf
from gateway.policy.extract.rtf import read_rtf
from gateway.policy.extract.sniff import Format
from gateway.policy.extract.tnef import read_tnef

LAST_RESORT = "an attachment the gateway failed to read"  # a reader bug: each fails closed itself

# Formats read here; the others (text, HTML, XML, media, unknown) are the MIME decoder's to read.
DOCUMENTS = frozenset(
    {
        Format.PDF, Format.ZIP, Format.TAR, Format.GZIP, Format.BZIP2, Format.XZ,
        Format.OTHER_ARCHIVE, Format.RTF, Format.TNEF, Format.CALENDAR, Format.VCARD, Format.OLE,
    }
)  # fmt: skip
# Text formats whose raw text is read too (an RTF is not: its source is not what a reader sees).
TEXTUAL = frozenset({Format.CALENDAR, Format.VCARD})


def read(data: bytes, kind: Format, name: str, budget: Budget) -> Extraction:
    """The texts, inner files and unreadable parts of ``data`` (of a format in DOCUMENTS). Never raises."""
    try:
        return _read(data, kind, name, budget)
    except Exception:  # each reader fails closed itself; this is the last net
        found = Extraction()
        found.cannot_read(LAST_RESORT, "binary")
        return found


def _read(data: bytes, kind: Format, name: str, budget: Budget) -> Extraction:
    if kind is Format.PDF:
        return read_pdf(data)
    if kind is Format.ZIP:
        return read_zip(data, budget)
    if kind is Format.TAR:
        return read_tar(data, budget)
    if kind in (Format.GZIP, Format.BZIP2, Format.XZ):
        return read_compressed(data, kind, name, budget)
    if kind is Format.RTF:
        return read_rtf(data)
    if kind is Format.TNEF:
        return read_tnef(data)
    if kind in (Format.CALENDAR, Format.VCARD):
        return read_calendar(data)
    if kind is Format.OLE:
        return read_ole(data, budget)
    found = Extraction()
    found.cannot_read("an archive format the gateway does not open (7-Zip, RAR, Zstandard, CAB)", "archive")
    return found
