"""Message bytes from DATA: find the end of data in a byte stream, undo dot-stuffing, vet the bytes.

This is the sans-I/O half of the SMTP DATA phase. ``DataReader`` scans whole chunks with
``bytes.find`` for ``<CRLF>.<CRLF>`` instead of reading line by line (aiosmtpd's per-line loop is the
hot spot for large messages), and only that exact sequence ends the data: ``<LF>.<LF>``,
``<LF>.<CRLF>`` or ``<CR>.<CRLF>`` never do, so one submission can never become two (SMTP
smuggling). Bare CR, bare LF and NUL are then refused for the whole message, because downstream
parsers disagree about them (Python's parser reads ``Subject: x<LF>Bcc: y`` as two header fields).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email.policy import default as default_policy

from gateway import replies
from gateway.errors import MessageRefused
from gateway.policy.address_header import address_problem
from gateway.replies import Reply

TERMINATOR = b"\r\n.\r\n"
_EMPTY_MESSAGE = b".\r\n"
# A header field line: a field name of printable ASCII without ":" and no space before the colon.
_FIELD_LINE = re.compile(rb"[!-9;-~]+:")

# The shapes nearly every From and Sender has, read without the email package (see _plain_addresses):
# "addr", "<addr>", "Words <addr>" or "\"Quoted\" <addr>", with addr a dot-atom @ dot-atom (RFC 5322).
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
_DOT_ATOM = rf"{_ATEXT}+(?:\.{_ATEXT}+)*"
_ADDR_SPEC = rf"{_DOT_ATOM}@{_DOT_ATOM}"
# Words of atext without "=" and "?", so a display name is never an encoded word; a quoted string
# without backslash escapes.
_DISPLAY_NAME = r'(?:"[ !#-\[\]-~]*"|[A-Za-z0-9!#$%&\'*+/^_`{|}~-]+(?:[ \t]+[A-Za-z0-9!#$%&\'*+/^_`{|}~-]+)*)'
_PLAIN_MAILBOX = re.compile(rf"[ \t]*(?:{_DISPLAY_NAME}?[ \t]*<({_ADDR_SPEC})>|({_ADDR_SPEC}))[ \t]*")


# From and Sender name the sender (and co-authors): longer fields are refused before parsing.
MAX_ORIGINATOR_FIELD = 2000


class BadMessage(MessageRefused):
    """The message bytes or header are unacceptable; ``response`` is the reply for the client."""

    def __init__(self, response: Reply) -> None:
        super().__init__(str(response))
        self.response = response


class DataReader:
    """Consume one DATA section from an input buffer (the bytes after the DATA command's CRLF).

    Call ``consume(buffer)`` whenever more bytes arrived. It removes what it used from ``buffer``
    and returns True once the terminator was found; bytes after it (pipelined commands) stay in
    ``buffer``. Over ``max_size`` bytes the data is discarded while scanning on to the terminator,
    so memory stays bounded and the session stays in step.
    """

    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        # Dot-stuffing adds at most one byte per line of at least three bytes ("..<CRLF>"), so beyond
        # this many raw bytes the unstuffed message is certainly too big.
        self._discard_above = max_size * 4 // 3 + len(TERMINATOR)
        self._at_start = True
        self._scanned = 0
        self._dropped = 0
        self._done = False
        self.too_big = False
        self.content: bytes | None = None
        self.size = 0

    def consume(self, buffer: bytearray) -> bool:
        if self._done:
            raise RuntimeError("DataReader already finished")
        if self._at_start:
            # The DATA command's own CRLF precedes the stream, so ".<CRLF>" first is an empty message.
            if len(buffer) < len(_EMPTY_MESSAGE) and _EMPTY_MESSAGE.startswith(bytes(buffer)):
                return False
            self._at_start = False
            if buffer.startswith(_EMPTY_MESSAGE):
                del buffer[: len(_EMPTY_MESSAGE)]
                self._finish(b"")
                return True
        index = buffer.find(TERMINATOR, max(self._scanned - len(TERMINATOR) + 1, 0))
        if index < 0:
            self._scanned = len(buffer)
            if len(buffer) > self._discard_above:
                keep = len(TERMINATOR) - 1
                self._dropped += len(buffer) - keep
                del buffer[:-keep]
                self._scanned = keep
                self.too_big = True
            return False
        raw = bytes(buffer[: index + 2])
        del buffer[: index + len(TERMINATOR)]
        self._finish(raw)
        return True

    def _finish(self, raw: bytes) -> None:
        self._done = True
        if self.too_big:
            self.size = self._dropped + len(raw)
            return
        # RFC 5321 4.5.2: drop the first character of every line that starts with a period.
        content = (raw[1:] if raw.startswith(b".") else raw).replace(b"\r\n.", b"\r\n")
        self.size = len(content)
        if self.size > self.max_size:
            self.too_big = True
            return
        self.content = content


def has_long_line(content: bytes, limit: int) -> bool:
    """True if a line of ``content`` is longer than ``limit`` bytes, not counting its CRLF.

    Linear and cheap for normal mail: it looks for a newline in blocks of about ``limit / 3`` bytes and
    measures a line only around a block without one. (A regex for ``[^\n]{limit}`` retries at every
    offset and costs ~50 ms per 200 KB; splitting into lines allocates an object per line.)
    """
    block = max(1, (limit + 1) // 3)
    size = len(content)
    position = 0
    while position < size:
        stop = min(position + block, size)
        if content.find(b"\n", position, stop) >= 0:
            position = stop
            continue
        # Every line longer than ``limit`` covers a whole block after ``position``, so it is found here.
        start = content.rfind(b"\n", 0, position) + 1
        end = content.find(b"\n", position)
        if end < 0:
            end = size
        length = end - start - (1 if end < size and content[end - 1 : end] == b"\r" else 0)
        if length > limit:
            return True
        position = end + 1
    return False


def check_bytes(content: bytes, max_line_length: int) -> None:
    """Refuse NUL, bare CR, bare LF and lines longer than ``max_line_length`` (without CRLF)."""
    if b"\0" in content:
        raise BadMessage(replies.NUL_IN_DATA)
    crlf = content.count(b"\r\n")
    if content.count(b"\r") != crlf or content.count(b"\n") != crlf:
        raise BadMessage(replies.BARE_LINE_ENDING)
    if has_long_line(content, max_line_length):
        raise BadMessage(replies.line_too_long(max_line_length))


def header_section(content: bytes) -> bytes:
    """The header fields (each line with its CRLF), without the empty line and the body."""
    if content.startswith(b"\r\n"):
        return b""
    end = content.find(b"\r\n\r\n")
    return content if end < 0 else content[: end + 2]


@dataclass(frozen=True)
class HeaderFacts:
    """What the SMTP layer needs from the header: originator addresses (lower-cased) and trace fields."""

    from_addresses: tuple[str, ...]
    sender_addresses: tuple[str, ...]
    has_date: bool
    has_message_id: bool


def read_headers(content: bytes) -> HeaderFacts:
    """Parse just the header section. Malformed lines or a missing/duplicate From raise MessageRefused.

    Call after ``check_bytes`` (so every line ends in CRLF). Strict on purpose: a line that is not a
    header field (``From : x``, a mbox ``From `` line) would be read differently by other parsers.
    """
    section = header_section(content)
    lines = section.split(b"\r\n")[:-1] if section else []
    for number, line in enumerate(lines):
        folded = line[:1] in (b" ", b"\t")
        if (folded and number == 0) or (not folded and not _FIELD_LINE.match(line)):
            raise BadMessage(replies.HEADER_MALFORMED)
    fields = _fields(lines)
    froms = fields.get("from", [])
    if not froms:
        raise BadMessage(replies.HEADER_FROM_MISSING)
    if len(froms) > 1:
        raise BadMessage(replies.HEADER_FROM_DUPLICATE)
    senders = fields.get("sender", [])
    if len(senders) > 1:
        raise BadMessage(replies.HEADER_SENDER_DUPLICATE)
    from_addresses = _header_addresses("From", froms[0])
    if not from_addresses:
        raise BadMessage(replies.HEADER_FROM_UNREADABLE)
    sender_addresses = _header_addresses("Sender", senders[0]) if senders else ()
    if senders and not sender_addresses:
        raise BadMessage(replies.HEADER_FROM_UNREADABLE)
    return HeaderFacts(
        from_addresses=from_addresses,
        sender_addresses=sender_addresses,
        has_date="date" in fields,
        has_message_id="message-id" in fields,
    )


def _fields(lines: list[bytes]) -> dict[str, list[bytes]]:
    """Field values by lower-cased name, folded lines joined (every line was checked above).

    Only From and Sender need the email package's (slow) structured parsing; splitting the rest
    ourselves halves the cost of this check on the per-message path.
    """
    # Each field's lines are collected and joined once: appending to a bytes value per folded line
    # copied it every time, quadratic in a field folded over thousands of lines (on the event loop).
    pieces: dict[str, list[list[bytes]]] = {}
    current: list[bytes] = []
    for line in lines:
        if line[:1] in (b" ", b"\t"):
            current.append(line)  # a fold on the first line was refused by the caller
            continue
        name, _, value = line.partition(b":")
        current = [value]
        pieces.setdefault(name.decode("ascii").lower(), []).append(current)
    return {name: [b"\r\n".join(field) for field in fields] for name, fields in pieces.items()}


def _header_addresses(name: str, value: bytes) -> tuple[str, ...]:
    """Every addr-spec of the From or Sender field ``value``, lower-cased; () if any is unreadable.

    A field the parser cannot read at all raises BadMessage naming the problem (550 5.6.0): the
    email package raises IndexError, AttributeError or RecursionError on some malformed fields,
    which must never become the 451 of an internal error, retried for days.
    """
    if len(value) > MAX_ORIGINATOR_FIELD:
        # The email package's structured parser grows faster than linearly with a field's length,
        # and this runs on the event loop: thousands of addresses would stall every session.
        too_long = f"it is longer than {MAX_ORIGINATOR_FIELD} characters (it should name only the sender)"
        raise BadMessage(replies.header_malformed(name, too_long))
    plain = _plain_addresses(value)
    if plain is not None:
        return plain
    problem = address_problem(value.decode("utf-8", "surrogateescape"))
    if problem is not None:
        raise BadMessage(replies.header_malformed(name, problem))
    try:
        return _addresses(_structured(name, value))
    except RecursionError:
        raise BadMessage(replies.header_malformed(name, "it is nested too deeply to read")) from None
    except Exception:  # the parser's own failure on this field (see above): the field is the fault
        raise BadMessage(replies.header_malformed(name, "it cannot be read as a list of addresses")) from None


def _plain_addresses(value: bytes) -> tuple[str, ...] | None:
    """The addresses of a field in one of the plain shapes of ``_PLAIN_MAILBOX``; None for any other.

    The email package's address parser costs ~50 us a message on the event loop. For these shapes
    it finds exactly the addr-specs written, so reading them here gives the same decisions; anything
    else (comments, folding, encoded words, quoted local parts, groups, UTF-8) goes to the parser.
    """
    if not value.isascii() or b"=?" in value:
        return None
    text = value.decode("ascii")
    # A comma inside a quoted display name does not separate addresses: leave such lists to the parser.
    items = text.split(",") if '"' not in text else [text]
    found: list[str] = []
    for item in items:
        match = _PLAIN_MAILBOX.fullmatch(item)
        if match is None:
            return None
        found.append((match.group(1) or match.group(2)).lower())
    return tuple(found)


def _structured(name: str, value: bytes) -> object:
    # RFC 6532 allows UTF-8 in header fields, so addresses compare as Unicode. Bytes that are not
    # UTF-8 stay surrogate escapes, which the email package cannot read as an address (fail closed).
    text = value.decode("utf-8", "surrogateescape").lstrip(" \t")
    return default_policy.header_fetch_parse(name, text)


def _addresses(header: object) -> tuple[str, ...]:
    """Every addr-spec of an address header, lower-cased; () if any of them is unreadable."""
    try:
        found = tuple(address.addr_spec for address in header.addresses)  # type: ignore[attr-defined]
    except Exception:  # the header parser has raised on hostile input before; fail closed
        return ()
    if not all("@" in address and not address.startswith("@") for address in found):
        return ()
    return tuple(address.lower() for address in found)
