"""Delivery with PIPELINING (RFC 2920): what goes on the wire, and replies however they are packed.

The outcomes per recipient are checked against every scripted refusal by ``test_delivery.py``, which
runs once with and once without PIPELINING (the ``upstream`` fixture). Here a raw upstream shows
what the aiosmtpd-based one cannot: how the commands arrive, and replies split or packed in any way.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from gateway.delivery.smtp_client import Disconnected, SMTPConnection
from gateway.delivery.worker import UpstreamTransport
from gateway.settings import UpstreamSettings
from gateway.state.spool import SpoolEnvelope
from gateway.testing import CaptureUpstream

CONTENT = b"From: a@example.org\r\nSubject: hi\r\n\r\n.leading dot\r\nbody\r\n"
EHLO = b"250-raw.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 SIZE 1000000\r\n"

# Given a complete command line, the reply to it (None: the DATA content follows).
Script = Callable[[bytes], bytes]


def accept_all(line: bytes) -> bytes:
    verb = line[:4].upper()
    if verb == b"DATA":
        return b"354 go ahead\r\n"
    if verb == b"QUIT":
        return b"221 bye\r\n"
    return b"250 ok\r\n"


class RawUpstream:
    """A scripted SMTP server that records each chunk it reads and packs its replies as told."""

    def __init__(self, script: Script = accept_all, *, trickle: bool = False, ehlo: bytes = EHLO) -> None:
        self.script = script
        self.trickle = trickle  # send replies one byte at a time
        self.ehlo = ehlo
        self.chunks: list[bytes] = []
        self.lines: list[bytes] = []
        self.messages: list[bytes] = []
        self.port = 0
        self._server: asyncio.AbstractServer | None = None

    async def __aenter__(self) -> RawUpstream:
        self._server = await asyncio.start_server(self._session, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: Any) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _send(self, writer: asyncio.StreamWriter, data: bytes) -> None:
        if self.trickle:
            for index in range(len(data)):
                writer.write(data[index : index + 1])
                await writer.drain()
                await asyncio.sleep(0)
        else:
            writer.write(data)
            await writer.drain()

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        buffer = b""
        in_data = False
        writer.write(b"220 raw.test ESMTP\r\n")
        try:
            while chunk := await reader.read(65536):
                self.chunks.append(chunk)
                buffer += chunk
                replies = b""
                while True:
                    if in_data:
                        end = buffer.find(b"\r\n.\r\n") if not buffer.startswith(b".\r\n") else -2
                        if end == -1:
                            break
                        self.messages.append(b"" if end == -2 else buffer[: end + 2])
                        buffer = buffer[3:] if end == -2 else buffer[end + 5 :]
                        in_data = False
                        replies += self.script(b"<end of data>")
                        continue
                    line, found, rest = buffer.partition(b"\r\n")
                    if not found:
                        break
                    buffer = rest
                    self.lines.append(line)
                    reply = self.ehlo if line[:4].upper() == b"EHLO" else self.script(line)
                    replies += reply
                    in_data = line.upper() == b"DATA" and reply.startswith(b"354")
                if replies:
                    await self._send(writer, replies)
        finally:
            writer.close()


def transport_for(port: int, **overrides: Any) -> UpstreamTransport:
    settings = UpstreamSettings.model_validate(
        {"host": "127.0.0.1", "port": port, "security": "none", "timeout": 5, **overrides}
    )
    return UpstreamTransport(settings, hostname="gateway.test", environ={})


def envelope(*recipients: str) -> SpoolEnvelope:
    return SpoolEnvelope("Q1", "sender@example.org", recipients, "sender@example.org", time.time())


@pytest.fixture
async def raw() -> AsyncIterator[RawUpstream]:
    async with RawUpstream() as server:
        yield server


async def test_mail_every_rcpt_and_data_arrive_in_one_write(raw: RawUpstream) -> None:
    transport = transport_for(raw.port)
    result = await transport.send(
        envelope("a@example.net", "b@example.net"), CONTENT, ("a@example.net", "b@example.net")
    )
    await transport.close()
    assert [r.outcome for r in result.recipients] == ["delivered", "delivered"]
    group = next(chunk for chunk in raw.chunks if chunk.startswith(b"MAIL"))
    assert group.split(b"\r\n")[:4] == [
        b"MAIL FROM:<sender@example.org> SIZE=%d" % len(CONTENT),
        b"RCPT TO:<a@example.net>",
        b"RCPT TO:<b@example.net>",
        b"DATA",
    ]
    assert raw.messages == [CONTENT.replace(b"\r\n.leading", b"\r\n..leading")]


@pytest.mark.parametrize(
    ("ehlo", "settings"),
    [(b"250-raw.test\r\n250 8BITMIME\r\n", {}), (EHLO, {"pipelining": False})],
    ids=["not-offered", "turned-off"],
)
async def test_without_pipelining_each_command_waits_for_its_reply(
    ehlo: bytes, settings: dict[str, Any]
) -> None:
    async with RawUpstream(ehlo=ehlo) as raw:
        transport = transport_for(raw.port, **settings)
        result = await transport.send(
            envelope("a@example.net", "b@example.net"), CONTENT, ("a@example.net", "b@example.net")
        )
        await transport.close()
    assert [r.outcome for r in result.recipients] == ["delivered", "delivered"]
    commands = [chunk for chunk in raw.chunks if chunk[:4] in (b"MAIL", b"RCPT", b"DATA")]
    assert [c.split(b" ")[0].strip() for c in commands] == [b"MAIL", b"RCPT", b"RCPT", b"DATA"]


@pytest.mark.parametrize("trickle", [False, True], ids=["replies-in-one-packet", "one-byte-at-a-time"])
async def test_each_reply_is_matched_to_its_command_however_the_replies_are_packed(trickle: bool) -> None:
    def script(line: bytes) -> bytes:
        if line.startswith(b"RCPT TO:<refused"):
            return b"550-5.1.1 no such\r\n550 5.1.1 user here\r\n"
        if line.startswith(b"RCPT TO:<later"):
            return b"451 4.3.0 try later\r\n"
        return accept_all(line)

    recipients = ("a@example.net", "refused@example.net", "later@example.net", "b@example.net")
    async with RawUpstream(script, trickle=trickle) as raw:
        transport = transport_for(raw.port)
        first = await transport.send(envelope(*recipients), CONTENT, recipients)
        second = await transport.send(
            envelope("c@example.net"), CONTENT, ("c@example.net",)
        )  # same connection
        await transport.close()
    outcomes = {r.address: (r.outcome, r.reply) for r in first.recipients}
    assert outcomes == {
        "a@example.net": ("delivered", "250 ok"),
        "refused@example.net": ("failed", "550 5.1.1 no such 5.1.1 user here"),
        "later@example.net": ("deferred", "451 4.3.0 try later"),
        "b@example.net": ("delivered", "250 ok"),
    }
    assert [r.outcome for r in second.recipients] == ["delivered"]
    assert len(raw.messages) == 2
    assert transport.connections_made() == 1


async def test_data_accepted_with_no_recipient_sends_an_empty_message_end_and_delivers_nothing() -> None:
    # RFC 2920 says a server must refuse DATA when no RCPT succeeded; one that does not must still
    # receive nothing of the message.
    def script(line: bytes) -> bytes:
        return b"550 5.1.1 unknown\r\n" if line.startswith(b"RCPT") else accept_all(line)

    async with RawUpstream(script) as raw:
        transport = transport_for(raw.port)
        result = await transport.send(envelope("x@example.net"), CONTENT, ("x@example.net",))
        await transport.close()
    assert [(r.outcome, r.reply) for r in result.recipients] == [("failed", "550 5.1.1 unknown")]
    assert raw.messages == [b""]
    assert b"body" not in b"".join(raw.chunks)
    assert b"RSET" in raw.lines


async def test_a_refused_sender_fails_every_recipient_and_sends_no_content() -> None:
    def script(line: bytes) -> bytes:
        if line.startswith(b"MAIL"):
            return b"553 5.7.1 sender refused\r\n"
        if line.startswith((b"RCPT", b"DATA")):
            return b"503 5.5.1 bad sequence\r\n"
        return accept_all(line)

    async with RawUpstream(script) as raw:
        transport = transport_for(raw.port)
        result = await transport.send(
            envelope("a@example.net", "b@example.net"), CONTENT, ("a@example.net", "b@example.net")
        )
        await transport.close()
    assert {(r.outcome, r.reply) for r in result.recipients} == {("failed", "553 5.7.1 sender refused")}
    assert raw.messages == []
    assert b"body" not in b"".join(raw.chunks)


async def test_a_pooled_connection_that_died_is_replaced_before_anything_is_lost() -> None:
    upstream = CaptureUpstream(pipelining=True)
    async with upstream:
        transport = transport_for(upstream.port)
        await transport.send(envelope("a@example.net"), CONTENT, ("a@example.net",))
        await upstream.go_down()
        await upstream.come_up()
        result = await transport.send(envelope("b@example.net"), CONTENT, ("b@example.net",))
        await transport.close()
        assert [r.outcome for r in result.recipients] == ["delivered"]
        assert [m.rcpt_tos for m in upstream.messages] == [("a@example.net",), ("b@example.net",)]
        assert transport.connections_made() == 2


@pytest.mark.parametrize(
    ("ehlo", "offered"),
    [(EHLO, True), (b"250-raw.test\r\n250 8BITMIME\r\n", False)],
    ids=["offered", "not-offered"],
)
async def test_pipelining_is_known_only_when_offered(ehlo: bytes, offered: bool) -> None:
    async with RawUpstream(ehlo=ehlo) as raw:
        client = await connected(raw.port)
        assert client.supports_extension("pipelining") is offered
        assert client.supports_extension("8bitmime")
        client.close()


async def connected(port: int) -> SMTPConnection:
    client = SMTPConnection("127.0.0.1", port, local_hostname="gateway.test")
    await client.connect(tls_context=None, starttls=False, username=None, password=None, handshake_timeout=5)
    return client


async def test_exchange_on_a_closed_connection_says_disconnected(raw: RawUpstream) -> None:
    client = await connected(raw.port)
    client.close()
    with pytest.raises(Disconnected):
        await client.exchange([b"NOOP\r\n"])
