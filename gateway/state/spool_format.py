"""The on-disk format of a spool file: ``CGSPOOL/1 <length>``, the envelope as JSON, then the content."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from gateway.errors import CorruptSpoolEntry
from gateway.state.spool_records import SpoolEnvelope

FORMAT_MAGIC = b"CGSPOOL/1"
_MAX_HEADER = 16 * 1024 * 1024


def encode_entry(envelope: SpoolEnvelope, content: bytes) -> bytes:
    """The header of a spool file: ``CGSPOOL/1 <length>\\n<json>\\n``; the content follows as is."""
    header = {
        "queue_id": envelope.queue_id,
        "mail_from": envelope.mail_from,
        "rcpt_tos": list(envelope.rcpt_tos),
        "authenticated_as": envelope.authenticated_as,
        "received_at": envelope.received_at,
        "client_address": envelope.client_address,
        "size": len(content),
        "sha256": hashlib.sha256(content).hexdigest(),
    }
    body = json.dumps(header, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return b"%s %d\n%s\n" % (FORMAT_MAGIC, len(body), body)


def parse_header(head: bytes, name: str) -> tuple[dict[str, Any], int]:
    """Parse the header at the start of ``head``; return it and the offset where content starts."""
    line_end = head.find(b"\n", 0, 64)
    if line_end < 0:
        raise CorruptSpoolEntry(f"{name}: not a spool file (no header line)")
    magic, _, length_text = head[:line_end].partition(b" ")
    if magic != FORMAT_MAGIC or not length_text.isdigit():
        raise CorruptSpoolEntry(f"{name}: not a spool file (bad header line)")
    length = int(length_text)
    start = line_end + 1
    end = start + length
    if length > _MAX_HEADER or len(head) < end + 1:
        raise CorruptSpoolEntry(f"{name}: truncated envelope")
    if head[end : end + 1] != b"\n":
        raise CorruptSpoolEntry(f"{name}: envelope not terminated")
    try:
        data = json.loads(head[start:end].decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise CorruptSpoolEntry(f"{name}: unreadable envelope ({exc})") from None
    if not isinstance(data, dict):
        raise CorruptSpoolEntry(f"{name}: envelope is not an object")
    return data, end + 1


def envelope_from(data: Mapping[str, Any], name: str) -> tuple[SpoolEnvelope, int, str]:
    try:
        rcpt_tos = data["rcpt_tos"]
        envelope = SpoolEnvelope(
            queue_id=text_field(data["queue_id"]),
            mail_from=text_field(data["mail_from"]),
            rcpt_tos=tuple(text_field(r) for r in rcpt_tos) if isinstance(rcpt_tos, list) else _bad(),
            authenticated_as=text_field(data["authenticated_as"]),
            received_at=number_field(data["received_at"]),
            client_address=text_field(data.get("client_address", "")),
        )
        size = data["size"]
        digest = text_field(data["sha256"])
        if not isinstance(size, int) or size < 0:
            _bad()
    except (KeyError, TypeError, ValueError):
        raise CorruptSpoolEntry(f"{name}: envelope misses or mistypes a field") from None
    if envelope.queue_id != name:
        raise CorruptSpoolEntry(f"{name}: envelope names another queue id ({envelope.queue_id})")
    if not envelope.rcpt_tos:
        raise CorruptSpoolEntry(f"{name}: envelope has no recipients")
    return envelope, size, digest


def decode_entry(data: bytes, name: str) -> tuple[SpoolEnvelope, bytes]:
    """Read a whole spool file back, checking its length and checksum."""
    header, offset = parse_header(data, name)
    envelope, size, digest = envelope_from(header, name)
    content = data[offset:]
    if len(content) != size:
        raise CorruptSpoolEntry(f"{name}: content is {len(content)} bytes, the envelope says {size}")
    if hashlib.sha256(content).hexdigest() != digest:
        raise CorruptSpoolEntry(f"{name}: content checksum mismatch")
    return envelope, content


def text_field(value: Any) -> str:
    """``value`` if it is a string (TypeError otherwise): a JSON field read back from disk."""
    if not isinstance(value, str):
        raise TypeError("not a string")
    return value


def number_field(value: Any) -> float:
    """``value`` as a float if it is a JSON number (TypeError otherwise)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError("not a number")
    return float(value)


def _bad() -> Any:
    raise TypeError("bad value")


def parse_header_growing(file: Any, head: bytes, name: str) -> tuple[dict[str, Any], int]:
    # Most envelopes fit in the first read; a very long recipient list needs the rest of the header.
    line_end = head.find(b"\n", 0, 64)
    if line_end > 0:
        _, _, length_text = head[:line_end].partition(b" ")
        if length_text.isdigit():
            needed = line_end + 2 + int(length_text)
            if len(head) < needed <= _MAX_HEADER:
                head += file.read(needed - len(head))
    return parse_header(head, name)
