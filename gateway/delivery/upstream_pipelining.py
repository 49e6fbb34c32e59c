"""SMTP PIPELINING (RFC 2920) on an aiosmtplib connection: MAIL, every RCPT and DATA in one write.

aiosmtplib waits for each reply before it sends the next command, so relaying one message to two
recipients takes five round trips to the upstream (MAIL, RCPT, RCPT, DATA, the content). When the
upstream advertises PIPELINING, as Postfix and most mail servers do, the envelope and DATA go out
together and the replies are read back in order: two round trips whatever the recipient count.
That saves the upstream's latency on every message, and on a busy gateway a system call, a timer
and an event-loop turn per command.

aiosmtplib has no public API for this, so ``exchange`` and ``send_content`` use four of its
protocol's internals (``_command_lock``, ``_response_pending``, ``_read_response_from_buffer`` and
``read_response``). ``has_internals()`` checks that they are there. The delivery reads every reply
through them, one command at a time too, so that each reply is checked against its command
(``upstream_replies``); if a later aiosmtplib drops one, the upstream transport delivers nothing and
says why, and a test says so.

Why the reading needs care: aiosmtplib's protocol parses at most one reply per read from the socket,
and servers usually answer a pipelined group in one packet. So after each reply the rest of the
buffer is parsed before waiting for more data (which would never come: a test sends the replies one
byte at a time and all in one packet).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import aiosmtplib
import aiosmtplib.protocol as _protocol
from aiosmtplib import SMTPResponse, SMTPServerDisconnected

# What of aiosmtplib's protocol this module uses (see the module docstring).
_PROTOCOL_ATTRIBUTES = (
    "_command_lock",
    "_response_pending",
    "_read_response_from_buffer",
    "read_response",
    "write",
)


def has_internals(client: aiosmtplib.SMTP) -> bool:
    """Whether aiosmtplib still has the internals this module uses (checked on a connected client)."""
    protocol = client.protocol
    return protocol is not None and all(hasattr(protocol, name) for name in _PROTOCOL_ATTRIBUTES)


def available(client: aiosmtplib.SMTP) -> bool:
    """Whether to pipeline on ``client``: its server offers PIPELINING and aiosmtplib still has the
    internals this module uses."""
    return client.supports_extension("pipelining") and has_internals(client)


async def exchange(client: aiosmtplib.SMTP, commands: Sequence[bytes]) -> list[SMTPResponse]:
    """Send ``commands`` (each a full line ending in CRLF) in one write; return their replies in order.

    Raises SMTPServerDisconnected if the connection is gone; a malformed reply raises aiosmtplib's
    SMTPResponseException. The caller bounds the wait (``asyncio.timeout``).
    """
    protocol = _connected(client)
    async with protocol._command_lock:
        protocol._response_pending = True
        protocol.write(b"".join(commands))
        try:
            return [await _next_reply(protocol) for _ in commands]
        finally:
            protocol._response_pending = False


async def send_content(
    client: aiosmtplib.SMTP, content: bytes, then: Sequence[bytes] = ()
) -> list[SMTPResponse]:
    """After a 354: send ``content`` (dot-stuffed, CRLF, then the terminating dot) and the commands
    ``then`` in the same write; return the reply to the dot, then one per command. Empty ``content``
    sends the terminating dot alone."""
    protocol = _connected(client)
    if content:
        # aiosmtplib's own preparation (with the fast paths of ``upstream_fast_paths``), looked up
        # at each call as ``execute_data_command`` does.
        content = _protocol.normalize_message_line_endings(content)
        content = _protocol.PERIOD_REGEX.sub(b"..", content)
    async with protocol._command_lock:
        protocol._response_pending = True
        protocol.write(b"".join((content, b".\r\n", *then)))
        try:
            return [await _next_reply(protocol) for _ in range(1 + len(then))]
        finally:
            protocol._response_pending = False


def _connected(client: aiosmtplib.SMTP) -> Any:
    protocol = client.protocol
    if protocol is None or getattr(protocol, "_command_lock", None) is None:
        raise SMTPServerDisconnected("Server not connected")
    return protocol


async def _next_reply(protocol: Any) -> SMTPResponse:
    reply: SMTPResponse | None = protocol._read_response_from_buffer()
    if reply is None:
        reply = await protocol.read_response(timeout=None)
    return reply
