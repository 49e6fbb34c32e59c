"""PDF attachments: text read whatever the stream filters; encrypted and scanned PDFs fail closed."""

from __future__ import annotations

import io

import pytest
from pypdf import PdfReader, PdfWriter
from pypdf.annotations import Text
from pypdf.generic import NameObject, TextStringObject

from gateway.policy.extract import parts
from tests.policy import documents
from tests.policy.attached import names, places, read, unreadable


def _with_attachment(plain_pdf: bytes, name: str, content: bytes) -> bytes:
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(plain_pdf)))
    writer.add_attachment(name, content)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def _with_comment(plain_pdf: bytes, text: str, author: str) -> bytes:
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(plain_pdf)))
    annotation = Text(text=text, rect=(50, 550, 200, 650))
    annotation[NameObject("/T")] = TextStringObject(author)
    writer.add_annotation(page_number=0, annotation=annotation)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


BLANK = documents.pdf([documents.pdf_text_stream("Statement of events")])


@pytest.mark.parametrize(
    ("data", "where"),
    [
        pytest.param(documents.pdf([documents.pdf_text_stream("Report by Jin Park")]), "page 1", id="flate"),
        pytest.param(
            documents.pdf(
                [documents.pdf_text_stream("Report by Jin Park")], filters=("ASCII85Decode", "FlateDecode")
            ),
            "page 1",
            id="all-ascii-ascii85-flate",
        ),
        pytest.param(
            documents.pdf([documents.pdf_text_stream("Report by Jin Park")], filters=("ASCIIHexDecode",)),
            "page 1",
            id="ascii-hex",
        ),
        pytest.param(
            documents.pdf([b"BT /F1 12 Tf 72 720 Td (Ji) Tj (n Pa) Tj (rk) Tj ET"]),
            "page 1",
            id="name-split-across-tj-operators",
        ),
        pytest.param(
            documents.pdf([b"BT /F1 12 Tf 72 720 Td [(J) 20 (in) -250 (Pa) 30 (rk)] TJ ET"]),
            "page 1",
            id="name-split-inside-a-tj-array",
        ),
        pytest.param(
            documents.pdf([documents.pdf_text_stream("Cover"), documents.pdf_text_stream("Jin Park")]),
            "page 2",
            id="second-page",
        ),
        pytest.param(
            documents.pdf([documents.pdf_text_stream("Statement")], info={"Author": "Jin Park"}),
            "document properties",
            id="author-property",
        ),
        pytest.param(_with_comment(BLANK, "ask Jin Park", "Mei Li"), "comments on page 1", id="comment"),
        pytest.param(
            documents.encrypted_pdf(documents.pdf([documents.pdf_text_stream("Jin Park")]), user_password=""),
            "page 1",
            id="encrypted-with-the-empty-password",
        ),
        pytest.param(
            _with_attachment(BLANK, "notes.txt", b"Jin Park said so"),
            "file 1 attached to the PDF",
            id="file-attached-to-the-pdf",
        ),
    ],
)
def test_names_in_a_pdf_are_found(data: bytes, where: str) -> None:
    parsed = read(data, "application/pdf", "statement.pdf")
    assert f"{where} in part 2 (application/pdf)" in places(parsed, "Jin Park")
    assert parsed.uninspectable == ()


@pytest.mark.parametrize(
    ("data", "kind", "reason"),
    [
        pytest.param(
            documents.encrypted_pdf(documents.pdf([documents.pdf_text_stream("Jin Park")])),
            "encrypted",
            "an encrypted PDF",
            id="password-protected",
        ),
        pytest.param(
            documents.pdf([b"q 1 0 0 1 0 0 cm Q"], image_pages=(0,)),
            "binary",
            "a page with no text layer",
            id="scanned-page",
        ),
        pytest.param(
            documents.pdf([b"0 0 m 100 100 l S"]),
            "binary",
            "a PDF with no readable text",
            id="no-text-at-all",
        ),
        pytest.param(
            b"%PDF-1.7\n1 0 obj << /Type /Catalog", "binary", "a PDF the gateway cannot read", id="damaged"
        ),
    ],
)
def test_pdfs_that_cannot_be_read_are_uninspectable(data: bytes, kind: str, reason: str) -> None:
    parsed = read(data, "application/pdf", "statement.pdf")
    assert names(parsed) == set()
    assert any(found_kind == kind and reason in found for found_kind, found in unreadable(parsed))


def test_images_inside_a_pdf_are_media() -> None:
    parsed = read(documents.pdf([documents.pdf_text_stream("Logo and text")], image_pages=(0,)))
    assert parsed.uninspectable == ()
    assert [(part.kind, part.reason) for part in parsed.media] == [
        ("media", "images inside a PDF are not read")
    ]


@pytest.mark.parametrize(
    "declared", ["text/plain", "image/png", "application/octet-stream", "application/zip"]
)
def test_a_pdf_is_read_as_a_pdf_whatever_its_declared_type(declared: str) -> None:
    data = documents.pdf([documents.pdf_text_stream("Jin Park")], filters=("ASCII85Decode", "FlateDecode"))
    assert names(read(data, declared, "notes.txt")) == {"Jin Park"}


def test_a_pdf_with_too_many_pages_is_uninspectable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(parts, "MAX_PDF_PAGES", 2)
    data = documents.pdf([documents.pdf_text_stream("Jin Park")] * 3)
    assert unreadable(read(data)) == [("binary", "a PDF with too many pages to inspect (limit 2)")]


def test_a_pdf_with_too_much_content_is_uninspectable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(parts, "MAX_PDF_CONTENT_BYTES", 1000)
    data = documents.pdf([documents.pdf_text_stream(*["Jin Park"] * 100)])
    assert unreadable(read(data)) == [("binary", "a PDF with too much page content to inspect")]
