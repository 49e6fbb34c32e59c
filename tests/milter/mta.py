"""The MTA's side of the milter protocol, for tests: what Postfix sends, and what it does with the answers.

``conversation`` packs the events Postfix sends for one message (kilter-protocol's message classes
pack either side); ``responses`` unpacks what a filter sent back; ``MtaCopy.apply`` makes the
edits to the MTA's copy as Postfix's cleanup does (header indexes count occurrences of a name from 1,
an empty value deletes, ``insheader`` index 0 is the top, ``replbody`` chunks are concatenated).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address

from kilter.protocol import (
    AddHeader,
    AddRecipient,
    Body,
    ChangeHeader,
    Connect,
    Data,
    EndOfHeaders,
    EndOfMessage,
    EnvelopeFrom,
    EnvelopeRecipient,
    Header,
    Helo,
    InsertHeader,
    Macro,
    NeedsMore,
    Negotiate,
    Quarantine,
    RemoveRecipient,
    ReplaceBody,
)
from kilter.protocol.buffer import SimpleBuffer
from kilter.protocol.messages import ActionFlags, Message, ProtocolFlags

from gateway.milter.actions import split_message
from gateway.milter.session import pack

OFFER = Negotiate(6, ActionFlags.ALL, ProtocolFlags(0x1FFFFF))


def conversation(
    content: bytes,
    mail_from: str,
    rcpt_tos: Sequence[str],
    *,
    queue_id: str = "",
    login: str = "",
    negotiate: bool = True,
    chunk: int = 65535,
    complete: bool = True,
) -> bytes:
    """The bytes Postfix sends for one message (headers with their leading space, LF folds)."""
    fields, body = split_message(content)
    macros = {"i": queue_id, "{mail_addr}": mail_from}
    if login:
        macros["{auth_authen}"] = login
    events: list[Message] = []
    if negotiate:
        events += [OFFER, Connect("client.example.test", IPv4Address("192.0.2.7"), 40000), Helo("client")]
    events += [Macro(ord("M"), macros), EnvelopeFrom(f"<{mail_from}>".encode())]
    events += [EnvelopeRecipient(f"<{r}>".encode()) for r in rcpt_tos]
    events += [Data()]
    events += [Header(name, value.replace(b"\r\n", b"\n")) for name, value in fields]
    events += [EndOfHeaders()]
    events += [Body(body[i : i + chunk]) for i in range(0, len(body), chunk)]
    if complete:
        events += [Macro(ord("E"), {"i": queue_id}), EndOfMessage(b"")]
    return b"".join(pack(event) for event in events)


def responses(data: bytes) -> list[Message]:
    """Every complete message a filter sent."""
    buffer = SimpleBuffer(len(data) + 16)
    buffer[:] = data
    found: list[Message] = []
    while True:
        try:
            message, size = Message.unpack(buffer)
        except NeedsMore:
            return found
        message.freeze()
        found.append(message)
        del buffer[:size]


@dataclass
class MtaCopy:
    """The MTA's copy of one message, as the edits leave it."""

    headers: list[tuple[str, bytes]]
    body: bytes
    rcpt_tos: list[str]
    quarantined: str | None = None
    replaced: list[bytes] = field(default_factory=list)

    @classmethod
    def of(cls, content: bytes, rcpt_tos: Iterable[str]) -> MtaCopy:
        fields, body = split_message(content)
        return cls(list(fields), body, list(rcpt_tos))

    def apply(self, edits: Iterable[Message]) -> MtaCopy:
        for edit in edits:
            if isinstance(edit, InsertHeader):
                self.headers.insert(edit.index, (edit.name, bytes(edit.value)))
            elif isinstance(edit, ChangeHeader):
                self._change(edit.index, edit.name, bytes(edit.value))
            elif isinstance(edit, AddHeader):
                self.headers.append((edit.name, bytes(edit.value)))
            elif isinstance(edit, ReplaceBody):
                self.replaced.append(bytes(edit.content))
            elif isinstance(edit, AddRecipient):
                self.rcpt_tos.append(edit.address.strip("<>"))
            elif isinstance(edit, RemoveRecipient):
                address = edit.address.strip("<>").lower()
                self.rcpt_tos = [r for r in self.rcpt_tos if r.lower() != address]
            elif isinstance(edit, Quarantine):
                self.quarantined = edit.reason
        if self.replaced:
            self.body, self.replaced = b"".join(self.replaced), []
        return self

    def _change(self, index: int, name: str, value: bytes) -> None:
        positions = [i for i, (other, _) in enumerate(self.headers) if other.lower() == name.lower()]
        if index > len(positions):
            if value:
                self.headers.append((name, value))
            return
        position = positions[index - 1]
        if value:
            self.headers[position] = (name, value)
        else:
            del self.headers[position]

    @property
    def content(self) -> bytes:
        """Header and body with CRLF line ends throughout."""
        head = b"".join(
            name.encode() + b":" + value.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n") + b"\r\n"
            for name, value in self.headers
        )
        return head + b"\r\n" + self.body
