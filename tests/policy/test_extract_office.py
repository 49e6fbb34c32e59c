"""Office documents (OOXML, ODF): body, tables, slides, cells and document properties are all read."""

from __future__ import annotations

import pytest

from tests.policy import documents
from tests.policy.attached import names, places, read, unreadable

WORD = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"


@pytest.mark.parametrize(
    ("data", "name", "file"),
    [
        pytest.param(
            documents.docx("Report by Jin Park"), "Jin Park", "file 2", id="docx-body-split-in-runs"
        ),
        pytest.param(documents.docx("x", table_cell="Jin Park"), "Jin Park", "file 2", id="docx-table"),
        pytest.param(documents.docx("x", creator="Jin Park"), "Jin Park", "file 3", id="docx-creator"),
        pytest.param(
            documents.docx("x", last_modified_by="Mei Li"), "Mei Li", "file 3", id="docx-last-modified-by"
        ),
        pytest.param(documents.docx("x", title="Notes on Mei Li"), "Mei Li", "file 3", id="docx-title"),
        pytest.param(documents.xlsx("Jin Park"), "Jin Park", "file 2", id="xlsx-shared-string"),
        pytest.param(documents.xlsx("x", creator="Mei Li"), "Mei Li", "file 4", id="xlsx-creator"),
        pytest.param(documents.pptx("Jin Park"), "Jin Park", "file 2", id="pptx-slide"),
        pytest.param(documents.odt("Report by Jin Park"), "Jin Park", "file 2", id="odt-body-split-by-span"),
        pytest.param(documents.odt("x", table_cell="Mei Li"), "Mei Li", "file 2", id="odt-table"),
        pytest.param(documents.odt("x", creator="Jin Park"), "Jin Park", "file 3", id="odt-initial-creator"),
    ],
)
def test_names_in_office_documents_are_found(data: bytes, name: str, file: str) -> None:
    parsed = read(data, WORD, "statement.docx")
    assert f"{file} of the document in part 2 ({WORD})" in places(parsed, name)
    assert unreadable(parsed) == []


def test_an_entity_bomb_is_refused_not_expanded() -> None:
    bomb = (
        b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
        b'<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">'
        b'<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>'
        b"<w:document><w:body><w:p><w:t>&lol3;</w:t></w:p></w:body></w:document>"
    )
    data = documents.zip_file({"[Content_Types].xml": b"<Types/>", "word/document.xml": bomb})
    assert unreadable(read(data)) == [("binary", "a document part that is not well-formed XML")]


def test_malformed_xml_in_a_document_is_uninspectable() -> None:
    data = documents.zip_file({"[Content_Types].xml": b"<Types/>", "word/document.xml": b"<w:p>Jin Park"})
    assert unreadable(read(data)) == [("binary", "a document part that is not well-formed XML")]


def test_pictures_in_a_document_are_media_and_fonts_are_skipped() -> None:
    data = documents.zip_file(
        {
            "[Content_Types].xml": b"<Types/>",
            "word/document.xml": b"<document><p><t>x</t></p></document>",
            "word/media/image1.png": b"\x89PNG\r\n\x1a\n\x00\x00",
            "word/fonts/font1.odttf": b"\x00\x01\x02",
            "docProps/thumbnail.jpeg": b"\xff\xd8\xff\xe0",
        }
    )
    assert unreadable(read(data)) == [("media", "it is an image")]


def test_an_embedded_document_is_read_in_turn() -> None:
    data = documents.zip_file(
        {
            "[Content_Types].xml": b"<Types/>",
            "word/document.xml": b"<document><p><t>x</t></p></document>",
            "word/embeddings/sheet.xlsx": documents.xlsx("Jin Park"),
        }
    )
    assert names(read(data)) == {"Jin Park"}


def test_a_link_target_in_an_attribute_is_read() -> None:
    rels = (
        b'<Relationships><Relationship Id="rId1" Target="mailto:Jin%20Park" TargetMode="External"/>'
        b"</Relationships>"
    )
    data = documents.zip_file({"[Content_Types].xml": b"<Types/>", "word/_rels/document.xml.rels": rels})
    parsed = read(data)
    assert any("mailto:Jin%20Park" in segment.text for segment in parsed.segments)


def test_a_document_without_its_package_marker_is_still_read_as_a_document() -> None:
    # No [Content_Types].xml: a repairing word processor still shows the body, runs joined.
    document = b"<document><body><p><r><t>Ji</t></r><r><t>n Park</t></r></p></body></document>"
    parsed = read(documents.zip_file({"word/document.xml": document}))
    assert names(parsed) == {"Jin Park"}
