"""A decision as milter actions: the refusal's reply code, or the edits that make the MTA's copy the
message the gateway would have relayed (pure: no I/O).

The decision layer says what the gateway would relay (``Disposition.relay``: content and envelope
recipients). The MTA already holds the message as submitted, so the milter sends the difference:
header fields changed, inserted where the gateway put them, or removed (``chgheader``/``insheader``), the body
replaced when a banner went into it (``replbody``; the rewriter never touches signed parts, so
their bytes are the same in the replacement), envelope recipients added or removed
(``addrcpt``/``delrcpt``). A hold adds ``quarantine``: the edited copy waits in Postfix's hold queue.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence

from kilter.protocol import (
    Accept,
    AddRecipient,
    ChangeHeader,
    Discard,
    InsertHeader,
    Quarantine,
    RemoveRecipient,
    ReplaceBody,
    ReplyCode,
)
from kilter.protocol.messages import Message

from gateway.milter.session import MAX_CHUNK, Envelope, crlf
from gateway.replies import Reply

Field = tuple[str, bytes]


def split_message(content: bytes) -> tuple[list[Field], bytes]:
    """Header fields (name, value with its leading space, folds as CRLF) and the body of ``content``."""
    head, separator, body = content.partition(b"\r\n\r\n")
    if not separator:
        head, body = content.removesuffix(b"\r\n"), b""
    fields: list[Field] = []
    for line in head.split(b"\r\n"):
        if line[:1] in (b" ", b"\t") and fields:
            name, value = fields[-1]
            fields[-1] = (name, value + b"\r\n" + line)
        elif b":" in line:
            raw_name, _, value = line.partition(b":")
            fields.append((raw_name.decode("ascii", "replace").strip(), value))
    return fields, body


def _folded(value: bytes) -> bytes:
    # An MTA takes folded values with a bare LF (Postfix stores a CR in the value otherwise).
    return crlf(value).replace(b"\r\n", b"\n")


def header_edits(before: Sequence[Field], after: Sequence[Field], hidden: int = 0) -> list[Message]:
    """The edits that turn header fields ``before`` into ``after``, exactly, order included.

    The fields both have in common (the longest common subsequence) stay; every other field of
    ``before`` is removed (``chgheader`` with an empty value, bottom up, so the occurrence index of
    each field above is still the one it had) and every other field of ``after`` is inserted at its
    final position, top to bottom (``insheader``): the fields above it are final by then. So the
    Cc the rewriter adds sits where it put it, and a relay header a client forged is replaced by
    the gateway's own at the top, as in gateway mode. ``hidden``: fields the MTA put on top without
    showing them to the milter, which its insert positions count (Postfix's own Received field).
    """
    matcher = difflib.SequenceMatcher(None, _keys(before), _keys(after), autojunk=False)
    kept_before: set[int] = set()
    kept_after: set[int] = set()
    for block in matcher.get_matching_blocks():
        kept_before.update(range(block.a, block.a + block.size))
        kept_after.update(range(block.b, block.b + block.size))
    edits: list[Message] = []
    for position in range(len(before) - 1, -1, -1):
        if position not in kept_before:
            name = before[position][0]
            edits.append(ChangeHeader(_occurrence(before, position), name, b""))
    for position, (name, value) in enumerate(after):
        if position not in kept_after:
            edits.append(InsertHeader(position + hidden, name, _folded(value)))
    return edits


def _keys(fields: Sequence[Field]) -> list[tuple[str, bytes]]:
    return [(name.lower(), crlf(value)) for name, value in fields]


def _occurrence(fields: Sequence[Field], position: int) -> int:
    """Which occurrence of its name the field at ``position`` is, counting from 1 (``chgheader``)."""
    key = fields[position][0].lower()
    return sum(1 for name, _ in fields[: position + 1] if name.lower() == key)


def recipient_edits(before: Sequence[str], after: Sequence[str]) -> list[Message]:
    """Envelope recipients to add and to remove (compared without regard to case)."""
    had = {address.lower() for address in before}
    has = {address.lower() for address in after}
    added: list[Message] = [AddRecipient(f"<{a}>") for a in dict.fromkeys(after) if a.lower() not in had]
    removed: list[Message] = [
        RemoveRecipient(f"<{a}>") for a in dict.fromkeys(before) if a.lower() not in has
    ]
    return added + removed


def message_edits(envelope: Envelope, content: bytes, rcpt_tos: Sequence[str]) -> list[Message]:
    """Every edit that makes the MTA's copy of ``envelope`` into ``content`` for ``rcpt_tos``."""
    fields, body = split_message(content)
    edits = header_edits(envelope.headers, fields, envelope.hidden_headers)
    if crlf(body) != crlf(envelope.body):
        edits.extend(ReplaceBody(body[start : start + MAX_CHUNK]) for start in range(0, len(body), MAX_CHUNK))
    edits.extend(recipient_edits(envelope.rcpt_tos, rcpt_tos))
    return edits


def reply_code(reply: Reply) -> ReplyCode:
    """A refusal as the milter's reply code: the gateway's code, enhanced status and text."""
    # The MTA reads the text printf-style ('%' must be doubled) and needs a NUL at the end.
    text = str(reply).replace("%", "%%")
    return ReplyCode(text.encode("ascii", "replace") + b"\0")


def refuse(reply: Reply) -> list[Message]:
    return [reply_code(reply)]


def relay(envelope: Envelope, content: bytes, rcpt_tos: Sequence[str]) -> list[Message]:
    """Deliver as the gateway would have relayed it."""
    return [*message_edits(envelope, content, rcpt_tos), Accept()]


def hold(envelope: Envelope, release: bytes, rcpt_tos: Sequence[str], reference: str) -> list[Message]:
    """Into the MTA's hold queue, already as it will be released (the review desk has the record)."""
    reason = f"conduct-gateway hold {reference}: waiting for review"
    return [*message_edits(envelope, release, rcpt_tos), Quarantine(reason), Accept()]


def consume() -> list[Message]:
    """A message for the gateway itself (a reviewer's decision): taken, and never delivered."""
    return [Discard()]


def pass_through() -> list[Message]:
    """Delivered untouched."""
    return [Accept()]
