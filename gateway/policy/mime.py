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

import binascii
import codecs
import io
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from email import message_from_bytes
from email.errors import CloseBoundaryNotFoundDefect, NoBoundaryInMultipartDefect
from email.generator import BytesGenerator
from email.message import Message
from email.parser import Parser
from email.policy import compat32
from functools import lru_cache
from urllib.parse import unquote_to_bytes

from gateway.policy.address_header import MalformedAddressHeader, read_mailboxes
from gateway.policy.extract import documents
from gateway.policy.extract.parts import MAX_ARCHIVE_DEPTH, Budget, Extraction
from gateway.policy.extract.sniff import MEDIA, Format, sniff
from gateway.policy.html import Rendered, render_html, render_xml
from gateway.policy.model import Address, ParsedMessage, SegmentKind, TextSegment, Uninspectable
from gateway.policy.reading import PARAGRAPH_BREAK, read_as_human, read_header


def _words(text: str) -> frozenset[str]:
    """A set of words written as one string (keeps long vocabulary tables readable)."""
    return frozenset(text.split())


MAX_PARTS = 1000  # MIME entities (parts and attached messages) in one message
MAX_DEPTH = 32  # nesting of multiparts and attached messages
MAX_TEXT_CHARS = 50_000_000  # decoded text over the whole message
LEADING_TEXT_CHARS = 2048

_IDENTITY_ENCODINGS = frozenset({"", "7bit", "8bit", "binary"})
_UU_ENCODINGS = frozenset({"x-uuencode", "uuencode", "x-uue", "uue"})
_DECODED_ENCODINGS = frozenset({"base64", "quoted-printable"}) | _UU_ENCODINGS

_TOP_SINGLETONS = (
    "from", "sender", "reply-to", "to", "cc", "bcc", "subject", "date", "message-id",
    "in-reply-to", "references", "mime-version",
)  # fmt: skip
_PART_SINGLETONS = ("content-type", "content-transfer-encoding", "content-disposition")
_ADDRESS_HEADERS = ("from", "to", "cc", "bcc")

# Header names shown in locations. Any other name is sender-chosen text and is not echoed.
_KNOWN_HEADERS = {
    name.lower(): name
    for name in _words("""From Sender Reply-To To Cc Bcc Subject Date Message-ID In-Reply-To References
    MIME-Version Content-Type Content-Transfer-Encoding Content-Disposition Content-Description
    Content-ID Content-Language Content-Location Content-Base Content-MD5 Comments Keywords
    Received Return-Path Delivered-To Resent-From Resent-Sender Resent-To Resent-Cc Resent-Bcc
    Resent-Date Resent-Message-ID Resent-Reply-To Organization User-Agent X-Mailer Importance
    Priority X-Priority Sensitivity Thread-Topic Thread-Index List-Id List-Post List-Help
    List-Unsubscribe List-Subscribe List-Owner List-Archive Precedence Auto-Submitted
    Disposition-Notification-To Return-Receipt-To Errors-To Mail-Followup-To Mail-Reply-To
    DKIM-Signature Authentication-Results ARC-Seal ARC-Message-Signature
    ARC-Authentication-Results Received-SPF Autocrypt Openpgp Face X-Face Newsgroups
    Followup-To Original-Recipient Final-Recipient Reporting-MTA Action Status
    Remote-MTA Diagnostic-Code Last-Attempt-Date Arrival-Date X-Original-To
    Accept-Language""")
}

# Parameters that are machine tokens, never text a person wrote (charset names, boundaries...).
_TECHNICAL_PARAMETERS = _words(
    """charset boundary format delsp reply-type smime-type protocol micalg method type start
    start-info report-type access-type size creation-date modification-date read-date
    x-mac-type x-mac-creator x-unix-mode differences"""
)
_FILENAME_PARAMETERS = ("filename", "name")

_TEXT_APPLICATION_TYPES = _words(
    """application/json application/javascript application/ecmascript application/x-javascript
    application/x-sh application/x-shellscript application/x-csh application/csv application/x-csv
    application/rtf application/x-rtf application/x-tex application/x-latex application/postscript
    application/x-yaml application/yaml application/sql application/x-sql application/toml
    application/x-www-form-urlencoded application/mbox application/ics application/x-vcard
    application/x-perl application/x-python application/x-ruby application/x-php
    application/x-httpd-php application/x-subrip application/x-ndjson application/jsonl
    application/x-troff application/x-diff application/x-patch application/pgp-keys
    message/x-emlx"""
)
_XML_TYPES = frozenset({"text/xml", "application/xml", "image/svg+xml"})
_HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})
_SIGNATURE_TYPES = frozenset(
    {"application/pgp-signature", "application/pkcs7-signature", "application/x-pkcs7-signature"}
)
_SMIME_TYPES = frozenset({"application/pkcs7-mime", "application/x-pkcs7-mime"})
_ENCRYPTED_TYPES = frozenset({"application/pgp-encrypted", "application/x-pgp-encrypted"})
_TEXT_EXTENSIONS = _words(
    """txt text md markdown rst csv tsv json jsonl ndjson yaml yml toml ini cfg conf log ics ifb
    vcf vcard js mjs ts py rb pl php sh bash zsh ps1 bat c h cc cpp hpp java kt go rs swift sql
    tex latex bib srt vtt rtf ps eps diff patch asc org adoc properties env"""
)
_HTML_EXTENSIONS = frozenset({"html", "htm", "xhtml", "mht", "mhtml"})
_XML_EXTENSIONS = frozenset({"xml", "rels", "svg", "xsl", "xslt", "plist", "opf", "ncx", "kml", "gpx"})
_MESSAGE_EXTENSIONS = frozenset({"eml", "msg822", "mbox"})
# Python's own codecs that are not mail charsets: a client would show such text undecoded.
_NON_MAIL_CODECS = frozenset({"unicode_escape", "raw_unicode_escape", "idna", "punycode", "undefined"})

