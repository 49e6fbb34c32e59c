"""Archives are opened recursively (zip, tar, gzip, bzip2, xz), bounded, and fail closed."""

from __future__ import annotations

import gzip
import zipfile

import pytest

from gateway.policy.extract import parts
from tests.policy import documents
from tests.policy.attached import names, places, read, unreadable


@pytest.mark.parametrize(
    ("data", "where"),
    [
        pytest.param(
            documents.zip_file({"inner.zip": documents.zip_file({"deep.txt": b"Jin Park"})}),
            "file 1 of the archive in file 1 of the archive",
            id="zip-in-zip",
        ),
        pytest.param(
            documents.tar_file({"notes/a.txt": b"Jin Park"}),
            "file 1 of the archive in the compressed file",
            id="tar.gz",
        ),
        pytest.param(
            documents.tar_file({"a.txt": b"Jin Park"}, mode="w:bz2"),
            "file 1 of the archive in the compressed file",
            id="tar.bz2",
        ),
        pytest.param(
            documents.tar_file({"a.txt": b"Jin Park"}, mode="w:xz"),
            "file 1 of the archive in the compressed file",
            id="tar.xz",
        ),
        pytest.param(gzip.compress(b"Jin Park"), "the compressed file", id="gzip"),
        pytest.param(
            gzip.compress(b"x\n") + gzip.compress(b"Jin Park"), "the compressed file", id="gzip-two-members"
        ),
        pytest.param(
            documents.zip_file({"a.pdf": documents.pdf([documents.pdf_text_stream("Jin Park")])}),
            "page 1 in file 1 of the archive",
            id="pdf-in-zip",
        ),
        pytest.param(
            documents.zip_file({"Jin Park.txt": b"x"}), "file name of file 1 of the archive", id="member-name"
        ),
        pytest.param(
            documents.zip_file({"a.txt": b"Jin Park"}, compression=zipfile.ZIP_STORED),
            "file 1 of the archive",
            id="stored",
        ),
    ],
)
def test_names_in_archives_are_found(data: bytes, where: str) -> None:
    parsed = read(data, "application/zip", "files.zip")
    assert f"{where} in part 2 (application/zip)" in places(parsed, "Jin Park")
    assert unreadable(parsed) == []


def _encrypted_zip(members: dict[str, bytes]) -> bytes:
    data = bytearray(documents.zip_file(members))
    for signature, flag_offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        start = 0
        while (found := data.find(signature, start)) != -1:
            data[found + flag_offset] |= 0x01
            start = found + 4
    return bytes(data)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        pytest.param(
            _encrypted_zip({"a.txt": b"Jin Park"}),
            ("encrypted", "a password-protected file"),
            id="zip-password",
        ),
        pytest.param(b"7z\xbc\xaf\x27\x1c\x00\x04" + b"\x00" * 30, ("archive", "does not open"), id="7z"),
        pytest.param(b"Rar!\x1a\x07\x01\x00" + b"\x00" * 30, ("archive", "does not open"), id="rar"),
        pytest.param(gzip.compress(b"Jin Park")[:-12], ("archive", "cannot decompress"), id="truncated-gzip"),
        pytest.param(b"PK\x03\x04 damaged", ("archive", "cannot open"), id="damaged-zip"),
        pytest.param(
            documents.zip_file(
                {
                    "a.zip": documents.zip_file(
                        {"b.zip": documents.zip_file({"c.zip": documents.zip_file({"d.txt": b"Jin Park"})})}
                    )
                }
            ),
            ("archive", "nested too deeply"),
            id="too-deep",
        ),
    ],
)
def test_archives_that_cannot_be_read_are_uninspectable(data: bytes, expected: tuple[str, str]) -> None:
    parsed = read(data, "application/zip", "files.zip")
    kind, phrase = expected
    assert names(parsed) == set()
    assert any(found_kind == kind and phrase in reason for found_kind, reason in unreadable(parsed))


def test_a_gzip_bomb_stops_at_the_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(parts, "MAX_ARCHIVE_MEMBER_BYTES", 10_000)
    parsed = read(gzip.compress(b"0" * 1_000_000))
    assert unreadable(parsed) == [("archive", parts.TOO_LARGE)]


def test_the_budget_is_shared_by_every_archive_of_a_message(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(parts, "MAX_ARCHIVE_MEMBERS", 3)
    inner = documents.zip_file({"a.txt": b"x", "b.txt": b"y"})
    parsed = read(documents.zip_file({"1.zip": inner, "2.zip": inner}))
    assert ("archive", parts.TOO_MANY) in unreadable(parsed)
