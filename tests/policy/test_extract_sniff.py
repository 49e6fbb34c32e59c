"""The real format of a file comes from its bytes: never from its declared type, name or "all ASCII"."""

from __future__ import annotations

import pytest

from gateway.policy.extract.sniff import Format, sniff
from tests.policy import documents


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        pytest.param(documents.pdf([documents.pdf_text_stream("x")]), Format.PDF, id="pdf"),
        pytest.param(
            documents.pdf([documents.pdf_text_stream("x")], filters=("ASCII85Decode", "FlateDecode")),
            Format.PDF,
            id="all-ascii-pdf",
        ),
        pytest.param(b"\r\n" + b"x" * 500 + b"%PDF-1.7\n", Format.PDF, id="pdf-header-after-junk"),
        pytest.param(documents.docx("x"), Format.ZIP, id="docx"),
        pytest.param(documents.zip_file({"a.txt": b"x"}), Format.ZIP, id="zip"),
        pytest.param(documents.tar_file({"a.txt": b"x"}, mode="w"), Format.TAR, id="tar"),
        pytest.param(documents.tar_file({"a.txt": b"x"}), Format.GZIP, id="tar.gz"),
        pytest.param(documents.tar_file({"a.txt": b"x"}, mode="w:bz2"), Format.BZIP2, id="tar.bz2"),
        pytest.param(documents.tar_file({"a.txt": b"x"}, mode="w:xz"), Format.XZ, id="tar.xz"),
        pytest.param(b"7z\xbc\xaf\x27\x1c\x00\x04", Format.OTHER_ARCHIVE, id="7z"),
        pytest.param(b"Rar!\x1a\x07\x01\x00", Format.OTHER_ARCHIVE, id="rar"),
        pytest.param(documents.rtf("x"), Format.RTF, id="rtf"),
        pytest.param(b"\xef\xbb\xbf\r\n {\\rtf1 x}", Format.RTF, id="rtf-after-bom-and-space"),
        pytest.param(documents.tnef(subject="x"), Format.TNEF, id="tnef"),
        pytest.param(documents.ics("SUMMARY:x"), Format.CALENDAR, id="ics"),
        pytest.param(b"begin:vcalendar\nend:vcalendar", Format.CALENDAR, id="ics-lower-case"),
        pytest.param(documents.vcf("FN:x"), Format.VCARD, id="vcf"),
        pytest.param("BEGIN:VCARD\r\nFN:x\r\n".encode("utf-16"), Format.VCARD, id="vcf-utf-16"),
        pytest.param(documents.outlook_msg(subject="x"), Format.OLE, id="msg"),
        pytest.param(b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR", Format.IMAGE, id="png"),
        pytest.param(b"\xff\xd8\xff\xe0\x00\x10JFIF", Format.IMAGE, id="jpeg"),
        pytest.param(b"GIF89a\x01\x00", Format.IMAGE, id="gif"),
        pytest.param(b"RIFF\x00\x00\x00\x00WEBPVP8 ", Format.IMAGE, id="webp"),
        pytest.param(b"\x00\x00\x00\x18ftypheic\x00\x00", Format.IMAGE, id="heic"),
        pytest.param(b"BM" + b"\x36\x00\x00\x00" + b"\x00" * 30, Format.IMAGE, id="bmp"),
        pytest.param(b"ID3\x03\x00\x00\x00\x00\x00\x00", Format.AUDIO, id="mp3"),
        pytest.param(b"\x00\x00\x00\x18ftypmp42\x00\x00", Format.VIDEO, id="mp4"),
        pytest.param(b"BMW drivers met at the event.", Format.UNKNOWN, id="text-starting-like-bmp"),
        pytest.param(b"Hello, the meeting is at 10.", Format.UNKNOWN, id="text"),
        pytest.param(b"<html><body>x</body></html>", Format.UNKNOWN, id="html-is-the-decoder's"),
    ],
)
def test_sniff(data: bytes, expected: Format) -> None:
    assert sniff(data) is expected


def test_an_all_ascii_pdf_is_all_ascii() -> None:
    # The case the issue reported: such a PDF used to pass for plain text.
    data = documents.pdf([documents.pdf_text_stream("x")], filters=("ASCII85Decode", "FlateDecode"))
    assert data.isascii()