_SAFE_TYPES = _words(
    """text/plain text/html text/enriched text/richtext text/calendar text/csv text/xml text/vcard
    text/x-vcard text/markdown text/rfc822-headers text/x-diff text/x-patch
    multipart/mixed multipart/alternative multipart/related multipart/signed multipart/encrypted
    multipart/report multipart/digest multipart/parallel multipart/appledouble
    message/rfc822 message/global message/delivery-status message/disposition-notification
    message/partial message/external-body message/feedback-report
    application/octet-stream application/pdf application/zip application/json application/xml
    application/pgp-signature application/pgp-encrypted application/pgp-keys
    application/pkcs7-signature application/pkcs7-mime application/x-pkcs7-signature
    application/x-pkcs7-mime application/msword application/rtf application/ms-tnef
    application/vnd.ms-excel application/vnd.ms-powerpoint application/gzip application/x-gzip
    application/x-tar application/x-7z-compressed application/x-rar-compressed application/ics
    application/postscript
    application/vnd.openxmlformats-officedocument.wordprocessingml.document
    application/vnd.openxmlformats-officedocument.spreadsheetml.sheet
    application/vnd.openxmlformats-officedocument.presentationml.presentation
    application/vnd.oasis.opendocument.text application/vnd.oasis.opendocument.spreadsheet
    image/png image/jpeg image/gif image/svg+xml image/webp image/bmp image/tiff
    audio/mpeg audio/basic audio/wav video/mp4"""
)
_SAFE_MAIN_TYPES = frozenset(
    {"text", "multipart", "message", "application", "image", "audio", "video", "font", "model"}
)

_ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([BbQq])\?([^?\s]*)\?=")
_FOLD = re.compile(r"\r?\n(?=[ \t])")
_LINE_BREAK = re.compile(r"\r?\n|\r")
_BASE64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
# Deletion sets for bytes.translate, which strips characters in one C pass (a regex substitution
# visits every line break of a large attachment from Python's regex engine).
_NOT_BASE64 = bytes(byte for byte in range(256) if byte not in _BASE64_ALPHABET)
_ASCII_WHITESPACE = b" \t\r\n\f\v"
_QUOTED_PAIR = re.compile(r"\\(.)", re.DOTALL)
_PARAMETER_SPECIALS = re.compile(r'[\\";]')
_MESSAGE_IDS = re.compile(r"<[^<>\s]*>")
_EXTENDED_SECTION = re.compile(r"(.+?)\*(\d+)(\*?)")
_MIME_STRUCTURE = re.compile(
    r"^(--\S|content-type\s*:|content-transfer-encoding\s*:)", re.IGNORECASE | re.MULTILINE
)
_PLAIN_TOKEN = re.compile(r"[a-z0-9!#$&^_.+/-]*")
_ENRICHED_TAG = re.compile(r"<(/?[a-z0-9-]+)>", re.IGNORECASE)
_FILENAME_SEPARATORS = re.compile(r"[._+\-/\\]+")
_CONTROL_CHARS = re.compile(r"[\x00-\x08\x0e-\x1f\x7f]")
# What an encoded-word must not decode to in a header: a line break (CR, LF, or the Unicode line and
# paragraph separators) or another C0 control character (tab is allowed). Another reader would start
# a new header line there, or show something other than what was checked. (C1 controls are left
# alone: Latin-1 labels on Windows-1252 text, which real mail is full of, decode to them.)
_HEADER_CONTROL = re.compile("[\x00-\x08\x0a-\x1f\x7f\u2028\u2029]")
_PGP_MESSAGE = "-----BEGIN PGP MESSAGE-----"
_PGP_SIGNED = "-----BEGIN PGP SIGNED MESSAGE-----"
_UUENCODED_BLOCK = re.compile(
    r"^begin [0-7]{3,4} ([^\r\n]+)\r?\n(.*?)^end[ \t]*\r?$", re.MULTILINE | re.DOTALL
)
_META_CHARSET = re.compile(rb"<meta[^>]+charset\s*=\s*[\"']?\s*([A-Za-z0-9_:.+-]+)", re.IGNORECASE)


