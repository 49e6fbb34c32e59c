"""Archives opened in memory (ZIP, tar, gzip, bzip2, xz), bounded by the message's unpacking budget.

Members become files to read in turn; nothing is ever read past the budget, whatever sizes an
archive's directory claims. Office packages (OOXML, ODF) are ZIP archives too: they go to
:mod:`~gateway.policy.extract.office`.
"""

from __future__ import annotations

import bz2
import io
import lzma
import tarfile
import zipfile
import zlib
from typing import Protocol

from gateway.policy.extract import office
from gateway.policy.extract.parts import TOO_LARGE, TOO_MANY, Budget, Embedded, Extraction
from gateway.policy.extract.sniff import Format

_CANNOT_OPEN = "an archive the gateway cannot open"


def read_zip(data: bytes, budget: Budget) -> Extraction:
    found = Extraction()
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        members = archive.infolist()
    except Exception:  # any damaged or unsupported archive is simply unreadable
        found.cannot_read(_CANNOT_OPEN, "archive")
        return found
    if not budget.count_files(len(members)):
        found.cannot_read(TOO_MANY, "archive")
        return found

    def read(member: zipfile.ZipInfo, where: str) -> bytes | None:
        return _read_zip_member(archive, member, budget, found, where)

    names = {member.filename.lower() for member in members}
    if office.is_package(names):
        office.read_package(members, read, found)
        return found
    for number, member in enumerate(members, start=1):
        where = f"file {number} of the archive"
        if member.is_dir():
            found.files.append(Embedded(member.filename, b"", where))  # its name is still scanned
            continue
        content = read(member, where)
        if content is not None:
            found.files.append(Embedded(member.filename, content, where))
    return found


def _read_zip_member(
    archive: zipfile.ZipFile, member: zipfile.ZipInfo, budget: Budget, found: Extraction, where: str
) -> bytes | None:
    if member.flag_bits & 0x1:
        found.cannot_read("a password-protected file in an archive", "encrypted", where)
        return None
    allowed = budget.allowed()
    if member.file_size > allowed:
        found.cannot_read(TOO_LARGE, "archive", where)
        return None
    try:
        with archive.open(member) as handle:
            content = handle.read(allowed + 1)
    except Exception:  # unsupported compression, corrupt data, wrong CRC...
        found.cannot_read("a file in an archive the gateway cannot read", "archive", where)
        return None
    budget.spend(len(content))
    if len(content) > allowed:
        found.cannot_read(TOO_LARGE, "archive", where)
        return None
    return content


def read_tar(data: bytes, budget: Budget) -> Extraction:
    found = Extraction()
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as archive:
            _read_tar(archive, budget, found)
    except Exception:
        found.cannot_read(_CANNOT_OPEN, "archive")
    return found


def _read_tar(archive: tarfile.TarFile, budget: Budget, found: Extraction) -> None:
    members = archive.getmembers()
    if not budget.count_files(len(members)):
        found.cannot_read(TOO_MANY, "archive")
        return
    for number, member in enumerate(members, start=1):
        where = f"file {number} of the archive"
        if not member.isfile():
            found.files.append(Embedded(member.name, b"", where))  # directories, links: names only
            continue
        allowed = budget.allowed()
        if member.size > allowed:
            found.cannot_read(TOO_LARGE, "archive", where)
            continue
        handle = archive.extractfile(member)
        content = handle.read(allowed + 1) if handle is not None else b""
        budget.spend(len(content))
        found.files.append(Embedded(member.name, content, where))


class _Decompressor(Protocol):
    @property
    def eof(self) -> bool: ...
    @property
    def unused_data(self) -> bytes: ...

    def decompress(self, data: bytes, max_length: int = ..., /) -> bytes: ...


def _decompressor(kind: Format) -> _Decompressor:
    if kind is Format.GZIP:
        return zlib.decompressobj(wbits=31)
    if kind is Format.BZIP2:
        return bz2.BZ2Decompressor()
    return lzma.LZMADecompressor()


def _decompress(data: bytes, kind: Format, limit: int) -> bytes:
    """Every stream of ``data`` decompressed, never more than ``limit`` + 1 bytes (bombs stop here)."""
    out = bytearray()
    while data and len(out) <= limit:
        decompressor = _decompressor(kind)
        out += decompressor.decompress(data, limit + 1 - len(out))
        if not decompressor.eof:
            if len(out) <= limit:
                raise ValueError("the compressed data ends early")  # what is missing cannot be read
            break  # the limit was reached
        data = decompressor.unused_data
    return bytes(out)


def read_compressed(data: bytes, kind: Format, name: str, budget: Budget) -> Extraction:
    """A single compressed file (``notes.txt.gz``, ``backup.tar.xz``): its content is read in turn."""
    found = Extraction()
    if not budget.count_files(1):
        found.cannot_read(TOO_MANY, "archive")
        return found
    allowed = budget.allowed()
    try:
        content = _decompress(data, kind, allowed)
    except Exception:
        found.cannot_read("a compressed file the gateway cannot decompress", "archive")
        return found
    budget.spend(len(content))
    if len(content) > allowed:
        found.cannot_read(TOO_LARGE, "archive")
        return found
    inner = name.rpartition(".")[0] if "." in name else name
    found.files.append(Embedded(inner, content, "the compressed file"))
    return found
