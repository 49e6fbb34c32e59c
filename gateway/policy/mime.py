"""Decode a raw message into every piece of text a reader could see, and say what cannot be read.

:func:`parse_message` never raises. It walks the whole MIME tree (forwarded messages included,
recursively) and produces :class:`~gateway.policy.model.TextSegment` s for:

* every header of the message, of each MIME part and of each attached message (header name and
  value; raw UTF-8 accepted; RFC 2047 encoded-words decoded, also where clients decode them
  against the rules, e.g. inside quoted strings and file names);
* file names and other parameters of ``Content-Type`` / ``Content-Disposition`` (RFC 2231
  charsets and continuations, RFC 2047), but never ``charset`` or ``boundary`` values;
* every text part (base64, quoted-printable and uuencode decoded; the declared charset applied,
  falling back to UTF-8 then Latin-1; valid UTF-8 under a wrong declared charset read both ways),
  and text-like attachments (JSON, XML, CSV, scripts, PostScript...);
* HTML: the rendered text, and attribute values, comments, script and CSS text;
* multipart preambles and epilogues; inline uuencoded files; ``text/rfc822-headers`` and
  delivery-status blocks;
* every body and every file inside one, first by what its bytes are (never its declared type or
  name): PDFs, office documents, RTF, TNEF, Outlook messages, calendars, vCards and archives are
  read by :mod:`gateway.policy.extract` (the files inside them in turn, bounded); other bodies by
  their declared type, then their name, then their content (binary bytes are never text).

What cannot be read is listed in ``uninspectable`` (encrypted parts, inline PGP messages, opaque
S/MIME, encrypted or scanned PDFs, archives that cannot be opened, unknown binary content, a reader
library's failure); images, audio and video are listed in ``media``: they carry no text the gateway
can read.

Anything two readers could read differently goes to ``ambiguities`` (the engine refuses the
message): duplicate singleton headers, conflicting MIME parameters, a nested multipart reusing an
enclosing boundary, a multipart without its closing boundary, a multipart whose parts cannot be
found although its body has MIME structure, invalid base64 in a part whose content is read, 8-bit
header bytes that are not UTF-8, and limits exceeded (parts, nesting, decoded text). Each reason is
a plain sentence that quotes nothing from the message.
"""

from __future__ import annotations

import io
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from email.errors import CloseBoundaryNotFoundDefect, NoBoundaryInMultipartDefect
from email.generator import BytesGenerator
from email.message import Message
from email.policy import compat32

from gateway.policy.address_header import MalformedAddressHeader
from gateway.policy.charsets import decode_bytes, decode_encoded_words, text_readings, to_bytes
from gateway.policy.content_kinds import (
    classify,
    is_binary,
    is_media,
    looks_like_text,
    meta_charset,
    safe_type,
)
from gateway.policy.extract import documents
from gateway.policy.extract.parts import MAX_ARCHIVE_DEPTH, Extraction
from gateway.policy.extract.sniff import MEDIA, Format, sniff
from gateway.policy.header_fields import (
    ADDRESS_HEADERS,
    HEADER_CONTROL,
    KNOWN_HEADERS,
    PART_SINGLETONS,
    TOP_SINGLETONS,
    Header,
    addresses,
)
from gateway.policy.html import Rendered, render_html_as_shown
from gateway.policy.mime_parameters import (
    FILENAME_PARAMETERS,
    TECHNICAL_PARAMETERS,
    Parameters,
    file_name_readings,
    parse_parameters,
)
from gateway.policy.mime_parser import parse_email
from gateway.policy.mime_record import LEADING_TEXT_CHARS, MAX_DEPTH, MimeRecord, Refused, refused_message
from gateway.policy.model import ParsedMessage, SegmentKind, Uninspectable
from gateway.policy.reading import read_header
from gateway.policy.transfer_encodings import (
    DECODED_ENCODINGS,
    IDENTITY_ENCODINGS,
    decode_transfer,
    uudecode,
    valid_base64,
)
from gateway.policy.xml_text import render_xml