class _Refused(Exception):
    """A limit was exceeded: stop decoding and refuse the message with this reason."""


# --- small decoding helpers ---------------------------------------------------------------------


def _to_bytes(text: str) -> bytes:
    """Undo the parser's surrogateescape decoding of raw bytes."""
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace")


def _codec(charset: str | None) -> str | None:
    """The Python codec for a mail charset name, or None when unknown or not a mail charset."""
    if not charset:
        return None
    name = charset.strip().strip("\"'").lower()
    try:
        info = codecs.lookup(name)
    except (LookupError, ValueError):
        return None
    return None if info.name in _NON_MAIL_CODECS else info.name


def decode_bytes(data: bytes, charset: str | None) -> str:
    """Decode with the declared charset; unknown or wrong charsets fall back to UTF-8, then Latin-1."""
    codec = _codec(charset)
    if codec:
        try:
            return data.decode(codec)
        except (UnicodeDecodeError, LookupError):
            pass
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    if codec:
        try:
            return data.decode(codec, "replace")
        except LookupError:
            pass
    return data.decode("latin-1")


def _readings(data: bytes, charset: str | None) -> list[str]:
    """Every plausible reading of text bytes: the declared charset's, and UTF-8's if it differs."""
    primary = decode_bytes(data, charset)
    if data.isascii():
        return [primary]
    try:
        as_utf8 = data.decode("utf-8")
    except UnicodeDecodeError:
        return [primary]
    return [primary] if as_utf8 == primary else [primary, as_utf8]


def _lenient_base64(data: bytes) -> bytes:
    cleaned = data.translate(None, _NOT_BASE64)
    cleaned = cleaned[: len(cleaned) - len(cleaned) % 4] if len(cleaned) % 4 == 1 else cleaned
    try:
        return binascii.a2b_base64(cleaned + b"=" * (-len(cleaned) % 4))
    except binascii.Error:
        return b""


