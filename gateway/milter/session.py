"""One milter conversation without I/O: bytes from the MTA in, replies out, one event per message.

The parsing and the protocol's state checks are kilter-protocol's (``FilterProtocol``); this module
negotiates what the gateway needs (the macros that name the sender and the queue id, the edits it
makes, headers with their leading space so the message is rebuilt byte for byte), collects the
envelope, headers and body of each message, and hands a ``MessageComplete`` to the server at the end
of the message. The server answers it with ``answer(actions)``. Every other MTA event is answered
``continue`` at once: the gateway decides on the whole message, as its SMTP intake does.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address

from kilter.protocol import (
    Abort,
    Body,
    Close,
    Connect,
    Continue,
    EndOfHeaders,
    EndOfMessage,
    EnvelopeFrom,
    EnvelopeRecipient,
    FilterProtocol,
    Header,
    InsufficientSpace,
    Macro,
    NeedsMore,
    Negotiate,
    UnknownMessage,
)
from kilter.protocol.buffer import SimpleBuffer
from kilter.protocol.core import UPDATE_FLAG_MAP
from kilter.protocol.messages import ActionFlags, Message, ProtocolFlags, Stage

PROTOCOL_VERSION = 6
# Postfix sends body chunks of at most 64 KiB; every MTA message fits in this with room to spare.
BUFFER_SIZE = 256 * 1024
MAX_CHUNK = 65535  # the largest body chunk a filter may send back (replbody)

# The edits the gateway may make; quarantine is Postfix's hold queue.
WANTED_ACTIONS = (
    ActionFlags.ADD_HEADERS
    | ActionFlags.CHANGE_HEADERS
    | ActionFlags.CHANGE_BODY
    | ActionFlags.ADD_RECIPIENT
    | ActionFlags.DELETE_RECIPIENT
    | ActionFlags.QUARANTINE
)
# Header values exactly as sent (with their leading space): the message is rebuilt byte for byte.
WANTED_PROTOCOL = ProtocolFlags.HEADER_LEADING_SPACE
# Macros asked for at MAIL FROM and at the end of the message (Postfix sends these by default too).
SENDER_MACROS = ("{auth_authen}", "{mail_addr}", "i")
END_MACROS = ("i",)


class MilterProtocolError(Exception):
    """The MTA sent something the protocol does not allow: the connection is closed."""


@dataclass(frozen=True)
class Envelope:
    """One message as the MTA passed it on: envelope, macros, header fields and body."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    macros: dict[str, str]
    headers: tuple[tuple[str, bytes], ...]
    body: bytes
    client_address: str = ""
    oversized: bool = False  # more than the size limit arrived; the content is cut short

    @property
    def login(self) -> str:
        """The SASL login the MTA authenticated ("" for unauthenticated mail)."""
        return self.macros.get("auth_authen", "")

    @property
    def hidden_headers(self) -> int:
        """Header fields above the first one the MTA showed: Postfix hides the Received field it
        adds from milters, but counts it in the positions of inserted fields."""
        return 1 if self.macros.get("v", "").startswith("Postfix") else 0

    @property
    def queue_id(self) -> str:
        """The MTA's queue id for the message ("" when it sent none)."""
        return self.macros.get("i", "")

    @property
    def content(self) -> bytes:
        """The message as one byte string, CRLF line ends (what the SMTP intake would have read)."""
        return header_block(self.headers) + b"\r\n" + self.body


def header_block(headers: Iterable[tuple[str, bytes]]) -> bytes:
    """Header fields as bytes: ``Name:value`` CRLF, folds as CRLF (values keep their leading space)."""
    return b"".join(name.encode("ascii") + b":" + crlf(value) + b"\r\n" for name, value in headers)


def crlf(value: bytes) -> bytes:
    """Line ends as CRLF, whichever the MTA used (Postfix folds header values with a bare LF)."""
    return value.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


@dataclass(frozen=True)
class MessageComplete:
    """The end of a message: the server must call ``answer`` with what to do with it."""

    envelope: Envelope


@dataclass
class _Transaction:
    mail_from: str = ""
    rcpt_tos: list[str] = field(default_factory=list)
    headers: list[tuple[str, bytes]] = field(default_factory=list)
    body: bytearray = field(default_factory=bytearray)
    oversized: bool = False


def _address(raw: bytes) -> str:
    """An envelope address as the MTA sent it (``<a@b>``), without its angle brackets."""
    text = raw.decode("utf-8", "replace").strip()
    return text[1:-1] if text.startswith("<") and text.endswith(">") else text


def _macro_name(name: str) -> str:
    return name[1:-1] if name.startswith("{") and name.endswith("}") else name


def pack(message: Message) -> bytes:
    """One message as the bytes the other side reads."""
    size = 1024
    while True:
        buffer = SimpleBuffer(size)
        try:
            message.pack(buffer)
        except InsufficientSpace:
            size *= 4
            continue
        return buffer[:].tobytes()


