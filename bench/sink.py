"""The benchmark's capture upstream: a minimal, fast SMTP server that counts messages and keeps none.

It is deliberately not aiosmtpd: a line-by-line DATA reader would make the sink, not the relay under
test, the bottleneck at 200 KB. It scans DATA in chunks for the end-of-data marker, speaks just enough
ESMTP (EHLO, PIPELINING, 8BITMIME, SMTPUTF8, SIZE) for aiosmtplib, the gateway and Postfix, and
records in shared memory how many messages arrived and when the last one did.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from multiprocessing.sharedctypes import Synchronized

END_OF_DATA = b"\r\n.\r\n"
EHLO_REPLY = (
    b"250-sink.example.net\r\n250-PIPELINING\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n"
    b"250-SIZE 209715200\r\n250 ENHANCEDSTATUSCODES\r\n"
)


class SinkProtocol(asyncio.Protocol):
    """One SMTP session; counts every completed DATA transaction."""

    def __init__(self, received: Synchronized[int], last_arrival: Synchronized[float]) -> None:
        self.received = received
        self.last_arrival = last_arrival
        self.buffer = bytearray()
        self.in_data = False
        self.scanned = 0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(b"220 sink.example.net ESMTP bench sink\r\n")

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.buffer += data
        replies: list[bytes] = []
        while True:
            if self.in_data:
                end = self.buffer.find(END_OF_DATA, max(0, self.scanned - len(END_OF_DATA)))
                if end < 0:
                    self.scanned = len(self.buffer)
                    break
                del self.buffer[: end + len(END_OF_DATA)]
                self.in_data = False
                self.scanned = 0
                with self.received.get_lock():
                    self.received.value += 1
                    self.last_arrival.value = time.monotonic()
                replies.append(b"250 2.0.0 Ok: counted\r\n")
                continue
            end = self.buffer.find(b"\r\n")
            if end < 0:
                break
            line = bytes(self.buffer[:end])
            del self.buffer[: end + 2]
            verb = line[:4].upper()
            if verb == b"EHLO":
                replies.append(EHLO_REPLY)
            elif verb == b"HELO":
                replies.append(b"250 sink.example.net\r\n")
            elif verb == b"DATA":
                replies.append(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                self.in_data = True
                # A message may be empty: its terminator then follows DATA's own CRLF directly.
                self.buffer[:0] = b"\r\n"
                self.scanned = 0
            elif verb == b"QUIT":
                replies.append(b"221 2.0.0 Bye\r\n")
                self.transport.write(b"".join(replies))
                self.transport.close()
                return
            elif verb in (b"MAIL", b"RCPT", b"RSET", b"NOOP"):
                replies.append(b"250 2.0.0 Ok\r\n")
            else:
                replies.append(b"502 5.5.2 Command not implemented\r\n")
        if replies:
            self.transport.write(b"".join(replies))


async def serve_sink(
    host: str,
    port: int,
    received: Synchronized[int],
    last_arrival: Synchronized[float],
    ready: Synchronized[int],
) -> None:
    """Serve until cancelled; publish the bound port through ``ready``."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SinkProtocol(received, last_arrival), host, port)
    ready.value = int(server.sockets[0].getsockname()[1])
    async with server:
        await server.serve_forever()


def run_sink(
    host: str,
    port: int,
    received: Synchronized[int],
    last_arrival: Synchronized[float],
    ready: Synchronized[int],
) -> None:
    """Process entry point (multiprocessing target)."""
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve_sink(host, port, received, last_arrival, ready))
