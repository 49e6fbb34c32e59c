"""The header section of a message, cut to a size a report can carry (bounces and notices attach it)."""

from __future__ import annotations

MAX_HEADERS = 64 * 1024


def original_headers(content: bytes) -> bytes:
    """The header section of ``content`` (up to, not including, the blank line), ending in CRLF."""
    if content.startswith(b"\r\n"):
        return b""
    end = content.find(b"\r\n\r\n")
    head = content if end < 0 else content[: end + 2]
    if len(head) > MAX_HEADERS:
        # Cut at a line end; a report needs enough to recognise the message, not every Received line.
        cut = head.rfind(b"\r\n", 0, MAX_HEADERS)
        head = head[: cut + 2] if cut > 0 else b""
    if head and not head.endswith(b"\r\n"):
        head += b"\r\n"
    return head