_FOLD = re.compile(r"\r?\n(?=[ \t])")
_LINE_BREAK = re.compile(r"\r?\n|\r")
_MIME_STRUCTURE = re.compile(
    r"^(--\S|content-type\s*:|content-transfer-encoding\s*:)", re.IGNORECASE | re.MULTILINE
)
_PLAIN_TOKEN = re.compile(r"[a-z0-9!#$&^_.+/-]*")
_ENRICHED_TAG = re.compile(r"<(/?[a-z0-9-]+)>", re.IGNORECASE)
_PGP_MESSAGE = "-----BEGIN PGP MESSAGE-----"
_PGP_SIGNED = "-----BEGIN PGP SIGNED MESSAGE-----"
_UUENCODED_BLOCK = re.compile(
    r"^begin [0-7]{3,4} ([^\r\n]+)\r?\n(.*?)^end[ \t]*\r?$", re.MULTILINE | re.DOTALL
)


class _Decoder(MimeRecord):
    """One pass over one message: walks the MIME tree and reads every header and body."""

    # headers -------------------------------------------------------------------------------

    def _header_value(self, value: str) -> str:
        """Raw header text as a string: unfolded, raw 8-bit bytes read as UTF-8 (SMTPUTF8)."""
        if value.isascii():
            text = value  # no raw 8-bit bytes (they would be surrogates): nothing to decode
        else:
            data = to_bytes(value)
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError:
                self._ambiguous("a header contains 8-bit bytes that are not valid UTF-8")
                text = data.decode("latin-1")
        if "\n" not in text and "\r" not in text:
            return text  # not folded: nothing for the two substitutions below to change
        return _LINE_BREAK.sub(" ", _FOLD.sub("", text))

    def _headers(self, entity: Message, owner: str, *, top_level: bool) -> dict[str, list[Header]]:
        """Scan every header of ``entity``; return them by lower-cased name."""
        by_name: dict[str, list[Header]] = {}
        counts: Counter[str] = Counter()
        for raw_name, raw_value in entity.raw_items():
            name = self._header_value(raw_name).strip()
            key = name.lower()
            counts[key] += 1
            raw = self._header_value(raw_value)
            header = Header(name=name, raw=raw, text=decode_encoded_words(raw))
            by_name.setdefault(key, []).append(header)
            shown = KNOWN_HEADERS.get(key)
            if header.text is not raw and len(HEADER_CONTROL.findall(header.text)) > len(
                HEADER_CONTROL.findall(raw)
            ):
                self._ambiguous(
                    f"an encoded-word in {f'the {shown} header' if shown else 'a header'}{owner} decodes "
                    "to a line break or another control character"
                )
            if key in ("content-type", "content-disposition"):
                continue  # their parameters are scanned separately: see _parameters
            where = f"header {shown}{owner}" if shown else f"a non-standard header{owner}"
            # The reading keeps encoded-words apart where decoding glues them to a neighbour.
            reading = read_header(raw, decode_encoded_words)
            self._segment(
                where, SegmentKind.HEADER, f"{name}: {header.text}", reading and f"{name}: {reading}"
            )
        if top_level:
            for key in ADDRESS_HEADERS:
                try:
                    self.top_addresses[key] = addresses(by_name.get(key, []))
                except MalformedAddressHeader as malformed:
                    self._ambiguous(f"the {KNOWN_HEADERS[key]} header is malformed: {malformed}")
        singletons = PART_SINGLETONS + (TOP_SINGLETONS if top_level else ())
        for key in singletons:
            if counts[key] > 1:
                scope = "the message" if top_level else "a MIME part or attached message"
                self._ambiguous(f"{scope} has more than one {KNOWN_HEADERS[key]} header")
        return by_name

    def _parameters(self, headers: dict[str, list[Header]], label: str, parsed: list[Parameters]) -> None:
        """Check Content-Type and Content-Disposition parameters; scan file names and other text."""
        for key, parameters in zip(("content-type", "content-disposition"), parsed, strict=True):
            glued = file_name_readings(headers[key][0].raw) if key in headers else ""
            if not _PLAIN_TOKEN.fullmatch(parameters.value):
                # A comment or stray text in the type itself, e.g. "text/plain (notes)".
                self._segment(f"header {KNOWN_HEADERS[key]} of {label}", SegmentKind.HEADER, parameters.value)
            for name in sorted(parameters.conflicts):
                shown = name if name in TECHNICAL_PARAMETERS or name in FILENAME_PARAMETERS else "a"
                self._ambiguous(f"conflicting {shown} parameters in a {KNOWN_HEADERS[key]} header")
            for name, values in parameters.values.items():
                if name in TECHNICAL_PARAMETERS:
                    continue
                if name in FILENAME_PARAMETERS:
                    for value in dict.fromkeys(values):
                        self._filename(f"file name of {label}", value, glued)
                else:
                    text = " ".join(f"{name}={value}" for value in values)
                    self._segment(f"header {KNOWN_HEADERS[key]} of {label}", SegmentKind.HEADER, text)

    # messages and parts --------------------------------------------------------------------

    def visit_message(self, message: Message, path: str, depth: int, boundaries: tuple[str, ...]) -> None:
        """A whole message: the top-level one, or one attached/forwarded inside another."""
        top_level = not path
        owner = "" if top_level else f" of the message in part {path}"
        self._count_entity(depth)
        headers = self._headers(message, owner, top_level=top_level)
        if top_level:
            self.top_headers = headers
        body_path = path if _is_container(message) else (f"{path}.1" if path else "1")
        self._entity_body(message, headers, body_path, depth, boundaries, leading=top_level)

    def _visit_part(
        self, part: Message, path: str, depth: int, boundaries: tuple[str, ...], leading: bool
    ) -> None:
        self._count_entity(depth)
        headers = self._headers(part, f" of part {path}", top_level=False)
        self._entity_body(part, headers, path, depth, boundaries, leading)

    def _entity_body(
        self,
        entity: Message,
        headers: dict[str, list[Header]],
        path: str,
        depth: int,
        boundaries: tuple[str, ...],
        leading: bool,
    ) -> None:
        type_parameters, disposition = (
            parse_parameters(headers[key][0].raw) if key in headers else Parameters()
            for key in ("content-type", "content-disposition")
        )
        content_type = entity.get_content_type()
        payload = vars(entity).get("_payload")
        if (
            not isinstance(payload, list)
            and "content-type" in headers
            and type_parameters.value.count("/") != 1
        ):
            # An empty or garbled type: Python assumes text/plain, but the part may be anything.
            content_type = "application/octet-stream"
        label = f"part {path} ({safe_type(content_type)})" if path else "the message body"
        self._parameters(headers, label, [type_parameters, disposition])
        if content_type.startswith("multipart/"):
            boundary = type_parameters.first("boundary")
            self._multipart(entity, content_type, boundary, payload, path, label, depth, boundaries, leading)
        elif content_type.startswith("message/") and isinstance(payload, list):
            self._enclosed(entity, content_type, payload, headers, path, label, depth, boundaries)
        else:
            self._leaf(
                entity, content_type, headers, type_parameters, disposition, path, label, depth, leading
            )

    def _multipart(
        self,
        entity: Message,
        content_type: str,
        boundary: str | None,
        payload: object,
        path: str,
        label: str,
        depth: int,
        boundaries: tuple[str, ...],
        leading: bool,
    ) -> None:
        if content_type == "multipart/encrypted":
            self._cannot_read(label, "encrypted content (multipart/encrypted)", "encrypted")
            return
        if content_type == "multipart/signed":
            self.signed = True
        if boundary is not None and boundary in boundaries:
            self._ambiguous("a nested multipart reuses the boundary of an enclosing multipart")
        if any(isinstance(defect, CloseBoundaryNotFoundDefect) for defect in entity.defects):
            self._ambiguous("a multipart has no closing boundary")
        if not isinstance(payload, list):
            # No usable boundary: Python reads the body as one text. That is safe only if the body has
            # no MIME structure another reader could split differently.
            body = decode_bytes(to_bytes(payload if isinstance(payload, str) else ""), "utf-8")
            no_boundary = any(isinstance(d, NoBoundaryInMultipartDefect) for d in entity.defects)
            if _MIME_STRUCTURE.search(body):
                reason = "has no boundary parameter" if no_boundary else "has no part matching its boundary"
                self._ambiguous(f"a multipart {reason}")
            self._segment(label, SegmentKind.TEXT, body)
            return
        for text, where in (
            (entity.preamble, "text before the first part"),
            (entity.epilogue, "text after the last part"),
        ):
            if text:
                self._segment(f"{where} of {label}", SegmentKind.TEXT, decode_bytes(to_bytes(text), "utf-8"))
        inner = (*boundaries, boundary) if boundary is not None else boundaries
        every_child_leads = content_type == "multipart/alternative"
        for index, child in enumerate(payload, start=1):
            if isinstance(child, Message):
                child_path = f"{path}.{index}" if path else str(index)
                child_leads = leading and (every_child_leads or index == 1)
                self._visit_part(child, child_path, depth + 1, inner, child_leads)

    def _enclosed(
        self,
        entity: Message,
        content_type: str,
        payload: list[object],
        headers: dict[str, list[Header]],
        path: str,
        label: str,
        depth: int,
        boundaries: tuple[str, ...],
    ) -> None:
        if content_type == "message/partial":
            self._cannot_read(label, "a fragment of a message split over several mails", "binary")
            return
        encoding = _transfer_encoding(headers)
        if encoding not in IDENTITY_ENCODINGS:
            # Not allowed for message/* (RFC 2046), but some clients do it and some readers decode it:
            # read what it decodes to (and, for an unknown encoding, also the message as it stands).
            flat = _flatten_body(entity)
            if encoding == "base64" and not valid_base64(flat):
                self._ambiguous(f"part {path or '1'} has invalid base64")
            known = encoding in DECODED_ENCODINGS
            for data in decode_transfer(flat, encoding)[0 if known else 1 :]:
                self._enclosed_bytes(data, path, depth, boundaries)
            if known:
                return
        messages = [item for item in payload if isinstance(item, Message)]
        if content_type in ("message/delivery-status", "message/disposition-notification"):
            for block in messages:
                self._count_entity(depth + 1)
                self._headers(block, f" of the delivery report in {label}", top_level=False)
            return
        for message in messages:
            self.visit_message(message, path or "1", depth + 1, boundaries)

    def _enclosed_bytes(self, data: bytes, path: str, depth: int, boundaries: tuple[str, ...]) -> None:
        self.visit_message(parse_email(data), path or "1", depth + 1, boundaries)

    def _leaf(
        self,
        entity: Message,
        content_type: str,
        headers: dict[str, list[Header]],
        type_parameters: Parameters,
        disposition: Parameters,
        path: str,
        label: str,
        depth: int,
        leading: bool,
    ) -> None:
        filename = disposition.first("filename") or type_parameters.first("name") or ""
        attachment = disposition.value == "attachment" or bool(filename)
        raw = _payload_bytes(entity)
        encoding = _transfer_encoding(headers)
        readings = decode_transfer(raw, encoding)
        # A picture's base64 need not be valid: nobody reads text in it. Anything under a media type
        # that is not media by its bytes is read for what its bytes are.
        declared_media = is_media(content_type) and not any(looks_like_text(data) for data in readings)
        if encoding == "base64" and not declared_media and not valid_base64(raw):
            self._ambiguous(f"part {path or '1'} has invalid base64")
        if declared_media and all(sniff(data) in MEDIA for data in readings):
            self._media(label, sniff(readings[0]))
            return
        file = _File(
            name=filename,
            content_type=content_type,
            charset=type_parameters.first("charset"),
            smime_type=(type_parameters.first("smime-type") or "").lower(),
            label=label,
            path=path or "1",
            attachment=attachment,
            leading=leading and not attachment,
            flowed=(type_parameters.first("format") or "").lower() == "flowed",
            delete_space=(type_parameters.first("delsp") or "").lower() == "yes",
        )
        for data in readings:
            self._file(data, file, depth, archive_depth=0)
            file.leading = False

    # content -------------------------------------------------------------------------------

    def _file(self, data: bytes, file: _File, depth: int, archive_depth: int) -> None:
        """Read one body: a part, a uuencoded file or a file found inside an attachment."""
        text_kind = SegmentKind.ATTACHMENT_TEXT if file.attachment else SegmentKind.TEXT
        # The bytes say what a file is; its declared type and name only matter for text formats.
        found = sniff(data)
        if found in MEDIA:
            self._media(file.label, found)
            return
        if found in documents.DOCUMENTS:
            self._document(data, found, file, text_kind, depth, archive_depth)
            if found not in documents.TEXTUAL:
                return
        kind = classify(file.content_type, file.name, data)
        if kind in ("text", "html", "xml") and is_binary(data, file.charset):
            # A declared type or a name is a claim: binary bytes called "notes.txt" are still binary,
            # and the recipient can save them under another name.
            kind = "binary"
        if kind == "text":
            for number, text in enumerate(text_readings(data, file.charset)):
                self._text(text, file, text_kind, depth, archive_depth, first=number == 0)
                if number == 0 and file.flowed:
                    # RFC 3676 soft line breaks (with delsp=yes, even inside a word) join lines.
                    self._segment(file.label, text_kind, _unflow(text, delete_space=file.delete_space))
                if number == 0 and file.content_type in ("text/enriched", "text/richtext"):
                    self._segment(file.label, text_kind, _ENRICHED_TAG.sub("", text).replace("<<", "<"))
        elif kind == "html":
            charset = file.charset or meta_charset(data)
            for number, text in enumerate(text_readings(data, charset)):
                self._rendered(render_html_as_shown(text), file, SegmentKind.HTML_TEXT, first=number == 0)
        elif kind == "xml":
            for text in text_readings(data, file.charset):
                self._rendered(render_xml(text, office=False), file, text_kind, first=False)
        elif kind == "headers":
            block = parse_email(data)
            self._count_entity(depth + 1)
            self._headers(block, f" in {file.label}", top_level=False)
            body = vars(block).get("_payload")
            if isinstance(body, str):
                self._segment(file.label, text_kind, decode_bytes(to_bytes(body), file.charset))
        elif kind == "message":
            self._enclosed_bytes(data, file.path, depth, ())
        elif kind == "signature":
            # A detached signature holds no text a person wrote; one that reads as text is read anyway.
            if looks_like_text(data):
                for text in text_readings(data, file.charset):
                    self._segment(file.label, text_kind, text)
        elif kind == "smime":
            if file.smime_type == "signed-data":
                self.signed = True
                self._cannot_read(file.label, "S/MIME signed content in opaque form", "binary")
            else:
                self._cannot_read(file.label, "encrypted content (S/MIME)", "encrypted")
        elif kind == "encrypted":
            self._cannot_read(file.label, "encrypted content", "encrypted")
        else:
            self._cannot_read(
                file.label,
                f"binary content the gateway cannot read ({safe_type(file.content_type)})",
                "binary",
            )

    def _text(
        self, text: str, file: _File, kind: SegmentKind, depth: int, archive_depth: int, *, first: bool
    ) -> None:
        self._segment(file.label, kind, text)
        if not first:
            return
        if file.leading:
            self.leading.append(text[:LEADING_TEXT_CHARS])
            if _PGP_SIGNED in text[:LEADING_TEXT_CHARS]:
                self.signed = True
        if _PGP_MESSAGE in text:
            self._cannot_read(file.label, "encrypted text (an inline PGP message)", "encrypted")
        if "begin " in text:
            for number, block in enumerate(_UUENCODED_BLOCK.finditer(text), start=1):
                name = block.group(1).strip()
                inline = _File(
                    name=name,
                    content_type="application/octet-stream",
                    charset=None,
                    smime_type="",
                    label=f"uuencoded file {number} in {file.label}",
                    path=file.path,
                    attachment=True,
                    leading=False,
                )
                self._filename(f"file name of {inline.label}", name)
                self._file(uudecode(to_bytes(block.group(2))), inline, depth, archive_depth)

    def _rendered(self, rendered: Rendered, file: _File, kind: SegmentKind, *, first: bool) -> None:
        self._segment(file.label, kind, rendered.text)
        hidden = "\n".join(rendered.hidden)
        self._segment(
            f"links, attributes and hidden text of {file.label}", SegmentKind.HTML_ATTRIBUTE, hidden
        )
        if first and file.leading:
            self.leading.append(rendered.body_text.strip()[:LEADING_TEXT_CHARS])

    def _document(
        self, data: bytes, found: Format, file: _File, kind: SegmentKind, depth: int, archive_depth: int
    ) -> None:
        """A document or archive of a sniffed format: its texts, then the files inside it, in turn."""
        extraction: Extraction = documents.read(data, found, file.name, self.budget)
        for text in extraction.texts:
            self._segment(_within(text.where, file.label), kind, text.text)
        for problem in extraction.unreadable:
            where = _within(problem.where, file.label)
            if problem.kind == "media":
                self.media.append(Uninspectable(where, problem.reason, "media"))
            else:
                self._cannot_read(where, problem.reason, problem.kind)
        for embedded in extraction.files:
            label = _within(embedded.where, file.label)
            if embedded.name:
                self._filename(f"file name of {label}", embedded.name)
            if not embedded.data:
                continue
            if archive_depth >= MAX_ARCHIVE_DEPTH:
                self._cannot_read(label, "files nested too deeply inside other files to inspect", "archive")
                continue
            inner = _File(
                name=embedded.name,
                content_type="application/octet-stream",
                charset=None,
                smime_type="",
                label=label,
                path=file.path,
                attachment=True,
                leading=False,
            )
            self._file(embedded.data, inner, depth, archive_depth + 1)


