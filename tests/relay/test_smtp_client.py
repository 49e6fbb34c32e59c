"""The upstream SMTP client on its own: setup replies, AUTH methods, replies read whole and strictly."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hmac
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from gateway.delivery.smtp_client import (
    ConnectError,
    Disconnected,
    ReplyError,
    SMTPConnection,
    SMTPError,
    parse_extensions,
)
from gateway.delivery.upstream_replies import OutOfStep

from .conftest import eventually
from .test_upstream_pipelining import RawUpstream, Script, accept_all

USER, PASSWORD = "relay", "s3cret pass"


async def connect(raw: RawUpstream, **options: object) -> SMTPConnection:
    client = SMTPConnection("127.0.0.1", raw.port, local_hostname="gateway.test")
    settings: dict[str, object] = {
        "tls_context": None,
        "starttls": False,
        "username": None,
        "password": None,
        "handshake_timeout": 5,
        **options,
    }
    async with asyncio.timeout(5):
        await client.connect(**settings)  # type: ignore[arg-type]
    return client


def ehlo_with_auth(methods: str) -> bytes:
    return b"250-raw.test\r\n250-PIPELINING\r\n250 AUTH " + methods.encode() + b"\r\n"


def authenticating(check: Script) -> Script:
    """``check``'s reply to a line, or (when it has none) the ordinary one."""
    return lambda line: check(line) or accept_all(line)


async def test_plain_is_preferred_to_login() -> None:
    secret = base64.b64encode(f"\0{USER}\0{PASSWORD}".encode())
    script = authenticating(lambda line: b"235 2.7.0 ok\r\n" if line == b"AUTH PLAIN " + secret else b"")
    async with RawUpstream(script, ehlo=ehlo_with_auth("LOGIN PLAIN")) as raw:
        client = await connect(raw, username=USER, password=PASSWORD)
        client.close()
    assert raw.lines[:2] == [b"EHLO gateway.test", b"AUTH PLAIN " + secret]


async def test_login_sends_user_then_password() -> None:
    def check(line: bytes) -> bytes:
        if line.startswith(b"AUTH LOGIN "):
            return b"334 UGFzc3dvcmQ6\r\n"
        if line == base64.b64encode(PASSWORD.encode()):
            return b"235 2.7.0 ok\r\n"
        return b""

    async with RawUpstream(authenticating(check), ehlo=ehlo_with_auth("LOGIN")) as raw:
        client = await connect(raw, username=USER, password=PASSWORD)
        client.close()
    assert raw.lines[1:3] == [
        b"AUTH LOGIN " + base64.b64encode(USER.encode()),
        base64.b64encode(PASSWORD.encode()),
    ]


async def test_cram_md5_answers_the_challenge_and_a_refused_method_falls_back_to_the_next() -> None:
    nonce = b"<1896.697170952@raw.test>"
    digest = hmac.new(PASSWORD.encode(), nonce, "md5").hexdigest()
    answer = base64.b64encode(f"{USER} {digest}".encode())

    def check(line: bytes) -> bytes:
        if line == b"AUTH CRAM-MD5":
            return b"334 " + base64.b64encode(nonce) + b"\r\n"
        if line == answer:
            return b"535 5.7.8 not today\r\n"  # refused: PLAIN is tried next
        if line.startswith(b"AUTH PLAIN "):
            return b"235 2.7.0 ok\r\n"
        return b""

    async with RawUpstream(authenticating(check), ehlo=ehlo_with_auth("PLAIN CRAM-MD5")) as raw:
        client = await connect(raw, username=USER, password=PASSWORD)
        client.close()
    assert raw.lines[1:3] == [b"AUTH CRAM-MD5", answer]
    assert raw.lines[3].startswith(b"AUTH PLAIN ")


async def test_a_wrong_password_is_the_servers_reply() -> None:
    script = authenticating(
        lambda line: b"535 5.7.8 bad credentials\r\n" if line.startswith(b"AUTH") else b""
    )
    async with RawUpstream(script, ehlo=ehlo_with_auth("PLAIN")) as raw:
        with pytest.raises(ReplyError) as refused:
            await connect(raw, username=USER, password="wrong")
    assert (refused.value.code, refused.value.message) == (535, "5.7.8 bad credentials")


async def test_no_auth_offered_says_so() -> None:
    async with RawUpstream() as raw:
        with pytest.raises(SMTPError, match=r"AUTH extension is not supported by this server\. Try"):
            await connect(raw, username=USER, password=PASSWORD)


async def test_starttls_not_offered_says_so_and_sends_nothing_else() -> None:
    async with RawUpstream() as raw:
        with pytest.raises(SMTPError, match="STARTTLS extension not supported"):
            await connect(raw, starttls=True, tls_context=object())
    assert raw.lines == [b"EHLO gateway.test"]


