"""Apply a verdict's rewrite to the raw message bytes: add Cc mailboxes, insert banner lines.

The message is edited as bytes, never re-serialised: header fields and MIME parts the rewrite does not
touch stay byte-identical, boundaries and structure are kept. Banner lines go at the top of every
top-level text body (text/plain and text/html, inside multipart/alternative and /related, and the
inline text parts of multipart/mixed), never into attachments or attached messages. A changed part is
re-encoded in its own transfer encoding and charset; when the charset cannot hold a banner name the
part switches to UTF-8 (and from 7bit to quoted-printable). Signed or encrypted parts are never touched.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import html
import re
from dataclasses import dataclass
from email.header import Header
from email.message import Message
from email.parser import BytesParser
from email.policy import compat32
from email.utils import formataddr
from functools import lru_cache

from gateway.errors import PolicyError
from gateway.policy.address_header import MalformedAddressHeader, read_mailboxes
from gateway.policy.model import Address, Rewrite

CRLF = b"\r\n"
# Python's email.feedparser.headerRE: what may start a line of a header block.
_HEADER_LINE = re.compile(rb"From |[\041-\071\073-\176]*:|[\t ]")
_BARE_CR = re.compile(rb"\r(?!\n)")
_MAX_LINE = 998
_FOLD_AT = 76
# Where an HTML banner goes: right after <body ...>; without one, first (browsers render a leading
# block before an implied body, and text before <html> would otherwise come above the banner).
_ANCHOR_PATTERNS = (r"<body\b[^>]*>",)

_ADDRESS_FORBIDDEN = re.compile(r"[\s<>,;\"()\[\]\\]")
# Encodings whose bytes are not ASCII bytes for ASCII text (or that add a byte-order mark).
_ASCII_PROBE = "[+ Az09] -<>/=&;#.\r\n"
_UNTOUCHABLE = (
    "multipart/signed",
    "multipart/encrypted",
    "application/pkcs7-mime",
    "application/x-pkcs7-mime",
)


@dataclass
class _Entity:
    """One MIME entity inside the message buffer, located by byte offsets."""

    start: int
    end: int
    header_end: int  # end of the header block (after the last field's CRLF)
    body_start: int  # after the blank line; == end when the entity has no body separator
    has_separator: bool
    fields: list[bytes]  # raw header fields, each with its continuation lines and final CRLF
    headers: Message

    @property
    def content_type(self) -> str:
        return self.headers.get_content_type()

    @property
    def is_attachment(self) -> bool:
        disposition = self.headers.get_content_disposition()
        filename = self.headers.get_filename() or self.headers.get_param("name")
        return disposition == "attachment" or bool(filename)


def apply_rewrite(raw: bytes, rewrite: Rewrite) -> bytes:
    """Return ``raw`` with ``rewrite`` applied (CRLF line endings). Envelope changes are the caller's.

    Raises PolicyError when the message cannot be changed safely (a signed message, no text body for
    the banner, a text part whose charset cannot be read): never a half-changed message.
    """
    data = _crlf_line_ends(raw)
    if not (rewrite.add_cc or rewrite.banner_lines):
        return data
    root = _entity(data, 0, len(data), "text/plain")
    if root.content_type in _UNTOUCHABLE:
        raise PolicyError("the message is signed or encrypted; the gateway never changes such a message")
    root_fields = list(root.fields)
    if root_fields and not root_fields[-1].endswith(CRLF):
        root_fields[-1] += CRLF
    edits: list[tuple[int, int, bytes]] = []
    if rewrite.banner_lines:
        leaves = _text_bodies(data, root)
        if not leaves:
            raise PolicyError("the message has no text body to put the [+ Name] / [- Name] lines in")
        lines = tuple(_clean_line(line) for line in rewrite.banner_lines)
        for leaf in leaves:
            fields = root_fields if leaf is root else list(leaf.fields)
            body = _bannered_body(data, leaf, fields, lines, is_root=leaf is root)
            if leaf is not root:
                edits.append((leaf.start, leaf.header_end, b"".join(fields)))
            edits.append((leaf.body_start, leaf.end, body if leaf.has_separator else CRLF + body))
    if rewrite.add_cc:
        _add_cc(root, root_fields, rewrite.add_cc)
    edits.append((root.start, root.header_end, b"".join(root_fields)))
    out = data
    for start, end, replacement in sorted(edits, key=lambda edit: edit[0], reverse=True):
        out = out[:start] + replacement + out[end:]
    return out


def _crlf_line_ends(data: bytes) -> bytes:
    """``data`` with every bare LF made CRLF (a lone CR stays as it is)."""
    if data.count(b"\n") == data.count(CRLF):
        return data  # the usual case: SMTP delivers CRLF lines
    # Folding CRLF to LF first and then every LF to CRLF gives the same bytes as a look-behind
    # substitution, in two C-level passes instead of a regex over every byte.
    return data.replace(CRLF, b"\n").replace(b"\n", CRLF)


# --- MIME structure ------------------------------------------------------------------------------


def _entity(data: bytes, start: int, end: int, default_type: str) -> _Entity:
    header_end, body_start, has_separator = _header_end(data, start, end)
    block = data[start:header_end]
    headers = BytesParser(policy=compat32).parsebytes(block + CRLF, headersonly=True)
    headers.set_default_type(default_type)
    return _Entity(start, end, header_end, body_start, has_separator, _fields(block), headers)


def _header_end(data: bytes, start: int, end: int) -> tuple[int, int, bool]:
    """Where the header block ends and the body starts, decided exactly as Python's parser does
    (which ``mime.parse_message`` uses): at the first empty line, or at the first line that cannot be
    a header field, which then already belongs to the body."""
    position = start
    while position < end:
        newline = data.find(b"\n", position, end)
        line_end = end if newline == -1 else newline + 1
        line = data[position:line_end]
        if line in (CRLF, b"\n"):
            return position, line_end, True
        if not _HEADER_LINE.match(line):
            return position, position, False
        position = line_end
    return end, end, False


def _fields(block: bytes) -> list[bytes]:
    fields: list[bytes] = []
    for line in block.splitlines(keepends=True):
        if fields and line[:1] in (b" ", b"\t"):
            fields[-1] += line
        else:
            fields.append(line)
    return fields


def _parts(data: bytes, entity: _Entity) -> list[tuple[int, int]]:
    boundary = entity.headers.get_boundary()
    if not boundary:
        return []
    delimiter = re.compile(
        rb"^--" + re.escape(boundary.encode("utf-8", "surrogateescape")) + rb"(--)?[ \t]*(?:\r\n|\Z)",
        re.MULTILINE,
    )
    spans: list[tuple[int, int]] = []
    part_start: int | None = None
    for match in delimiter.finditer(data, entity.body_start, entity.end):
        if part_start is not None:
            # The CRLF before a delimiter belongs to the delimiter, not to the part.
            spans.append((part_start, max(part_start, match.start() - 2)))
        if match.group(1):
            return spans
        part_start = match.end()
    if part_start is not None:
        spans.append((part_start, entity.end))
    return spans


def _text_bodies(data: bytes, entity: _Entity) -> list[_Entity]:
    """The entities a reader sees first as the message text: every version of a multipart/alternative,
    the first part of any other multipart (mixed, related, ...), never attachments or attached messages.
    (``mime.parse_message`` reads ``leading_text`` from the same parts.)"""
    content_type = entity.content_type
    if content_type in ("text/plain", "text/html"):
        return [] if entity.is_attachment else [entity]
    if entity.headers.get_content_maintype() != "multipart" or content_type in _UNTOUCHABLE:
        return []
    default = "message/rfc822" if content_type == "multipart/digest" else "text/plain"
    spans = _parts(data, entity)
    if content_type != "multipart/alternative":
        spans = spans[:1]
    found: list[_Entity] = []
    for start, end in spans:
        found.extend(_text_bodies(data, _entity(data, start, end, default)))
    return found


# --- banner --------------------------------------------------------------------------------------


def _clean_line(line: str) -> str:
    # A banner line is one line with no trailing space (format=flowed would join it to the next).
    return " ".join(line.split())


def _bannered_body(
    data: bytes, leaf: _Entity, fields: list[bytes], lines: tuple[str, ...], is_root: bool
) -> bytes:
    body = data[leaf.body_start : leaf.end]
    encoding = str(leaf.headers.get("content-transfer-encoding", "7bit")).strip().lower() or "7bit"
    content = _transfer_decode(body, encoding)
    charset = leaf.headers.get_content_charset() or "us-ascii"
    codec = _codec(charset)
    is_html = leaf.content_type == "text/html"
    new_content, new_charset = (_html_inserted if is_html else _plain_inserted)(
        content, charset, codec, lines
    )
    new_encoding = encoding
    # An unknown encoding name ("7-bit", "8bits", "plain") is read as-is, as Python's parser and mail
    # clients read it; it stays unless the new content needs quoting, which then also repairs it.
    identity = encoding not in ("quoted-printable", "base64")
    if identity and _needs_quoting(new_content, seven_bit=encoding not in ("8bit", "binary")):
        new_encoding = "quoted-printable"
    if new_charset != charset:
        _set_param_charset(fields, leaf.headers, new_charset)
    if new_encoding != encoding:
        _set_field(fields, "Content-Transfer-Encoding", new_encoding)
    if (
        is_root
        and (new_charset != charset or new_encoding != encoding)
        and not _has_field(fields, "mime-version")
    ):
        _set_field(fields, "MIME-Version", "1.0")
    return _transfer_encode(new_content, new_encoding, trailing_crlf=body.endswith(CRLF))


def _codec(charset: str) -> codecs.CodecInfo | None:
    try:
        return codecs.lookup(charset)
    except LookupError:
        return None


def _ascii_compatible(codec: codecs.CodecInfo | None) -> bool:
    if codec is None:
        return False
    try:
        return codec.encode(_ASCII_PROBE)[0] == _ASCII_PROBE.encode("ascii")
    except (UnicodeError, LookupError):
        return False


def _eol(content: bytes | str) -> str:
    """The line ending a body already uses (CRLF unless it uses bare LF only)."""
    text = content.decode("latin-1") if isinstance(content, bytes) else content
    return "\r\n" if "\r\n" in text or "\n" not in text else "\n"


def _plain_banner(lines: tuple[str, ...], eol: str) -> str:
    return eol.join(lines) + eol + eol


def _html_banner(lines: tuple[str, ...], eol: str) -> str:
    return (
        "".join(f"<div>{html.escape(line, quote=False)}</div>{eol}" for line in lines)
        + f"<div><br></div>{eol}"
    )


def _plain_inserted(
    content: bytes, charset: str, codec: codecs.CodecInfo | None, lines: tuple[str, ...]
) -> tuple[bytes, str]:
    if _ascii_compatible(codec) or codec is None:
        banner = _plain_banner(lines, _eol(content))
        try:
            return banner.encode(codec.name if codec else "ascii") + content, charset
        except UnicodeEncodeError:
            pass  # the charset cannot spell a banner name: the part becomes UTF-8 below
    if codec is None:
        raise PolicyError(
            f"a text part uses the unknown charset {charset!r}; cannot add a non-ASCII banner to it"
        )
    text = _decoded(content, codec, charset)
    text = _plain_banner(lines, _eol(text)) + text
    if not _ascii_compatible(codec):
        try:
            return codec.encode(text)[0], charset  # UTF-16 and friends can spell every name
        except UnicodeEncodeError:
            pass
    return text.encode("utf-8"), "utf-8"


def _html_inserted(
    content: bytes, charset: str, codec: codecs.CodecInfo | None, lines: tuple[str, ...]
) -> tuple[bytes, str]:
    if _ascii_compatible(codec) or codec is None:
        # Character references let any ASCII-based charset (even an unknown one) hold every name.
        banner = _html_banner(lines, _eol(content)).encode("ascii", "xmlcharrefreplace")
        offset = _html_offset(content)
        return content[:offset] + banner + content[offset:], charset
    text = _decoded(content, codec, charset)
    offset = _html_offset(text)
    text = text[:offset] + _html_banner(lines, _eol(text)) + text[offset:]
    return codec.encode(text, "xmlcharrefreplace")[0], charset


def _html_offset(content: bytes | str) -> int:
    """Where the banner goes in an HTML document (bytes of an ASCII-based charset, or text)."""
    for pattern in _ANCHOR_PATTERNS:
        if isinstance(content, bytes):
            in_bytes = re.search(pattern.encode("ascii"), content, re.IGNORECASE)
            if in_bytes:
                return in_bytes.end()
        else:
            in_text = re.search(pattern, content, re.IGNORECASE)
            if in_text:
                return in_text.end()
    return 0


def _decoded(content: bytes, codec: codecs.CodecInfo, charset: str) -> str:
    try:
        return codec.decode(content)[0]
    except UnicodeDecodeError:
        raise PolicyError(
            f"a text part is not valid {charset}; the gateway cannot add the banner without damaging it"
        ) from None


def _needs_quoting(content: bytes, seven_bit: bool) -> bool:
    if seven_bit and not content.isascii():
        return True
    return any(len(line) > _MAX_LINE for line in content.split(b"\n"))


# --- transfer encodings --------------------------------------------------------------------------


def _transfer_decode(body: bytes, encoding: str) -> bytes:
    if encoding == "quoted-printable":
        return binascii.a2b_qp(body)
    if encoding == "base64":
        try:
            return binascii.a2b_base64(body)
        except binascii.Error:
            raise PolicyError("a text part has invalid base64; cannot add the banner to it") from None
    return body


def _transfer_encode(content: bytes, encoding: str, trailing_crlf: bool) -> bytes:
    if encoding == "quoted-printable":
        encoded = binascii.b2a_qp(content, istext=True)
        encoded = _BARE_CR.sub(b"=0D", encoded)
        return _crlf_line_ends(encoded)
    if encoding == "base64":
        encoded = base64.encodebytes(content).replace(b"\n", CRLF)
        return encoded if trailing_crlf else encoded.removesuffix(CRLF)
    return content


# --- header fields ---------------------------------------------------------------------------------


def _field_name(field: bytes) -> str:
    return field.split(b":", 1)[0].strip().decode("ascii", "replace").lower() if b":" in field else ""


def _has_field(fields: list[bytes], name: str) -> bool:
    return any(_field_name(field) == name for field in fields)


def _folded(name: str, value: str) -> bytes:
    """``Name: value`` with CRLF, folded at parameter boundaries when long."""
    line = f"{name}: {value}"
    if len(line) > _FOLD_AT and "; " in value:
        line = f"{name}: " + ";\r\n ".join(value.split("; "))
    return line.encode("utf-8", "surrogateescape") + CRLF


def _set_field(fields: list[bytes], name: str, value: str) -> None:
    new = _folded(name, value)
    for index, field in enumerate(fields):
        if _field_name(field) == name.lower():
            fields[index] = new
            return
    fields.append(new)


def _set_param_charset(fields: list[bytes], headers: Message, charset: str) -> None:
    updated = Message()
    updated["Content-Type"] = headers.get("content-type", "text/plain")
    updated.set_param("charset", charset)
    _set_field(fields, "Content-Type", " ".join(str(updated["Content-Type"]).split()))


def _add_cc(root: _Entity, fields: list[bytes], mailboxes: tuple[Address, ...]) -> None:
    values = tuple(str(v) for v in (*root.headers.get_all("to", []), *root.headers.get_all("cc", [])))
    present = set(
        _addresses_in(values) if sum(map(len, values)) <= _CACHED_ADDRESS_CHARS else _lowered(values)
    )
    new: list[bytes] = []
    for mailbox in mailboxes:
        if mailbox.address.lower() in present:
            continue
        present.add(mailbox.address.lower())
        new.append(_format_mailbox(mailbox))
    if not new:
        return
    joined = b",\r\n ".join(new)
    for index, field in enumerate(fields):
        if _field_name(field) == "cc":
            head, _, value = field.removesuffix(CRLF).partition(b":")
            if value.strip():
                fields[index] = field.removesuffix(CRLF).rstrip(b" \t") + b",\r\n " + joined + CRLF
            else:
                fields[index] = head + b": " + joined + CRLF
            return
    position = max(
        (index + 1 for index, field in enumerate(fields) if _field_name(field) == "to"), default=len(fields)
    )
    fields.insert(position, b"Cc: " + joined + CRLF)


# The same To and Cc values recur from message to message, and getaddresses is the costliest step
# of adding a Cc: remember recent answers, for values short enough that the cache stays small.
_CACHED_ADDRESS_CHARS = 1000


@lru_cache(maxsize=256)
def _addresses_in(values: tuple[str, ...]) -> frozenset[str]:
    return _lowered(values)


def _lowered(values: tuple[str, ...]) -> frozenset[str]:
    """Every address in the header ``values``, lower-cased (PolicyError if they cannot be read)."""
    try:
        mailboxes = read_mailboxes(values)
    except MalformedAddressHeader as malformed:
        raise PolicyError(f"the To or Cc header is malformed ({malformed}); cannot add to Cc") from None
    return frozenset(address.lower() for _name, address in mailboxes)


def _format_mailbox(mailbox: Address) -> bytes:
    address = mailbox.address.strip()
    if not address or _ADDRESS_FORBIDDEN.search(address) or address.count("@") != 1:
        raise PolicyError("refusing to add a malformed address to Cc")
    name = " ".join("".join(ch for ch in mailbox.name if ch.isprintable()).split())
    if not name:
        return address.encode("utf-8")
    if name.isascii():
        return formataddr((name, address)).encode("utf-8")
    encoded = Header(name, "utf-8", header_name="Cc").encode(linesep="\r\n")
    return f"{encoded} <{address}>".encode()
