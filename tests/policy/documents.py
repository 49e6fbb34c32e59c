"""Build attachment files byte by byte (PDF, OOXML, ODF, RTF, TNEF, iCalendar, vCard, archives) for tests.

Each builder writes the format's real structure with the standard library, so a test controls
exactly where a name sits: split across PDF text operators, in a Word table or document property,
behind RTF escapes, in a folded calendar line. Encrypted PDFs are made with pypdf (a runtime
dependency), the only builder that uses a third-party library.
"""

from __future__ import annotations

import base64
import io
import struct
import tarfile
import zipfile
import zlib
from collections.abc import Sequence
from xml.sax.saxutils import escape

# --- PDF ----------------------------------------------------------------------------------------


def pdf_text_stream(*lines: str, size: int = 12) -> bytes:
    """A page content stream showing each line with one ``Tj`` operator."""
    ops = [f"BT /F1 {size} Tf 72 720 Td {size + 2} TL"]
    for line in lines:
        escaped = line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
        ops.append(f"({escaped}) Tj T*")
    ops.append("ET")
    return "\n".join(ops).encode("latin-1")


def pdf(
    pages: Sequence[bytes],
    *,
    filters: Sequence[str] = ("FlateDecode",),
    info: dict[str, str] | None = None,
    image_pages: Sequence[int] = (),
    image: bytes = b"\x80",
) -> bytes:
    """A PDF whose pages have the given content streams, encoded with ``filters`` (outermost first).

    ``filters`` ("ASCII85Decode", "FlateDecode") with an all-ASCII body gives a PDF made only of
    ASCII bytes, as many writers produce. Pages listed in ``image_pages`` also paint an image whose
    samples are ``image`` (one grey pixel unless given).
    """
    objects: list[bytes] = []

    def add(body: bytes) -> int:
        objects.append(body)
        return len(objects)

    font = add(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>")
    samples = image.hex().encode() + b">"
    image_id = add(
        f"<< /Type /XObject /Subtype /Image /Width {len(image)} /Height 1 /ColorSpace /DeviceGray "
        f"/BitsPerComponent 8 /Filter /ASCIIHexDecode /Length {len(samples)} >>\nstream\n".encode()
        + samples
        + b"\nendstream"
    )
    pages_id = len(objects) + 1 + 2 * len(pages)
    kids: list[int] = []
    for number, content in enumerate(pages):
        if number in image_pages:
            content = b"q 100 0 0 100 72 72 cm /Im1 Do Q\n" + content
        data = content
        for name in reversed(filters):
            data = _pdf_filter(name, data)
        filter_names = " ".join(f"/{name}" for name in filters)
        stream = add(
            f"<< /Length {len(data)} /Filter [{filter_names}] >>\nstream\n".encode() + data + b"\nendstream"
        )
        xobjects = f"/XObject << /Im1 {image_id} 0 R >> " if number in image_pages else ""
        kids.append(
            add(
                f"<< /Type /Page /Parent {pages_id} 0 R /MediaBox [0 0 612 792] /Contents {stream} 0 R "
                f"/Resources << /Font << /F1 {font} 0 R >> {xobjects}>> >>".encode()
            )
        )
    kid_refs = " ".join(f"{kid} 0 R" for kid in kids)
    assert add(f"<< /Type /Pages /Kids [{kid_refs}] /Count {len(kids)} >>".encode()) == pages_id
    catalog = add(f"<< /Type /Catalog /Pages {pages_id} 0 R >>".encode())
    info_id = None
    if info:
        entries = " ".join(f"/{key} ({value})" for key, value in info.items())
        info_id = add(f"<< {entries} >>".encode("latin-1"))
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{offset:010d} 00000 n \n".encode() for offset in offsets)
    trailer = f"<< /Size {len(objects) + 1} /Root {catalog} 0 R"
    trailer += f" /Info {info_id} 0 R >>" if info_id else " >>"
    out += f"trailer\n{trailer}\nstartxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)


def _pdf_filter(name: str, data: bytes) -> bytes:
    if name == "FlateDecode":
        return zlib.compress(data)
    if name == "ASCII85Decode":
        return base64.a85encode(data, wrapcol=72) + b"~>"
    if name == "ASCIIHexDecode":
        return data.hex().encode() + b">"
    raise ValueError(name)


def encrypted_pdf(plain_pdf: bytes, user_password: str = "secret") -> bytes:  # noqa: S107 (a test file)
    """``plain_pdf`` encrypted with AES (a reader needs ``user_password`` to open it)."""
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(plain_pdf)))
    writer.encrypt(user_password=user_password, owner_password="owner", algorithm="AES-128")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


