"""Office documents built on ZIP (OOXML: docx, xlsx, pptx; ODF: odt, ods, odp): text, properties, files.

Every XML part of the package is read: the body, tables, headers and footers, comments,
footnotes, slides and notes, shared strings, and the document properties (author, last modified
by, title, company...). Runs join within a paragraph (editors split words into runs freely) and
paragraph-like elements separate words; attribute values (link targets, cell values, field data)
are read too. XML is parsed without DTDs or entities (defusedxml), so an entity bomb is refused,
not expanded. Other files inside (images, embedded documents, macros) are read in turn; fonts,
printer settings and page thumbnails (a picture of text read anyway) are skipped.
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Callable

from defusedxml.ElementTree import DefusedXMLParser

from gateway.policy.extract.parts import Embedded, Extraction

# Paragraph-like elements whose ends separate words (local names, lower-cased).
_BREAKS = frozenset(
    [
        "p",
        "br",
        "cr",
        "tab",
        "tc",
        "tr",
        "h",
        "si",
        "c",
        "row",
        "table-cell",
        "line-break",
        "list-item",
        "txbody",
        "sp",
        "v",
        "s",
        "title",
        "description",
        "creator",
        "lastmodifiedby",
        "keywords",
        "subject",
        "category",
        "initial-creator",
        "company",
        "manager",
        "comment",
        "author",
        "t-break",
        "note",
        "footnote",
        "endnote",
        "cell",
        "is",
        "text-box",
        "frame",
    ]
)
_XML_NAME = re.compile(r"\.(xml|rels|vml)$", re.IGNORECASE)
_SKIPPED = re.compile(
    r"printersettings|\.odttf$|\.fntdata$|\.ttf$|\.otf$|^docprops/thumbnail\.|^thumbnails/|^mimetype$",
    re.IGNORECASE,
)
_OOXML_MARK = "[content_types].xml"
_ODF_MARK = "mimetype"


def is_package(names: set[str]) -> bool:
    """Whether a ZIP archive with these (lower-cased) member names is an OOXML or ODF document."""
    return _OOXML_MARK in names or (_ODF_MARK in names and "content.xml" in names)


def read_package(
    members: list[zipfile.ZipInfo],
    read: Callable[[zipfile.ZipInfo, str], bytes | None],
    found: Extraction,
) -> None:
    """Read an office package's members (``read`` applies the archive's limits)."""
    for number, member in enumerate(members, start=1):
        where = f"file {number} of the document"
        if member.is_dir() or _SKIPPED.search(member.filename):
            continue
        content = read(member, where)
        if content is None:
            continue
        if _XML_NAME.search(member.filename):
            read_xml(content, found, where)
        else:
            found.files.append(Embedded(member.filename, content, where))


class _Collector:
    """An ElementTree parser target: text in document order, attribute values aside."""

    def __init__(self) -> None:
        self.chunks: list[str] = []
        self.attributes: list[str] = []

    def start(self, tag: str, attrib: dict[str, str]) -> None:
        if _local(tag) in _BREAKS:
            self.chunks.append("\n")
        self.attributes.extend(value for value in attrib.values() if value.strip())

    def end(self, tag: str) -> None:
        if _local(tag) in _BREAKS:
            self.chunks.append("\n")

    def data(self, data: str) -> None:
        self.chunks.append(data)

    def close(self) -> None:
        return None


def _local(tag: str) -> str:
    return tag.rpartition("}")[2].lower()


def read_xml(data: bytes, found: Extraction, where: str = "") -> None:
    """The text and attribute values of one XML document; unreadable if it is not well-formed XML."""
    collector = _Collector()
    try:
        parser = DefusedXMLParser(target=collector, forbid_dtd=True, forbid_entities=True)
        parser.feed(data)
        parser.close()
    except Exception:  # malformed XML, a DTD or entity declaration, a parser error
        found.cannot_read("a document part that is not well-formed XML", "binary", where)
        return
    found.text("".join(collector.chunks), where)
    found.text("\n".join(collector.attributes), f"attributes of {where}" if where else "attributes")