class MilterSession:
    """The filter side of one MTA connection: ``receive`` bytes, then ``answer`` each message."""

    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        self._protocol = FilterProtocol()
        self._buffer = SimpleBuffer(BUFFER_SIZE)
        self._macros: dict[str, str] = {}
        self._client = ""
        self._transaction = _Transaction()
        self.closed = False
        self.waiting = False  # a MessageComplete is out, and ``answer`` has not been called yet

    def receive(self, data: bytes) -> tuple[bytes, list[MessageComplete]]:
        """Take bytes from the MTA; return the replies to send and the messages to decide."""
        replies: list[bytes] = []
        complete: list[MessageComplete] = []
        view = memoryview(data)
        while view:
            room = self._buffer.available
            if room == 0:
                raise MilterProtocolError("a milter message larger than the protocol allows")
            self._buffer[:] = bytes(view[:room])
            view = view[room:]
            try:
                for message in self._protocol.read_from(self._buffer):
                    message.freeze()  # the buffer is reused once the loop goes on
                    self._event(message, replies, complete)
            except (UnknownMessage, NeedsMore, TypeError, ValueError) as exc:
                raise MilterProtocolError(f"{type(exc).__name__}: {exc}") from exc
        return b"".join(replies), complete

    def answer(self, actions: Sequence[Message]) -> bytes:
        """What to do with the message of the last ``MessageComplete``: edits, then one response."""
        if not self.waiting:
            raise MilterProtocolError("no message is waiting for an answer")
        answer = b"".join(self._respond(action) for action in actions)
        self.waiting = False
        return answer

    def _event(self, message: Message, replies: list[bytes], complete: list[MessageComplete]) -> None:
        if isinstance(message, Macro):
            self._macros.update((_macro_name(k), v) for k, v in message.macros.items())
            return
        if isinstance(message, Close):
            self.closed = True
            return
        if isinstance(message, Abort):
            self._transaction = _Transaction()
            return
        if isinstance(message, Negotiate):
            replies.append(self._respond(self._negotiate(message)))
            return
        if isinstance(message, Connect):
            address = message.address
            self._client = str(address) if isinstance(address, IPv4Address | IPv6Address) else ""
        elif isinstance(message, EnvelopeFrom):
            self._transaction = _Transaction(mail_from=_address(bytes(message.sender)))
        elif isinstance(message, EnvelopeRecipient):
            self._transaction.rcpt_tos.append(_address(bytes(message.recipient)))
        elif isinstance(message, Header):
            self._add(message.name, bytes(message.value))
        elif isinstance(message, Body):
            self._add_body(bytes(message.content))
        elif isinstance(message, EndOfMessage):
            self._add_body(bytes(message.content))
            complete.append(MessageComplete(self._envelope()))
            self._transaction = _Transaction()
            self.waiting = True
            return
        elif isinstance(message, EndOfHeaders):
            pass
        if self._protocol.needs_response(message):  # type: ignore[arg-type]
            replies.append(self._respond(Continue()))

    def _add(self, name: str, value: bytes) -> None:
        transaction = self._transaction
        size = sum(len(n) + len(v) + 3 for n, v in transaction.headers) + len(name) + len(value)
        if size > self.max_size:
            transaction.oversized = True
            return
        transaction.headers.append((name, value))

    def _add_body(self, chunk: bytes) -> None:
        transaction = self._transaction
        if len(transaction.body) + len(chunk) > self.max_size:
            transaction.oversized = True
            return
        transaction.body += chunk

    def _envelope(self) -> Envelope:
        transaction = self._transaction
        return Envelope(
            mail_from=transaction.mail_from,
            rcpt_tos=tuple(transaction.rcpt_tos),
            macros=dict(self._macros),
            headers=tuple(transaction.headers),
            body=bytes(transaction.body),
            client_address=self._client,
            oversized=transaction.oversized,
        )

    def _negotiate(self, offer: Negotiate) -> Negotiate:
        macros: dict[Stage, Sequence[str]] = {}
        actions = WANTED_ACTIONS & offer.action_flags
        if ActionFlags.SETSYMLIST in offer.action_flags:
            macros = {Stage.ENVELOPE_FROM: SENDER_MACROS, Stage.END_MESSAGE: END_MACROS}
            actions |= ActionFlags.SETSYMLIST
        return Negotiate(
            min(PROTOCOL_VERSION, offer.version),
            actions,
            WANTED_PROTOCOL & offer.protocol_flags,
            macros,
        )

    def _respond(self, message: Message) -> bytes:
        buffer = SimpleBuffer(len(pack(message)))  # the protocol checks the message, then packs it
        self._protocol.write_to(buffer, message)  # type: ignore[arg-type]  # Quarantine is one too
        return buffer[:].tobytes()

    @property
    def negotiated_actions(self) -> ActionFlags:
        """The edits the MTA agreed to (it may refuse some; the server then fails closed)."""
        flags = ActionFlags.NONE
        for ident, flag in UPDATE_FLAG_MAP.items():
            if ident in self._protocol.actions:
                flags |= flag
        return flags