# --- archives -----------------------------------------------------------------------------------


def zip_file(members: dict[str, bytes], *, compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=compression) as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def tar_file(members: dict[str, bytes], *, mode: str = "w:gz") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as archive:  # type: ignore[call-overload]
        for name, content in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            archive.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


# --- office documents ---------------------------------------------------------------------------

_W = 'xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"'
_CORE = (
    'xmlns:cp="http://schemas.openxmlformats.org/package/2006/metadata/core-properties" '
    'xmlns:dc="http://purl.org/dc/elements/1.1/"'
)


def _core(creator: str, last_modified_by: str, title: str) -> bytes:
    return (
        f'<?xml version="1.0" encoding="UTF-8"?><cp:coreProperties {_CORE}>'
        f"<dc:title>{escape(title)}</dc:title><dc:creator>{escape(creator)}</dc:creator>"
        f"<cp:lastModifiedBy>{escape(last_modified_by)}</cp:lastModifiedBy></cp:coreProperties>"
    ).encode()


def _runs(text: str, split: int) -> str:
    """``text`` as Word runs of ``split`` characters (editors split words into runs freely)."""
    pieces = [text[i : i + split] for i in range(0, len(text), split)] or [""]
    return "".join(f'<w:r><w:t xml:space="preserve">{escape(piece)}</w:t></w:r>' for piece in pieces)


def docx(
    body: str = "", *, table_cell: str = "", creator: str = "", last_modified_by: str = "", title: str = ""
) -> bytes:
    """A Word document: ``body`` as a paragraph of 3-character runs, ``table_cell`` in a table."""
    table = (
        f"<w:tbl><w:tr><w:tc><w:p>{_runs(table_cell, 2)}</w:p></w:tc></w:tr></w:tbl>" if table_cell else ""
    )
    document = (
        f'<?xml version="1.0" encoding="UTF-8"?><w:document {_W}><w:body>'
        f"<w:p>{_runs('Statement', 9)}</w:p><w:p>{_runs(body, 3)}</w:p>{table}</w:body></w:document>"
    )
    return zip_file(
        {
            "[Content_Types].xml": b'<?xml version="1.0"?><Types/>',
            "word/document.xml": document.encode(),
            "docProps/core.xml": _core(creator, last_modified_by, title),
        }
    )


def xlsx(cell: str = "", *, creator: str = "") -> bytes:
    """A workbook whose first cell is a shared string."""
    ns = 'xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"'
    return zip_file(
        {
            "[Content_Types].xml": b'<?xml version="1.0"?><Types/>',
            "xl/sharedStrings.xml": f"<sst {ns}><si><t>{escape(cell)}</t></si></sst>".encode(),
            "xl/worksheets/sheet1.xml": (
                f'<worksheet {ns}><sheetData><row r="1"><c r="A1" t="s"><v>0</v></c></row>'
                "</sheetData></worksheet>"
            ).encode(),
            "docProps/core.xml": _core(creator, "", ""),
        }
    )


def pptx(text: str = "", *, creator: str = "") -> bytes:
    """A presentation with ``text`` on its first slide."""
    ns = (
        'xmlns:p="http://schemas.openxmlformats.org/presentationml/2006/main" '
        'xmlns:a="http://schemas.openxmlformats.org/drawingml/2006/main"'
    )
    slide = (
        f"<p:sld {ns}><p:cSld><p:spTree><p:sp><p:txBody><a:p><a:r><a:t>{escape(text[:2])}</a:t></a:r>"
        f"<a:r><a:t>{escape(text[2:])}</a:t></a:r></a:p></p:txBody></p:sp></p:spTree></p:cSld></p:sld>"
    )
    return zip_file(
        {
            "[Content_Types].xml": b'<?xml version="1.0"?><Types/>',
            "ppt/slides/slide1.xml": slide.encode(),
            "docProps/core.xml": _core(creator, "", ""),
        }
    )