def _uudecode(data: bytes) -> bytes:
    """Decode uuencoded lines (with or without the begin/end lines), tolerating sloppy encoders."""
    out = bytearray()
    for line in data.splitlines():
        stripped = line.rstrip(b"\r\n")
        if not stripped or stripped.startswith((b"begin ", b"end")):
            continue
        try:
            out += binascii.a2b_uu(stripped)
        except binascii.Error:
            # Some encoders emit extra padding characters; decode only what the length byte says.
            length = ((stripped[0] - 32) & 63) * 4 + 5
            try:
                out += binascii.a2b_uu(stripped[: length // 3])
            except binascii.Error:
                continue
    return bytes(out)


def decode_encoded_words(text: str) -> str:
    """Decode RFC 2047 encoded-words wherever they occur (adjacent words joined, as clients do)."""
    if "=?" not in text:
        return text
    out: list[str] = []
    pending = bytearray()
    pending_charset: str | None = None
    position = 0

    def flush() -> None:
        nonlocal pending_charset
        if pending_charset is not None:
            out.append(decode_bytes(bytes(pending), pending_charset))
            pending.clear()
            pending_charset = None

    for match in _ENCODED_WORD.finditer(text):
        gap = text[position : match.start()]
        if gap and not (pending_charset is not None and gap.isspace()):
            flush()
            out.append(gap)
        charset = match.group(1).split("*", 1)[0]
        encoding, payload = match.group(2).upper(), match.group(3)
        try:
            if encoding == "B":
                padded = payload + "=" * (-len(payload) % 4)
                data = binascii.a2b_base64(padded.encode("ascii", "replace"))
            else:
                data = binascii.a2b_qp(payload.encode("ascii", "replace"), header=True)
        except (binascii.Error, ValueError):
            flush()
            out.append(match.group(0))
            position = match.end()
            continue
        if pending_charset is not None and pending_charset.lower() != charset.lower():
            flush()
        pending += data
        pending_charset = charset
        position = match.end()
    flush()
    out.append(text[position:])
    return "".join(out)


def _safe_type(content_type: str) -> str:
    """A content type fit for a location string (sender-chosen types are not echoed)."""
    if content_type in _SAFE_TYPES:
        return content_type
    main = content_type.partition("/")[0]
    return f"{main}/other" if main in _SAFE_MAIN_TYPES else "unknown type"


def _extension(filename: str) -> str:
    base = filename.replace("\\", "/").rpartition("/")[2]
    return base.rpartition(".")[2].lower() if "." in base else ""


# --- MIME parameters (RFC 2045, 2231, 2047) ---------------------------------------------------------


@dataclass
class _Parameters:
    """The parameters of a Content-Type or Content-Disposition header, decoded."""

    value: str = ""  # the type or disposition itself, lower-cased
    values: dict[str, list[str]] = field(default_factory=dict)
    conflicts: set[str] = field(default_factory=set)

    def first(self, name: str) -> str | None:
        found = self.values.get(name)
        return found[0] if found else None


def _split_parameters(header: str) -> list[str]:
    """``header`` split at each ``;`` outside a quoted string (a backslash in one escapes a character)."""
    if '"' not in header:
        return header.split(";")  # no quoted string, so no escapes either
    pieces: list[str] = []
    start = 0
    quoted = False
    escaped_at = -1  # where the character a backslash inside quotes escapes is
    # Only quotes, backslashes and semicolons change anything: visit those, not every character.
    for special in _PARAMETER_SPECIALS.finditer(header):
        index = special.start()
        if index == escaped_at:
            continue
        char = special.group()
        if char == "\\":
            if quoted:
                escaped_at = index + 1
        elif char == '"':
            quoted = not quoted
        elif not quoted:
            pieces.append(header[start:index])
            start = index + 1
    pieces.append(header[start:])
    return pieces


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return _QUOTED_PAIR.sub(r"\1", value[1:-1])
    return value


def _extended_value(value: str) -> tuple[str | None, bytes]:
    """Split an RFC 2231 ``charset'language'percent-encoded`` value."""
    charset: str | None = None
    if value.count("'") >= 2:
        charset, _language, value = value.split("'", 2)
    return charset or None, unquote_to_bytes(value)


def _join_sections(parts: dict[int, tuple[str, bool]]) -> str:
    """Reassemble RFC 2231 continuations (``name*0*=utf-8''..; name*1*=..``) in section order."""
    charset: str | None = None
    data = bytearray()
    for index in sorted(parts):
        value, is_extended = parts[index]
        if not is_extended:
            data += value.encode("utf-8", "surrogateescape")
        elif index == 0:
            charset, chunk = _extended_value(value)
            data += chunk
        else:
            data += unquote_to_bytes(value)
    return decode_encoded_words(decode_bytes(bytes(data), charset))


def _file_name_readings(header: str) -> str:
    """How a person reads file name parameters whose encoded-words glue words (gateway.policy.reading)."""
    if "=?" not in header:
        return ""
    readings = []
    for piece in _split_parameters(header)[1:]:
        name, _, value = piece.partition("=")
        if name.strip().lower().partition("*")[0] in _FILENAME_PARAMETERS:
            readings.append(read_header(_unquote(value), decode_encoded_words))
    return PARAGRAPH_BREAK.join(reading for reading in readings if reading)


def parse_parameters(header: str) -> _Parameters:
    """Parse ``type; name=value; name*0*=...`` with RFC 2231 continuations and charsets."""
    pieces = _split_parameters(header)
    result = _Parameters(value=pieces[0].strip().lower())
    seen: set[str] = set()
    plain: dict[str, list[str]] = {}
    sections: dict[str, dict[int, tuple[str, bool]]] = {}
    extended: dict[str, str] = {}
    for piece in pieces[1:]:
        raw_name, equals, raw_value = piece.partition("=")
        name = raw_name.strip().lower()
        if not equals or not name:
            continue
        if name in seen:
            result.conflicts.add(name.partition("*")[0])
        seen.add(name)
        value = _unquote(raw_value)
        section = _EXTENDED_SECTION.fullmatch(name)
        if section:
            sections.setdefault(section.group(1), {})[int(section.group(2))] = (value, bool(section.group(3)))
        elif name.endswith("*"):
            charset, data = _extended_value(value)
            extended[name[:-1]] = decode_bytes(data, charset)
        else:
            plain.setdefault(name, []).append(decode_encoded_words(value))
    for base, parts in sections.items():
        if base in extended:
            result.conflicts.add(base)
        extended[base] = _join_sections(parts)
    for name, values in plain.items():
        result.values[name] = list(values)
    for name, value in extended.items():
        if name in ("boundary", "charset") and name in plain and plain[name] != [value]:
            result.conflicts.add(name)
        result.values.setdefault(name, []).append(value)
    return result


# --- the walk ---------------------------------------------------------------------------------------


@dataclass
class _Header:
    name: str  # as written (decoded)
    raw: str  # unfolded, 8-bit decoded, encoded-words left as they are
    text: str  # fully decoded


class _Decoder:
    """One pass over one message; collects segments, uninspectable parts and ambiguities."""

    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        self.segments: list[TextSegment] = []
        self.uninspectable: list[Uninspectable] = []
        self.media: list[Uninspectable] = []
        self.ambiguities: dict[str, None] = {}
        self.leading: list[str] = []
        self.signed = False
        self.parts = 0
        self.text_chars = 0
        self.top_headers: dict[str, list[_Header]] = {}
        self.budget = Budget()  # what the message's attachments may still unpack
        self.top_addresses: dict[str, tuple[Address, ...]] = {}

    # recording ------------------------------------------------------------------------------

    def _ambiguous(self, reason: str) -> None:
        self.ambiguities[reason] = None

    def _segment(self, where: str, kind: SegmentKind, text: str, reading: str = "") -> None:
        if not text or text.isspace():
            return
        if not reading and kind not in (SegmentKind.HEADER, SegmentKind.FILENAME):
            read = read_as_human(text, kind)
            if "=?" in read:
                # A forwarded header block pasted into a body can carry encoded-words.
                read = decode_encoded_words(read)
            reading = "" if read == text else read
        self.text_chars += len(text) + len(reading)
        if self.text_chars > MAX_TEXT_CHARS:
            raise _Refused(f"the message holds too much text to inspect (limit {MAX_TEXT_CHARS} characters)")
        self.segments.append(TextSegment(where=where, kind=kind, text=text, reading=reading))

    def _filename(self, where: str, name: str, reading: str = "") -> None:
        # In a file name, dots, dashes and underscores separate words ("JP_notes.txt" names "JP"):
        # read it as written and with those separators as spaces.
        self._segment(where, SegmentKind.FILENAME, f"{name}\n{_FILENAME_SEPARATORS.sub(' ', name)}", reading)

    def _cannot_read(self, where: str, reason: str, kind: str) -> None:
        self.uninspectable.append(Uninspectable(where=where, reason=reason, kind=kind))

    def _count_entity(self, depth: int) -> None:
        self.parts += 1
        if self.parts > MAX_PARTS:
            raise _Refused(f"too many MIME parts (limit {MAX_PARTS})")
        if depth > MAX_DEPTH:
            raise _Refused(f"MIME parts are nested too deeply (limit {MAX_DEPTH} levels)")

    # headers -------------------------------------------------------------------------------

    def _header_value(self, value: str) -> str:
        """Raw header text as a string: unfolded, raw 8-bit bytes read as UTF-8 (SMTPUTF8)."""
        if value.isascii():
            text = value  # no raw 8-bit bytes (they would be surrogates): nothing to decode
        else:
            data = _to_bytes(value)
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError:
                self._ambiguous("a header contains 8-bit bytes that are not valid UTF-8")
                text = data.decode("latin-1")
        if "\n" not in text and "\r" not in text:
            return text  # not folded: nothing for the two substitutions below to change
        return _LINE_BREAK.sub(" ", _FOLD.sub("", text))

    def _headers(self, entity: Message, owner: str, *, top_level: bool) -> dict[str, list[_Header]]:
        """Scan every header of ``entity``; return them by lower-cased name."""
        by_name: dict[str, list[_Header]] = {}
        counts: Counter[str] = Counter()
        for raw_name, raw_value in entity.raw_items():
            name = self._header_value(raw_name).strip()
            key = name.lower()
            counts[key] += 1
            raw = self._header_value(raw_value)
            header = _Header(name=name, raw=raw, text=decode_encoded_words(raw))
            by_name.setdefault(key, []).append(header)
            shown = _KNOWN_HEADERS.get(key)
            if header.text is not raw and len(_HEADER_CONTROL.findall(header.text)) > len(
                _HEADER_CONTROL.findall(raw)
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
            for key in _ADDRESS_HEADERS:
                try:
                    self.top_addresses[key] = _addresses(by_name.get(key, []))
                except MalformedAddressHeader as malformed:
                    self._ambiguous(f"the {_KNOWN_HEADERS[key]} header is malformed: {malformed}")
        singletons = _PART_SINGLETONS + (_TOP_SINGLETONS if top_level else ())
        for key in singletons:
            if counts[key] > 1:
                scope = "the message" if top_level else "a MIME part or attached message"
                self._ambiguous(f"{scope} has more than one {_KNOWN_HEADERS[key]} header")
        return by_name

    def _parameters(self, headers: dict[str, list[_Header]], label: str, parsed: list[_Parameters]) -> None:
        """Check Content-Type and Content-Disposition parameters; scan file names and other text."""
        for key, parameters in zip(("content-type", "content-disposition"), parsed, strict=True):
            glued = _file_name_readings(headers[key][0].raw) if key in headers else ""
            if not _PLAIN_TOKEN.fullmatch(parameters.value):
                # A comment or stray text in the type itself, e.g. "text/plain (notes)".
                self._segment(
                    f"header {_KNOWN_HEADERS[key]} of {label}", SegmentKind.HEADER, parameters.value
                )
            for name in sorted(parameters.conflicts):
                shown = name if name in _TECHNICAL_PARAMETERS or name in _FILENAME_PARAMETERS else "a"
                self._ambiguous(f"conflicting {shown} parameters in a {_KNOWN_HEADERS[key]} header")
            for name, values in parameters.values.items():
                if name in _TECHNICAL_PARAMETERS:
                    continue
                if name in _FILENAME_PARAMETERS:
                    for value in dict.fromkeys(values):
                        self._filename(f"file name of {label}", value, glued)
                else:
                    text = " ".join(f"{name}={value}" for value in values)
                    self._segment(f"header {_KNOWN_HEADERS[key]} of {label}", SegmentKind.HEADER, text)

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
        headers: dict[str, list[_Header]],
        path: str,
        depth: int,
        boundaries: tuple[str, ...],
        leading: bool,
    ) -> None:
        type_parameters, disposition = (
            parse_parameters(headers[key][0].raw) if key in headers else _Parameters()
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
        label = f"part {path} ({_safe_type(content_type)})" if path else "the message body"
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
            body = decode_bytes(_to_bytes(payload if isinstance(payload, str) else ""), "utf-8")
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
                self._segment(f"{where} of {label}", SegmentKind.TEXT, decode_bytes(_to_bytes(text), "utf-8"))
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
        headers: dict[str, list[_Header]],
        path: str,
        label: str,
        depth: int,
        boundaries: tuple[str, ...],
    ) -> None:
        if content_type == "message/partial":
            self._cannot_read(label, "a fragment of a message split over several mails", "binary")
            return
        encoding = _transfer_encoding(headers)
        if encoding not in _IDENTITY_ENCODINGS:
            # Not allowed for message/* (RFC 2046), but some clients do it and some readers decode it:
            # read what it decodes to (and, for an unknown encoding, also the message as it stands).
            flat = _flatten_body(entity)
            if encoding == "base64" and not _valid_base64(flat):
                self._ambiguous(f"part {path or '1'} has invalid base64")
            known = encoding in _DECODED_ENCODINGS
            for data in _decode_transfer(flat, encoding)[0 if known else 1 :]:
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
        self.visit_message(message_from_bytes(data, policy=compat32), path or "1", depth + 1, boundaries)

    def _leaf(
        self,
        entity: Message,
        content_type: str,
        headers: dict[str, list[_Header]],
        type_parameters: _Parameters,
        disposition: _Parameters,
        path: str,
        label: str,
        depth: int,
        leading: bool,
    ) -> None:
        filename = disposition.first("filename") or type_parameters.first("name") or ""
        attachment = disposition.value == "attachment" or bool(filename)
        raw = _payload_bytes(entity)
        encoding = _transfer_encoding(headers)
        readings = _decode_transfer(raw, encoding)
        # A picture's base64 need not be valid: nobody reads text in it. Anything under a media type
        # that is not media by its bytes is read for what its bytes are.
        declared_media = _is_media(content_type) and not any(_looks_like_text(data) for data in readings)
        if encoding == "base64" and not declared_media and not _valid_base64(raw):
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
        kind = _classify(file.content_type, file.name, data)
        if kind in ("text", "html", "xml") and _binary(data, file.charset):
            # A declared type or a name is a claim: binary bytes called "notes.txt" are still binary,
            # and the recipient can save them under another name.
            kind = "binary"
        if kind == "text":
            for number, text in enumerate(_readings(data, file.charset)):
                self._text(text, file, text_kind, depth, archive_depth, first=number == 0)
                if number == 0 and file.flowed:
                    # RFC 3676 soft line breaks (with delsp=yes, even inside a word) join lines.
                    self._segment(file.label, text_kind, _unflow(text, delete_space=file.delete_space))
                if number == 0 and file.content_type in ("text/enriched", "text/richtext"):
                    self._segment(file.label, text_kind, _ENRICHED_TAG.sub("", text).replace("<<", "<"))
        elif kind == "html":
            charset = file.charset or _meta_charset(data)
            for number, text in enumerate(_readings(data, charset)):
                self._rendered(render_html(text), file, SegmentKind.HTML_TEXT, first=number == 0)
        elif kind == "xml":
            for text in _readings(data, file.charset):
                self._rendered(render_xml(text, office=False), file, text_kind, first=False)
        elif kind == "headers":
            block = message_from_bytes(data, policy=compat32)
            self._count_entity(depth + 1)
            self._headers(block, f" in {file.label}", top_level=False)
            body = vars(block).get("_payload")
            if isinstance(body, str):
                self._segment(file.label, text_kind, decode_bytes(_to_bytes(body), file.charset))
        elif kind == "message":
            self._enclosed_bytes(data, file.path, depth, ())
        elif kind == "signature":
            # A detached signature holds no text a person wrote; one that reads as text is read anyway.
            if _looks_like_text(data):
                for text in _readings(data, file.charset):
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
                f"binary content the gateway cannot read ({_safe_type(file.content_type)})",
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
                self._file(_uudecode(_to_bytes(block.group(2))), inline, depth, archive_depth)

    def _rendered(self, rendered: Rendered, file: _File, kind: SegmentKind, *, first: bool) -> None:
        self._segment(file.label, kind, rendered.text)
        hidden = "\n".join(rendered.hidden)
        self._segment(
            f"links, attributes and hidden text of {file.label}", SegmentKind.HTML_ATTRIBUTE, hidden
        )
        if first and file.leading:
            self.leading.append(rendered.body_text.strip()[:LEADING_TEXT_CHARS])

    def _media(self, where: str, found: Format) -> None:
        noun = {Format.AUDIO: "a sound recording", Format.VIDEO: "a video"}.get(found, "an image")
        self.media.append(Uninspectable(where, f"it is {noun}", "media"))

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

    # result --------------------------------------------------------------------------------

    def result(self) -> ParsedMessage:
        headers = self.top_headers

        def first_text(key: str) -> str:
            found = headers.get(key)
            return found[0].text.strip() if found else ""

        return ParsedMessage(
            raw=self.raw,
            message_id=first_text("message-id") or None,
            in_reply_to=_message_ids(first_text("in-reply-to")),
            references=_message_ids(" ".join(h.text for h in headers.get("references", []))),
            from_=self.top_addresses.get("from", ()),
            to=self.top_addresses.get("to", ()),
            cc=self.top_addresses.get("cc", ()),
            bcc=self.top_addresses.get("bcc", ()),
            subject=first_text("subject"),
            segments=tuple(self.segments),
            uninspectable=tuple(self.uninspectable),
            ambiguities=tuple(self.ambiguities),
            signed=self.signed,
            leading_text=tuple(self.leading),
            media=tuple(self.media),
        )


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


def _is_media(content_type: str) -> bool:
    return content_type.partition("/")[0] in ("image", "audio", "video") and content_type not in _XML_TYPES


def _is_container(entity: Message) -> bool:
    return entity.get_content_type().startswith("multipart/")


def _payload_bytes(entity: Message) -> bytes:
    payload = vars(entity).get("_payload")
    if isinstance(payload, str):
        return _to_bytes(payload)
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


def _transfer_encoding(headers: dict[str, list[_Header]]) -> str:
    found = headers.get("content-transfer-encoding")
    return found[0].text.strip().lower() if found else ""


def _valid_base64(data: bytes) -> bool:
    cleaned = data.translate(None, _ASCII_WHITESPACE)
    # Only the alphabet, then at most two "=" of padding.
    unpadded = cleaned.rstrip(b"=")
    return (
        len(cleaned) % 4 == 0
        and len(cleaned) - len(unpadded) <= 2
        and not unpadded.translate(None, _BASE64_ALPHABET)
    )


def _decode_transfer(data: bytes, encoding: str) -> list[bytes]:
    """Every reading of a body under its Content-Transfer-Encoding (several for unknown encodings)."""
    if encoding in _IDENTITY_ENCODINGS:
        return [data]
    if encoding == "base64":
        return [_lenient_base64(data)]
    if encoding == "quoted-printable":
        return [binascii.a2b_qp(data)]
    if encoding in _UU_ENCODINGS:
        return [_uudecode(data)]
    # An unknown encoding ("7-bit", "quoted printable", ...): readers differ, so read it every way.
    squashed = re.sub(r"[^a-z0-9]", "", encoding)
    readings = [data]
    if "quoted" in squashed or "printable" in squashed or squashed == "qp":
        readings.append(binascii.a2b_qp(data))
    if "base64" in squashed or "b64" in squashed:
        readings.append(_lenient_base64(data))
    if "uu" in squashed:
        readings.append(_uudecode(data))
    return readings


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


def _meta_charset(data: bytes) -> str | None:
    found = _META_CHARSET.search(data[:4096])
    return found.group(1).decode("ascii") if found else None


def _looks_like_text(data: bytes) -> bool:
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return True
    if b"\x00" in data:
        return False
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return len(_CONTROL_CHARS.findall(text)) * 100 <= len(text)


_WIDE_CODECS = ("utf_16", "utf_32")
_BINARY_CONTROLS = bytes(range(32)).translate(None, b"\t\n\r\f\v\x1b")  # ESC: ISO-2022 text


def _binary(data: bytes, charset: str | None) -> bool:
    """Bytes no charset makes text of: NUL bytes (outside UTF-16/32), or mostly control characters."""
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) or (_codec(charset) or "").startswith(
        _WIDE_CODECS
    ):
        return False
    if b"\x00" in data:
        return True
    sample = data[:65536]
    return len(sample) - len(sample.translate(None, _BINARY_CONTROLS)) > len(sample) // 20


def _classify(content_type: str, filename: str, data: bytes) -> str:
    """What a body is, from its declared type, then its file name, then its first bytes."""
    extension = _extension(filename)
    if content_type in _HTML_TYPES:
        return "html"
    if content_type == "text/rfc822-headers":
        return "headers"
    if content_type in _XML_TYPES or content_type.endswith("+xml"):
        return "xml"
    if (
        content_type.startswith("text/")
        or content_type in _TEXT_APPLICATION_TYPES
        or content_type.endswith("+json")
    ):
        return "text"
    if content_type in _SIGNATURE_TYPES:
        return "signature"
    if content_type in ("message/rfc822", "message/global"):
        return "message"
    if content_type in _SMIME_TYPES:
        return "smime"
    if content_type in _ENCRYPTED_TYPES:
        return "encrypted"
    # A name is a claim: binary bytes called "notes.txt" are still binary (the recipient can rename them).
    named_text = (
        extension in _HTML_EXTENSIONS or extension in _XML_EXTENSIONS or extension in _TEXT_EXTENSIONS
    )
    if named_text and not _looks_like_text(data):
        return "binary"
    if extension in _HTML_EXTENSIONS:
        return "html"
    if extension in _XML_EXTENSIONS:
        return "xml"
    if extension in _MESSAGE_EXTENSIONS:
        return "message"
    if extension in _TEXT_EXTENSIONS:
        return "text"
    if extension in ("p7m", "p7c"):
        return "smime"
    if extension in ("gpg", "pgp"):
        return "encrypted"
    if extension in ("p7s", "sig"):
        return "signature"
    if _looks_like_text(data):
        return "text"
    return "binary"


def _message_ids(text: str) -> tuple[str, ...]:
    found = _MESSAGE_IDS.findall(text)
    return tuple(found) if found else tuple(text.split())


def _addresses(headers: list[_Header]) -> tuple[Address, ...]:
    """The mailboxes of one address header's fields (MalformedAddressHeader if they cannot be read)."""
    values = tuple(header.raw for header in headers)
    if sum(len(value) for value in values) <= _CACHED_ADDRESS_CHARS:
        return _cached_mailboxes(values)
    return _mailboxes(values)


# From, To and Cc values recur from message to message, and email.utils.getaddresses is one of the
# costliest steps of parsing: remember recent results. Long values (big recipient lists) are parsed
# every time, which keeps the cache small.
_CACHED_ADDRESS_CHARS = 1000


@lru_cache(maxsize=1024)
def _cached_mailboxes(values: tuple[str, ...]) -> tuple[Address, ...]:
    return _mailboxes(values)


def _mailboxes(values: tuple[str, ...]) -> tuple[Address, ...]:
    """The mailboxes of address header values (one header's fields, unfolded)."""
    mailboxes: list[Address] = []
    for name, address in read_mailboxes(values):
        if name or address:
            mailboxes.append(Address(name=decode_encoded_words(name).strip(), address=address.strip()))
    return tuple(mailboxes)


def _refused(raw: bytes, reason: str) -> ParsedMessage:
    return ParsedMessage(
        raw=raw,
        message_id=None,
        in_reply_to=(),
        references=(),
        from_=(),
        to=(),
        cc=(),
        bcc=(),
        subject="",
        segments=(),
        uninspectable=(),
        ambiguities=(reason,),
        signed=False,
    )


# --- the top-level parse ------------------------------------------------------------------------------

# An empty line after a line ending in LF or CRLF. The feedparser splits lines as io.StringIO(newline="")
# does: after "\r\n", "\n", or a "\r" not followed by "\n" (never at the other breaks str.splitlines
# knows), so a match ends a line and its last line is empty. (A "\n" at the start of the match keeps the
# search on a literal: an empty line at the very start or after a bare CR is missed, see _single_part.)
_EMPTY_LINE = re.compile(r"\n(?:\r\n|\r|\n)")
# A multipart or message/* type, seen before parsing the header block (a miss only costs time).
_COMPOUND_TYPE = re.compile(r"^content-type:\s*(?:multipart|message)/", re.IGNORECASE | re.MULTILINE)


def _message_from_bytes(raw: bytes) -> Message:
    """``message_from_bytes(raw, policy=compat32)``, cheaper for a message that is not a multipart."""
    text = raw.decode("ascii", "surrogateescape")  # as email.parser.BytesParser decodes
    message = _single_part(text)
    return Parser(policy=compat32).parsestr(text) if message is None else message


def _single_part(text: str) -> Message | None:
    """Parse only the header block when the body needs no parsing; None when unsure.

    The feedparser walks a body line by line, but for a type other than multipart/* and message/* it
    only joins those lines back into the payload: the payload is the text after the header block.
    """
    separator = _EMPTY_LINE.search(text)
    if separator is None:
        return None
    head = text[: separator.end()]
    if _COMPOUND_TYPE.search(head):
        return None  # spare a multipart a second parse of its headers
    # Up to the end of that empty line the feedparser sees the same lines as in the whole text, so it
    # reads the same headers, unixfrom and defects. The payload is empty only if the header block ended
    # at that line: not earlier (at a line that is not a header, or an empty line the search missed),
    # and with no "From " line pushed back into the body. Defects would be the same in the full parse,
    # but headers that odd are rare: not worth reasoning about.
    message = Parser(policy=compat32).parsestr(head)
    if (
        message.defects
        or vars(message).get("_payload") != ""
        or message.get_content_maintype() in ("multipart", "message")  # bodies the feedparser parses
    ):
        return None
    message.set_payload(text[separator.end() :])
    return message


def _parse_fully(raw: bytes) -> Message:
    """The reference :func:`_message_from_bytes` must agree with (tests compare them)."""
    return message_from_bytes(raw, policy=compat32)


def parse_message(raw: bytes) -> ParsedMessage:
    """Decode ``raw`` for inspection. Never raises: what cannot be decoded becomes an ambiguity."""
    return _decode(raw, _message_from_bytes)


def _decode(raw: bytes, parse: Callable[[bytes], Message]) -> ParsedMessage:
    decoder = _Decoder(raw)
    try:
        decoder.visit_message(parse(raw), "", 0, ())
    except _Refused as refused:
        return _refused(raw, str(refused))
    except RecursionError:
        return _refused(raw, f"MIME parts are nested too deeply (limit {MAX_DEPTH} levels)")
    except Exception:  # a decoder bug must refuse the message, never pass it unread
        return _refused(raw, "the message structure could not be decoded")
    return decoder.result()
