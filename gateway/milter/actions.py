"""A decision as milter actions: the refusal's reply code, or the edits that make the MTA's copy the
message the gateway would have relayed (pure: no I/O).

The decision layer says what the gateway would relay (``Disposition.relay``: content and envelope
recipients). The MTA already holds the message as submitted, so the milter sends the difference:
header fields changed, added or removed (``chgheader``/``insheader``/``addheader``), the body
replaced when a banner went into it (``replbody``; the rewriter never touches signed parts, so
their bytes are the same in the replacement), envelope recipients added or removed
(``addrcpt``/``delrcpt``). A hold adds ``quarantine``: the edited copy waits in Postfix's hold queue.
"""

from __future__ import annotations

from collections.abc import Sequence

from kilter.protocol import (
    Accept,
    AddHeader,
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


def header_edits(before: Sequence[Field], after: Sequence[Field]) -> list[Message]:
    """The edits that turn header fields ``before`` into ``after``, by name and occurrence."""
    edits: list[Message] = []
    old = _by_name(before)
    new = _by_name(after)
    first_kept = next((i for i, (name, _) in enumerate(after) if name.lower() in old), len(after))
    inserted = 0
    for key in dict.fromkeys([*old, *new]):
        was, now = old.get(key, []), new.get(key, [])
        for index, ((_name, value), (name, wanted)) in enumerate(zip(was, now, strict=False), start=1):
            if crlf(value) != crlf(wanted):
                edits.append(ChangeHeader(index, name, _folded(wanted)))
        # Removed from the last occurrence down, so the indexes of the others stay as they were.
        for index in range(len(was), len(now), -1):
            edits.append(ChangeHeader(index, was[index - 1][0], b""))
    for position, (name, value) in enumerate(after):
        key = name.lower()
        occurrence = sum(1 for other, _ in after[: position + 1] if other.lower() == key)
        if occurrence <= len(old.get(key, [])):
            continue
        if position < first_kept:
            # Trace-like fields the gateway puts on top (X-Conduct-Gateway) stay on top.
            edits.append(InsertHeader(inserted, name, _folded(value)))
            inserted += 1
        else:
            edits.append(AddHeader(name, _folded(value)))
    return edits


def _by_name(fields: Sequence[Field]) -> dict[str, list[Field]]:
    grouped: dict[str, list[Field]] = {}
    for name, value in fields:
        grouped.setdefault(name.lower(), []).append((name, value))
    return grouped


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
    edits = header_edits(envelope.headers, fields)
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