@dataclass
class _File:
    """A body being read and what is known about it."""

    name: str
    content_type: str
    charset: str | None
    smime_type: str
    label: str  # sender-safe location
    path: str
    attachment: bool
    leading: bool  # one of the message's top-level text bodies
    flowed: bool = False  # text/plain; format=flowed
    delete_space: bool = False  # ... with delsp=yes


def _within(where: str, label: str) -> str:
    """A location inside a file: "page 2" within "part 3 (application/pdf)"."""
    return f"{where} in {label}" if where else label


def _is_container(entity: Message) -> bool:
    return entity.get_content_type().startswith("multipart/")


def _payload_bytes(entity: Message) -> bytes:
    payload = vars(entity).get("_payload")
    if isinstance(payload, str):
        return to_bytes(payload)
    if isinstance(payload, bytes):
        return payload
    return b""


def _flatten_body(entity: Message) -> bytes:
    """The raw bytes Python parsed as the (wrongly) encoded attached message."""
    buffer = io.BytesIO()
    for item in vars(entity).get("_payload") or []:
        if isinstance(item, Message):
            BytesGenerator(buffer, mangle_from_=False, maxheaderlen=0, policy=compat32).flatten(item)
    return buffer.getvalue()


def _transfer_encoding(headers: dict[str, list[Header]]) -> str:
    found = headers.get("content-transfer-encoding")
    return found[0].text.strip().lower() if found else ""


