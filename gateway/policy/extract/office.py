"""Office documents built on ZIP (OOXML: docx, xlsx, pptx; ODF: odt, ods, odp): text, properties, files.

Every XML part of the package is read: the body, tables, headers and footers, comments,
footnotes, slides and notes, shared strings, and the document properties (author, last modified
by, title, company...). Runs join within a paragraph (editors split words into runs freely) and
paragraph-like elements separate words; attribute values (link targets, cell values, field data)
are read too. XML is parsed by expat with DTDs and entity declarations refused, so an entity bomb
is refused, not expanded. Other files inside (images, embedded documents, macros) are read in turn; fonts,
printer settings and page thumbnails (a picture of text read anyway) are skipped.
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Callable
from typing import NoReturn
from xml.parsers import expat

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
_OOXML_PARTS = ("word/", "xl/", "ppt/")


def is_package(names: set[str]) -> bool:
    """Whether a ZIP archive with these (lower-cased) member names is an OOXML or ODF document.

    Parts a word processor would show count too, without the package's marker file: an
    application that repairs a damaged document still shows their text, runs joined.
    """
    return (
        _OOXML_MARK in names or "content.xml" in names or any(name.startswith(_OOXML_PARTS) for name in names)
    )


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
    """Expat handlers: text in document order, attribute values aside, DTDs refused."""

    def __init__(self) -> None:
        self.chunks: list[str] = []
        self.attributes: list[str] = []
        self.breaks: dict[str, bool] = {}  # tag -> whether it separates words (cached: tags repeat)

    def _breaks(self, tag: str) -> bool:
        found = self.breaks.get(tag)
        if found is None:
            found = self.breaks[tag] = tag.rpartition(":")[2].lower() in _BREAKS
        return found

    def start(self, tag: str, attributes: dict[str, str]) -> None:
        if self._breaks(tag):
            self.chunks.append("\n")
        if attributes:
            self.attributes.extend(value for value in attributes.values() if value.strip())

    def end(self, tag: str) -> None:
        if self._breaks(tag):
            self.chunks.append("\n")


def _forbidden(*_args: object) -> NoReturn:
    # Office documents never declare a DTD or entities; one that does may be an entity bomb.
    raise ValueError("DTDs and entity declarations are not read")


def read_xml(data: bytes, found: Extraction, where: str = "") -> None:
    """The text and attribute values of one XML document; unreadable if it is not well-formed XML."""
    collector = _Collector()
    parser = expat.ParserCreate()
    parser.buffer_text = True  # one call per run of text, not per line
    parser.StartElementHandler = collector.start
    parser.EndElementHandler = collector.end
    parser.CharacterDataHandler = collector.chunks.append
    parser.StartDoctypeDeclHandler = _forbidden
    parser.EntityDeclHandler = _forbidden
    parser.UnparsedEntityDeclHandler = _forbidden
    parser.ExternalEntityRefHandler = _forbidden
    try:
        parser.Parse(data, True)
    except Exception:  # malformed XML, a DTD or entity declaration, a parser error
        found.cannot_read("a document part that is not well-formed XML", "binary", where)
        return
    found.text("".join(collector.chunks), where)
    found.text("\n".join(collector.attributes), f"attributes of {where}" if where else "attributes")