def odt(body: str = "", *, creator: str = "", table_cell: str = "") -> bytes:
    """An OpenDocument text: ``body`` split across a span, ``table_cell`` in a table, ``creator`` in meta."""
    ns = (
        'xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0" '
        'xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0" '
        'xmlns:table="urn:oasis:names:tc:opendocument:xmlns:table:1.0"'
    )
    half = len(body) // 2
    table = (
        f"<table:table><table:table-row><table:table-cell><text:p>{escape(table_cell)}</text:p>"
        "</table:table-cell></table:table-row></table:table>"
        if table_cell
        else ""
    )
    content = (
        f'<?xml version="1.0" encoding="UTF-8"?><office:document-content {ns}><office:body><office:text>'
        f"<text:p>{escape(body[:half])}<text:span>{escape(body[half:])}</text:span></text:p>{table}"
        "</office:text></office:body></office:document-content>"
    )
    meta = (
        '<?xml version="1.0" encoding="UTF-8"?><office:document-meta '
        'xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0" '
        'xmlns:meta="urn:oasis:names:tc:opendocument:xmlns:meta:1.0">'
        f"<office:meta><meta:initial-creator>{escape(creator)}</meta:initial-creator></office:meta>"
        "</office:document-meta>"
    )
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("mimetype", "application/vnd.oasis.opendocument.text", zipfile.ZIP_STORED)
        archive.writestr("content.xml", content, zipfile.ZIP_DEFLATED)
        archive.writestr("meta.xml", meta, zipfile.ZIP_DEFLATED)
    return buffer.getvalue()


# --- RTF ----------------------------------------------------------------------------------------


def rtf(body: str) -> bytes:
    """An RTF document around ``body``, which is RTF source (escapes and groups written by the test)."""
    return (
        r"{\rtf1\ansi\ansicpg1252\deff0{\fonttbl{\f0\fswiss Helvetica;}}"
        r"{\colortbl;\red255\green0\blue0;}\f0\fs24 " + body + r"\par}"
    ).encode("latin-1")


def rtf_hex(text: str) -> str:
    r"""``text`` with every character written as a ``\'xx`` escape (cp1252)."""
    return "".join(f"\\'{byte:02x}" for byte in text.encode("cp1252"))


def rtf_unicode(text: str) -> str:
    r"""``text`` with every character written as ``\uN?`` (with a one-character fallback)."""
    return "".join(f"\\u{ord(char) if ord(char) < 32768 else ord(char) - 65536}?" for char in text)


# --- TNEF (winmail.dat) -------------------------------------------------------------------------

_TNEF_SIGNATURE = 0x223E9F78
_LEVEL_MESSAGE, _LEVEL_ATTACHMENT = 1, 2


def _tnef_attribute(level: int, attribute: int, kind: int, data: bytes) -> bytes:
    checksum = sum(data) & 0xFFFF
    return struct.pack("<BHHI", level, attribute, kind, len(data)) + data + struct.pack("<H", checksum)


def tnef(*, subject: str = "", body: str = "", attachments: Sequence[tuple[str, bytes]] = ()) -> bytes:
    """A ``winmail.dat``: subject and plain body (attPriority, attSubject, attBody), then attachments."""
    out = bytearray(struct.pack("<IH", _TNEF_SIGNATURE, 0x0001))
    out += _tnef_attribute(_LEVEL_MESSAGE, 0x9006, 0x0008, struct.pack("<I", 0x00010000))  # version
    out += _tnef_attribute(_LEVEL_MESSAGE, 0x9007, 0x0006, struct.pack("<II", 1252, 0))  # codepage
    if subject:
        out += _tnef_attribute(_LEVEL_MESSAGE, 0x8004, 0x0001, subject.encode("cp1252") + b"\x00")
    if body:
        out += _tnef_attribute(_LEVEL_MESSAGE, 0x800C, 0x0002, body.encode("cp1252"))
    for name, data in attachments:
        out += _tnef_attribute(_LEVEL_ATTACHMENT, 0x9002, 0x0002, b"\x00" * 14)  # attAttachRendData
        out += _tnef_attribute(_LEVEL_ATTACHMENT, 0x8010, 0x0001, name.encode("cp1252") + b"\x00")
        out += _tnef_attribute(_LEVEL_ATTACHMENT, 0x800F, 0x0006, data)
    return bytes(out)


