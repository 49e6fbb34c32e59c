"""PDF read with pypdf: page text, document properties, annotations, form fields, bookmarks, files.

A PDF is read whatever its stream filters (an ASCII85 + Flate PDF is all ASCII and still a PDF).
An encrypted PDF that opens with the empty password (restrictions only) is read like any other;
one that needs a password cannot be read. A page with no text that paints an image is a scan the
gateway cannot read; images inside a PDF are listed as media, like image attachments.
"""

from __future__ import annotations

import io
import logging
import warnings
from collections.abc import Iterator

from pypdf import PageObject, PdfReader
from pypdf.generic import ArrayObject, DictionaryObject, IndirectObject, PdfObject

from gateway.policy.extract import office, parts
from gateway.policy.extract.parts import Embedded, Extraction

# pypdf logs what it finds odd in a file, sometimes quoting names from it (fonts, keys): the
# gateway's logs never carry message content, so its messages are not passed on.
logging.getLogger("pypdf").disabled = True

_UNREADABLE = "a PDF the gateway cannot read"
_FORM_DEPTH = 4  # nesting of form XObjects searched for images


def read_pdf(data: bytes) -> Extraction:
    found = Extraction()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pypdf warns about sloppy files it still reads
            _read(data, found)
    except Exception:  # a damaged file or a library failure: fail closed
        found.cannot_read(_UNREADABLE, "binary")
    return found


def _read(data: bytes, found: Extraction) -> None:
    reader = PdfReader(io.BytesIO(data))
    if reader.is_encrypted and not reader.decrypt(""):
        found.cannot_read("an encrypted PDF (it needs a password to open)", "encrypted")
        return
    page_count = len(reader.pages)
    if page_count > parts.MAX_PDF_PAGES:
        found.cannot_read(f"a PDF with too many pages to inspect (limit {parts.MAX_PDF_PAGES})", "binary")
        return
    # Extracting text costs far more than decompressing it: measure the content first.
    if sum(_content_size(page) for page in reader.pages) > parts.MAX_PDF_CONTENT_BYTES:
        found.cannot_read("a PDF with too much page content to inspect", "binary")
        return
    images = False
    any_text = False
    for number, page in enumerate(reader.pages, start=1):
        text = page.extract_text()
        painted = _paints_image(page.get("/Resources"), 0)
        images = images or painted
        if text.strip():
            any_text = True
            found.text(text, f"page {number}")
        elif painted:
            found.cannot_read("a page with no text layer (a scanned image)", "binary", f"page {number}")
        found.text("\n".join(_annotation_text(page)), f"comments on page {number}")
    if page_count and not any_text and not images:
        found.cannot_read("a PDF with no readable text", "binary")
    if images:
        found.cannot_read("images inside a PDF are not read", "media")
    found.text("\n".join(str(value) for value in (reader.metadata or {}).values()), "document properties")
    _xmp(reader, found)
    fields = reader.get_fields() or {}
    found.text("\n".join(f"{name}\n{field.get('/V', '')}" for name, field in fields.items()), "form fields")
    found.text("\n".join(_outline_titles(reader.outline)), "bookmarks")
    for number, (name, contents) in enumerate(reader.attachments.items(), start=1):
        for content in contents:
            found.files.append(Embedded(name, content, f"file {number} attached to the PDF"))


def _content_size(page: PageObject) -> int:
    contents = _resolve(page.get("/Contents"))
    streams = list(contents) if isinstance(contents, ArrayObject) else [contents]
    size = 0
    for stream in streams:
        resolved = _resolve(stream)
        if resolved is not None and hasattr(resolved, "get_data"):
            size += len(resolved.get_data())
    return size


def _paints_image(resources: PdfObject | None, depth: int) -> bool:
    """Whether page (or form) resources hold an image XObject, directly or in a nested form."""
    resources = _resolve(resources)
    if not isinstance(resources, DictionaryObject) or depth > _FORM_DEPTH:
        return False
    xobjects = _resolve(resources.get("/XObject"))
    if not isinstance(xobjects, DictionaryObject):
        return False
    for value in xobjects.values():
        xobject = _resolve(value)
        if not isinstance(xobject, DictionaryObject):
            continue
        subtype = xobject.get("/Subtype")
        if subtype == "/Image":
            return True
        if subtype == "/Form" and _paints_image(xobject.get("/Resources"), depth + 1):
            return True
    return False


def _resolve(value: PdfObject | None) -> PdfObject | None:
    return value.get_object() if isinstance(value, IndirectObject) else value


def _annotation_text(page: PageObject) -> Iterator[str]:
    """Comments, their authors and link targets (/Contents, /T, /URI)."""
    annotations = _resolve(page.get("/Annots"))
    if not isinstance(annotations, ArrayObject):
        return
    for item in annotations:
        annotation = _resolve(item)
        if not isinstance(annotation, DictionaryObject):
            continue
        for key in ("/Contents", "/T", "/Subj", "/RC"):
            if key in annotation:
                yield str(_resolve(annotation[key]))
        action = _resolve(annotation.get("/A"))
        if isinstance(action, DictionaryObject) and "/URI" in action:
            yield str(_resolve(action["/URI"]))


def _outline_titles(outline: object) -> Iterator[str]:
    if isinstance(outline, list):
        for item in outline:
            yield from _outline_titles(item)
    elif isinstance(outline, dict) and "/Title" in outline:
        yield str(outline["/Title"])


def _xmp(reader: PdfReader, found: Extraction) -> None:
    """The XMP metadata packet (it may name the author where the Info dictionary does not)."""
    metadata = _resolve(reader.root_object.get("/Metadata"))
    if metadata is not None and hasattr(metadata, "get_data"):
        office.read_xml(metadata.get_data(), found, "document metadata")