async def test_a_refused_greeting_is_its_reply() -> None:
    async with serving(refuse_at_once) as port:
        client = SMTPConnection("127.0.0.1", port, local_hostname="gateway.test")
        with pytest.raises(ReplyError) as refused:
            await client.connect(
                tls_context=None, starttls=False, username=None, password=None, handshake_timeout=5
            )
        client.close()
    assert (refused.value.code, refused.value.message) == (421, "4.3.2 busy\nreally")


async def refuse_at_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        writer.write(b"421-4.3.2 busy\r\n421 really\r\n")
        await writer.drain()
    finally:
        writer.close()


async def test_ehlo_refused_falls_back_to_helo_with_no_extensions() -> None:
    async with RawUpstream(ehlo=b"502 5.5.2 what\r\n") as raw:
        client = await connect(raw)
        assert not client.supports_extension("pipelining")
        client.close()
    assert raw.lines == [b"EHLO gateway.test", b"HELO gateway.test"]


async def test_connection_refused_names_host_and_port() -> None:
    server = await asyncio.start_server(refuse_at_once, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    client = SMTPConnection("127.0.0.1", port, local_hostname="gateway.test")
    with pytest.raises(ConnectError, match=f"Error connecting to 127.0.0.1 on port {port}: "):
        await client.connect(
            tls_context=None, starttls=False, username=None, password=None, handshake_timeout=5
        )


async def test_pipelined_replies_in_one_packet_are_each_read_whole() -> None:
    def script(line: bytes) -> bytes:
        return b"250-2.1.5 first\r\n250 2.1.5 second\r\n" if line.startswith(b"RCPT") else accept_all(line)

    async with RawUpstream(script) as raw:
        client = await connect(raw)
        replies = await client.exchange([b"MAIL FROM:<a@example.org>\r\n", b"RCPT TO:<b@example.net>\r\n"])
        client.check_in_step("rcpt")
        client.close()
    assert [(r.code, r.message) for r in replies] == [(250, "ok"), (250, "2.1.5 first\n2.1.5 second")]


async def test_a_line_nobody_asked_for_puts_the_connection_out_of_step() -> None:
    def script(line: bytes) -> bytes:
        return b"250 ok\r\n250 extra\r\n" if line.startswith(b"NOOP") else accept_all(line)

    async with RawUpstream(script) as raw:
        client = await connect(raw)
        await client.exchange([b"NOOP\r\n"])
        with pytest.raises(OutOfStep, match="more replies than commands"):
            client.check_in_step("noop")
        client.close()


async def test_bytes_that_arrive_between_commands_are_stray() -> None:
    async def speaks_unasked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            writer.write(b"220 raw.test\r\n")
            await reader.readline()  # EHLO
            writer.write(b"250 raw.test\r\n")
            await reader.readline()  # NOOP
            writer.write(b"250 ok\r\n")
            await writer.drain()
            await asyncio.sleep(0)
            writer.write(b"250 nobody asked\r\n")  # after the reply, in a write of its own
            await writer.drain()
            await reader.read()
        finally:
            writer.close()

    async with serving(speaks_unasked) as port:
        client = SMTPConnection("127.0.0.1", port, local_hostname="gateway.test")
        await client.connect(
            tls_context=None, starttls=False, username=None, password=None, handshake_timeout=5
        )
        [reply] = await client.exchange([b"NOOP\r\n"])
        assert reply.code == 250
        await eventually(lambda: out_of_step(client))
        client.close()


def out_of_step(client: SMTPConnection) -> bool:
    try:
        client.check_in_step("idle")
    except OutOfStep:
        return True
    return False


@contextlib.asynccontextmanager
async def serving(
    handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
) -> AsyncIterator[int]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


async def test_a_malformed_reply_ends_the_session() -> None:
    async with RawUpstream(lambda line: b"2x0 what\r\n" if line == b"NOOP" else accept_all(line)) as raw:
        client = await connect(raw)
        with pytest.raises(SMTPError, match="Malformed SMTP response line: 2x0 what"):
            await client.exchange([b"NOOP\r\n"])
        client.close()


async def test_a_connection_the_server_closes_is_disconnected() -> None:
    async def hangs_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            writer.write(b"220 raw.test\r\n")
            await reader.readline()
            writer.write(b"250 raw.test\r\n")
            await reader.readline()  # NOOP: no reply, the connection just ends
        finally:
            writer.close()

    async with serving(hangs_up) as port:
        client = SMTPConnection("127.0.0.1", port, local_hostname="gateway.test")
        await client.connect(
            tls_context=None, starttls=False, username=None, password=None, handshake_timeout=5
        )
        with pytest.raises(Disconnected):
            await client.exchange([b"NOOP\r\n"])
        assert not client.is_connected
        with pytest.raises(Disconnected, match="Connection lost"):
            await client.exchange([b"NOOP\r\n"])


def test_extensions_old_and_new_style() -> None:
    extensions, auth = parse_extensions("raw.test\nPIPELINING\nSIZE 1000\nAUTH PLAIN LOGIN\nAUTH=CRAM-MD5\n")
    assert extensions == {"pipelining": "", "size": "1000", "auth": "CRAM-MD5"}
    assert auth == ["plain", "login", "cram-md5"]