# --- iCalendar and vCard ------------------------------------------------------------------------


def fold(line: str, width: int = 20) -> str:
    """An RFC 5545 content line folded every ``width`` characters (CRLF and one space)."""
    return "\r\n ".join(line[i : i + width] for i in range(0, len(line), width))


def ics(*lines: str) -> bytes:
    body = "\r\n".join(
        ["BEGIN:VCALENDAR", "VERSION:2.0", "BEGIN:VEVENT", *lines, "END:VEVENT", "END:VCALENDAR"]
    )
    return (body + "\r\n").encode()


def vcf(*lines: str) -> bytes:
    return ("\r\n".join(["BEGIN:VCARD", "VERSION:3.0", *lines, "END:VCARD"]) + "\r\n").encode()


# --- Outlook .msg (Compound File Binary) --------------------------------------------------------

_SECTOR = 512
_END_OF_CHAIN, _FREE, _FAT_SECTOR, _NO_STREAM = 0xFFFFFFFE, 0xFFFFFFFF, 0xFFFFFFFD, 0xFFFFFFFF


def compound_file(streams: dict[str, bytes]) -> bytes:
    """A Compound File Binary (OLE2) with top-level ``streams``, each padded to 4096 bytes.

    Streams of 4096 bytes or more live in ordinary sectors, so no mini stream is needed; names
    must be shorter than 32 characters.
    """
    names = list(streams)
    datas = [streams[name].ljust(4096, b"\x00") for name in names]
    entries = 1 + len(names)
    directory_sectors = -(-entries * 128 // _SECTOR)
    data_sectors = [len(data) // _SECTOR for data in datas]
    total = 1 + directory_sectors + sum(data_sectors)  # one FAT sector holds 128 entries
    assert total <= 128
    fat = [_FAT_SECTOR]
    fat += [*range(2, 1 + directory_sectors), _END_OF_CHAIN]
    starts = []
    position = 1 + directory_sectors
    for count in data_sectors:
        starts.append(position)
        fat += [*range(position + 1, position + count), _END_OF_CHAIN]
        position += count
    fat += [_FREE] * (128 - len(fat))

    def entry(name: str, kind: int, child: int, right: int, start: int, size: int) -> bytes:
        encoded = (name + "\x00").encode("utf-16-le")
        return (
            encoded.ljust(64, b"\x00")
            + struct.pack("<HBBIII", len(encoded), kind, 1, _NO_STREAM, right, child)
            + b"\x00" * 16  # CLSID
            + b"\x00" * 4  # state bits
            + b"\x00" * 16  # creation and modification times
            + struct.pack("<IQ", start, size)
        )

    directory = entry("Root Entry", 5, 1 if names else _NO_STREAM, _NO_STREAM, _END_OF_CHAIN, 0)
    for index, name in enumerate(names, start=1):
        right = index + 1 if index < len(names) else _NO_STREAM
        directory += entry(name, 2, _NO_STREAM, right, starts[index - 1], len(datas[index - 1]))
    directory = directory.ljust(directory_sectors * _SECTOR, b"\x00")
    header = (
        b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
        + b"\x00" * 16
        + struct.pack("<HHHH", 0x003E, 0x0003, 0xFFFE, 9)
        + struct.pack("<H", 6)
        + b"\x00" * 6
        + struct.pack("<IIIIIIIII", 0, 1, 1, 0, 4096, _END_OF_CHAIN, 0, _END_OF_CHAIN, 0)
    )
    header += struct.pack("<I", 0) + struct.pack("<I", _FREE) * 108  # the FAT is sector 0
    fat_sector = b"".join(struct.pack("<I", value) for value in fat)
    return header + fat_sector + directory + b"".join(datas)


def outlook_msg(*, subject: str = "", body: str = "", sender_name: str = "") -> bytes:
    """An Outlook ``.msg``: subject, plain body and sender name as Unicode property streams."""
    streams = {}
    for prop_id, value in ((0x0037, subject), (0x1000, body), (0x0C1A, sender_name)):
        if value:
            streams[f"__substg1.0_{prop_id:04X}001F"] = value.encode("utf-16-le")
    return compound_file(streams)