def _unflow(text: str, *, delete_space: bool) -> str:
    """Join the soft line breaks of format=flowed text (RFC 3676), quote prefixes included."""
    lines: list[str] = []
    continuing_depth: int | None = None
    for line in _LINE_BREAK.split(text):
        depth = len(line) - len(line.lstrip(">"))
        content = line[depth:]
        if content.startswith(" "):
            content = content[1:]  # space-stuffing
        soft = content.endswith(" ") and content != "-- "
        if soft and delete_space:
            content = content[:-1]
        if continuing_depth == depth and lines:
            lines[-1] += content
        else:
            lines.append(">" * depth + (" " if depth else "") + content)
        continuing_depth = depth if soft else None
    return "\n".join(lines)


def parse_message(raw: bytes) -> ParsedMessage:
    """Decode ``raw`` for inspection. Never raises: what cannot be decoded becomes an ambiguity."""
    return _decode(raw, parse_email)


def _decode(raw: bytes, parse: Callable[[bytes], Message]) -> ParsedMessage:
    decoder = _Decoder(raw)
    try:
        decoder.visit_message(parse(raw), "", 0, ())
    except Refused as refused:
        return refused_message(raw, str(refused))
    except RecursionError:
        return refused_message(raw, f"MIME parts are nested too deeply (limit {MAX_DEPTH} levels)")
    except Exception:  # a decoder bug must refuse the message, never pass it unread
        return refused_message(raw, "the message structure could not be decoded")
    return decoder.result()
