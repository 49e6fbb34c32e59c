"""The upstream SMTP client: one connection, on asyncio's public API, that reads every reply strictly.

The gateway owns this protocol instead of leaning on an SMTP library's internals: it writes command
lines (one at a time, or a pipelined group in one write, RFC 2920), counts the replies it waits for,
and knows of every byte that arrives. So strict reply matching (``upstream_replies``) needs no hooks:
bytes that arrive while no reply is awaited are *stray*, bytes left once every awaited reply was read
are *extra*, and either makes ``check_in_step`` raise ``OutOfStep``. Nothing of a stray or extra line
is ever taken as a reply.

What it speaks: the greeting, EHLO (HELO if EHLO is refused), STARTTLS (``loop.start_tls``; the
extensions learnt before it are forgotten, RFC 3207 §4.2), AUTH (CRAM-MD5, PLAIN, LOGIN, tried in
that order among those offered), and any command lines the caller composes; the message content is
dot-stuffed with CRLF line endings (``prepare_content``). Replies and error texts are those the
upstream transport recorded before (when it used aiosmtplib), so status files, logs and DSNs read the
same. Waits are the caller's (``asyncio.timeout`` around each call).
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import re
import ssl
from collections.abc import Sequence
from typing import cast

from gateway.delivery.upstream_replies import OutOfStep, Phase, Reply

MAX_LINE_LENGTH = 8192
MAX_REPLY_LENGTH = MAX_LINE_LENGTH * 4
"""A reply (every line of it) longer than this ends the session: no server needs it."""
AUTH_METHODS = ("cram-md5", "plain", "login")
"""Tried in this order among those the server offers."""

_LINE_ENDINGS = re.compile(rb"\r\n|\n|\r(?!\n)")
_LEADING_DOT = re.compile(rb"(?m)^\.")


class SMTPError(Exception):
    """The session with the upstream cannot go on (the words are kept in the deferral's reply)."""


class ReplyError(SMTPError):
    """The upstream refused a step of the session setup (greeting, EHLO, STARTTLS or AUTH)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"{code} {message}")
        self.code = code
        self.message = message


class Disconnected(SMTPError, ConnectionError):
    """The connection is gone (closed by the upstream, or never made)."""


class ConnectError(SMTPError, ConnectionError):
    """No connection could be made (the cause is chained)."""


def crlf_only(message: bytes) -> bool:
    """Whether every CR and every LF in ``message`` belongs to a CRLF pair."""
    pairs = message.count(b"\r\n")
    return message.count(b"\r") == pairs and message.count(b"\n") == pairs


def prepare_content(message: bytes) -> bytes:
    """``message`` as DATA sends it: lone CR and LF made CRLF, a final CRLF, leading dots doubled.

    Spooled messages are already CRLF-only (the DATA reader and the rewriter guarantee it) and seldom
    have a line starting with a dot, so both passes are skipped when they would change nothing.
    """
    if crlf_only(message):
        if not message.endswith(b"\r\n"):
            message += b"\r\n"
    else:
        message = _LINE_ENDINGS.sub(b"\r\n", message)
        if not message.endswith(b"\r\n"):
            message += b"\r\n"
    if message.startswith(b".") or b"\n." in message:
        message = _LEADING_DOT.sub(b"..", message)
    return message


def parse_extensions(ehlo: str) -> tuple[dict[str, str], list[str]]:
    """The extensions (lower-case keyword -> parameters) and AUTH methods an EHLO reply offers."""
    extensions: dict[str, str] = {}
    auth: list[str] = []
    for raw in ehlo.split("\n")[1:]:  # the first line greets
        line = raw.strip()
        if not line:
            continue
        if line[:5].lower() == "auth=":  # the old-style advertisement some servers still send
            extensions["auth"] = line[5:]
            auth.extend(method.lower() for method in line[5:].split())
            continue
        keyword, _, parameters = line.partition(" ")
        extensions[keyword.lower()] = parameters
        if keyword.lower() == "auth":
            auth.extend(method.lower() for method in parameters.split())
    return extensions, auth


class _Protocol(asyncio.Protocol):
    """Collects what the upstream sends and notes whether a reply was awaited when it came."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.awaiting = True  # the greeting is awaited from the start
        self.stray = False
        self.closed: SMTPError | None = None
        self._waiter: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if not self.awaiting:
            self.stray = True
        self.buffer += data
        self._wake(None)

    def eof_received(self) -> bool:
        self._close(Disconnected("Unexpected EOF received"))
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        error = Disconnected("Connection lost")
        error.__cause__ = exc
        self._close(error)
        self.transport = None

    def _close(self, error: SMTPError) -> None:
        if self.closed is None:
            self.closed = error
        self._wake(self.closed)

    def _wake(self, error: SMTPError | None) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            if error is None:
                waiter.set_result(None)
            else:
                waiter.set_exception(error)

    async def more(self) -> None:
        """Wait for more bytes; Disconnected if the connection is gone."""
        if self.closed is not None:
            raise self.closed
        waiter = asyncio.get_running_loop().create_future()
        self._waiter = waiter
        await waiter


class SMTPConnection:
    """One session with the upstream: connect, then ``exchange`` command lines for their replies."""

    def __init__(self, host: str, port: int, *, local_hostname: str) -> None:
        self.host = host
        self.port = port
        self.local_hostname = local_hostname
        self.extensions: dict[str, str] = {}
        self.auth_methods: list[str] = []
        self._protocol: _Protocol | None = None
        self._greeted = False  # EHLO or HELO answered since the connection (or STARTTLS) began

    @property
    def is_connected(self) -> bool:
        protocol = self._protocol
        return protocol is not None and protocol.transport is not None and not protocol.transport.is_closing()

    def supports_extension(self, name: str) -> bool:
        return name.lower() in self.extensions

    async def connect(
        self,
        *,
        tls_context: ssl.SSLContext | None,
        starttls: bool,
        username: str | None,
        password: str | None,
        handshake_timeout: float,
    ) -> None:
        """Connect (over TLS at once when ``starttls`` is False and a context is given), read the
        greeting, upgrade with STARTTLS when asked, log in when a user name is given, and say EHLO.

        Raises ConnectError, ReplyError, Disconnected, SMTPError, OutOfStep or ssl.SSLError.
        """
        loop = asyncio.get_running_loop()
        implicit = tls_context if not starttls else None
        try:
            _, protocol = await loop.create_connection(
                _Protocol,
                host=self.host,
                port=self.port,
                ssl=implicit,
                server_hostname=self.host if implicit is not None else None,
                ssl_handshake_timeout=handshake_timeout if implicit is not None else None,
            )
        except OSError as exc:
            raise ConnectError(f"Error connecting to {self.host} on port {self.port}: {exc}") from exc
        self._protocol = protocol
        try:
            await self._setup(tls_context, starttls, username, password, handshake_timeout)
        except BaseException:
            self.close()  # a half-made session is never used: the caller gets a closed connection
            raise

    async def _setup(
        self,
        tls_context: ssl.SSLContext | None,
        starttls: bool,
        username: str | None,
        password: str | None,
        handshake_timeout: float,
    ) -> None:
        protocol = cast(_Protocol, self._protocol)
        try:
            [greeting] = await self._read(1)
        except Disconnected as exc:
            raise ConnectError(f"Error connecting to {self.host} on port {self.port}: {exc}") from exc
        protocol.awaiting = False
        if greeting.code != 220:
            raise ReplyError(greeting.code, greeting.message)
        if starttls:
            if tls_context is None:
                raise SMTPError("STARTTLS needs a TLS context")
            await self._starttls(tls_context, handshake_timeout)
        if username is not None:
            await self._login(username, password or "")
        await self._greet()

    async def exchange(self, lines: Sequence[bytes]) -> list[Reply]:
        """Send ``lines`` (whole command lines, CRLF included) in one write; return one reply each.

        Call ``check_in_step`` before and after: this reads exactly as many replies as it sent lines.
        """
        protocol = self._connected()
        protocol.awaiting = True  # before the write: a reply may come back within the same turn
        try:
            assert protocol.transport is not None
            protocol.transport.write(b"".join(lines))
            return await self._read(len(lines))
        finally:
            protocol.awaiting = False

    def check_in_step(self, phase: Phase) -> None:
        """OutOfStep if bytes came while no reply was awaited, or are left once every reply was read."""
        protocol = self._protocol
        if protocol is None or protocol.closed is not None or protocol.transport is None:
            return  # not connected: the next write says so
        if protocol.stray:
            raise OutOfStep(phase, "the upstream sent a reply when no command was waiting for one")
        if protocol.buffer:
            raise OutOfStep(phase, "the upstream sent more replies than commands")

    async def quit(self) -> None:
        """Say QUIT and close; whatever the reply."""
        try:
            await self.exchange([b"QUIT\r\n"])
        finally:
            self.close()

    def close(self) -> None:
        protocol = self._protocol
        if protocol is not None and protocol.transport is not None and not protocol.transport.is_closing():
            protocol.transport.close()

    # -- the setup steps

    async def _greet(self) -> None:
        if self._greeted:
            return
        reply = await self._command(b"EHLO " + self.local_hostname.encode("ascii") + b"\r\n")
        if reply.code == 250:
            self.extensions, self.auth_methods = parse_extensions(reply.message)
        else:
            if reply.code == 421 or not self.is_connected:
                raise ReplyError(reply.code, reply.message)
            reply = await self._command(b"HELO " + self.local_hostname.encode("ascii") + b"\r\n")
            if reply.code != 250:
                raise ReplyError(reply.code, reply.message)
            self.extensions, self.auth_methods = {}, []
        self._greeted = True

    async def _starttls(self, context: ssl.SSLContext, handshake_timeout: float) -> None:
        await self._greet()
        if not self.supports_extension("starttls"):
            raise SMTPError("SMTP STARTTLS extension not supported by server.")
        self.check_in_step("greeting")
        [reply] = await self.exchange([b"STARTTLS\r\n"])
        if reply.code != 220:
            raise ReplyError(reply.code, reply.message)
        protocol = self._connected()
        # A server sends nothing after its 220 until TLS is up (RFC 3207 §4.2): anything here is
        # cleartext someone may have injected, never to be read as part of the encrypted session.
        protocol.buffer.clear()
        protocol.stray = False
        assert protocol.transport is not None
        try:
            transport = await asyncio.get_running_loop().start_tls(
                protocol.transport,
                protocol,
                context,
                server_hostname=self.host,
                ssl_handshake_timeout=handshake_timeout,
            )
        except ConnectionAbortedError as exc:  # how asyncio reports a handshake that timed out
            raise TimeoutError("Connection aborted while upgrading transport") from exc
        except ConnectionError as exc:
            raise Disconnected("Connection reset while upgrading transport") from exc
        protocol.transport = transport
        # RFC 3207 §4.2: forget what the server said before TLS; it says it again after EHLO.
        self.extensions, self.auth_methods, self._greeted = {}, [], False

    async def _login(self, username: str, password: str) -> None:
        await self._greet()
        if not self.supports_extension("auth"):
            transport = self._protocol.transport if self._protocol is not None else None
            plain = transport is not None and transport.get_extra_info("sslcontext") is None
            hint = " Try connecting via TLS (or STARTTLS)." if plain else ""
            raise SMTPError(f"The SMTP AUTH extension is not supported by this server.{hint}")
        refused: ReplyError | None = None
        for method in (m for m in AUTH_METHODS if m in self.auth_methods):
            try:
                await self._authenticate(method, username.encode("utf-8"), password.encode("utf-8"))
            except ReplyError as exc:
                refused = exc  # servers offer methods they do not support: try the next one
            else:
                return
        raise refused or SMTPError("No suitable authentication method found.")

    async def _authenticate(self, method: str, username: bytes, password: bytes) -> None:
        if method == "plain":
            secret = base64.b64encode(b"\0" + username + b"\0" + password)
            final = await self._command(b"AUTH PLAIN " + secret + b"\r\n")
        elif method == "login":
            challenge = await self._command(b"AUTH LOGIN " + base64.b64encode(username) + b"\r\n")
            if challenge.code != 334:
                raise ReplyError(challenge.code, challenge.message)
            final = await self._command(base64.b64encode(password) + b"\r\n")
        else:
            challenge = await self._command(b"AUTH CRAM-MD5\r\n")
            if challenge.code != 334:
                raise ReplyError(challenge.code, challenge.message)
            try:
                nonce = base64.b64decode(challenge.message, validate=False)
            except ValueError as exc:
                raise ReplyError(
                    334, f"Invalid CRAM-MD5 challenge from server: {challenge.message!r}"
                ) from exc
            digest = hmac.new(password, nonce, "md5").hexdigest().encode("ascii")
            final = await self._command(base64.b64encode(username + b" " + digest) + b"\r\n")
        if final.code != 235:
            raise ReplyError(final.code, final.message)

    async def _command(self, line: bytes) -> Reply:
        """One setup command and its reply, strictly (nothing unasked before, nothing extra after)."""
        self.check_in_step("greeting")
        [reply] = await self.exchange([line])
        self.check_in_step("greeting")
        return reply

    # -- reading

    def _connected(self) -> _Protocol:
        protocol = self._protocol
        if protocol is None:
            raise Disconnected("Server not connected")
        if protocol.closed is not None or protocol.transport is None or protocol.transport.is_closing():
            raise Disconnected("Connection lost")
        return protocol

    async def _read(self, count: int) -> list[Reply]:
        protocol = self._protocol
        assert protocol is not None
        replies: list[Reply] = []
        while len(replies) < count:
            reply = _parse_reply(protocol.buffer)
            if reply is not None:
                replies.append(reply)
                continue
            if len(protocol.buffer) > MAX_REPLY_LENGTH:
                raise SMTPError("Response too long")
            await protocol.more()
        return replies


def _parse_reply(buffer: bytearray) -> Reply | None:
    """Take one whole reply off the front of ``buffer``; None (buffer untouched) if it is not all there."""
    code = -1
    lines: list[bytes] = []
    offset = 0
    while True:
        end = buffer.find(b"\n", offset)
        if end < 0:
            return None
        line = bytes(buffer[offset : end + 1])
        if len(line) > MAX_LINE_LENGTH:
            raise SMTPError("Response too long")
        try:
            code = int(line[:3])
        except ValueError:
            text = line.decode("utf-8", errors="ignore")
            raise SMTPError(f"Malformed SMTP response line: {text}") from None
        offset = end + 1
        lines.append(line[4:].strip(b" \t\r\n"))
        if line[3:4] != b"-":
            break
    del buffer[:offset]
    return Reply(code, b"\n".join(lines).decode("utf-8", "surrogateescape"))
