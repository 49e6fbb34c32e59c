"""Test helpers for users of the package: an in-process SMTP upstream that records mail and answers as told.

``CaptureUpstream`` is a real aiosmtpd server on loopback (port 0 by default) running on the caller's
event loop. Tests script its replies per sender, per recipient or per message, take it down and
bring it back on the same port, and read back exactly what arrived::

    async with CaptureUpstream() as upstream:
        upstream.reply_to_rcpt("451 4.2.1 try later", recipient="b@example.org", times=1)
        ...  # deliver to upstream.host, upstream.port
        [message] = await upstream.wait_for(1)
        assert message.rcpt_tos == ("a@example.org",)

Replies are full SMTP reply lines such as ``"550 5.1.1 no such user"``. A scripted reply applies to
the next ``times`` matching commands (every one if ``times`` is None), then the default (accept)
returns. TLS: ``starttls_context`` offers STARTTLS, ``tls_context`` makes the listener implicit
TLS; ``credentials`` requires AUTH (PLAIN/LOGIN) with that user name and password.

For an upstream that misbehaves byte by byte (stray lines, stalls, drops, broken TLS), see
``gateway.fake_upstream.FakeUpstream``.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

ACCEPT_DATA = "250 2.0.0 Ok: queued"


@dataclass(frozen=True)
class CapturedMessage:
    """One message the upstream accepted (or was offered, for a ``when`` predicate)."""

    mail_from: str  # "" for the null sender (MAIL FROM:<>)
    rcpt_tos: tuple[str, ...]
    content: bytes  # exactly as received (CRLF line endings, dot-unstuffed)
    mail_options: tuple[str, ...] = ()
    session: int = 0  # which connection carried it (1, 2, ...): shows connection reuse
    tls: bool = False
    authenticated_as: str = ""


@dataclass
class _Script:
    reply: str
    times: int | None
    key: str | None = None  # sender or recipient address the reply is for (None: any)
    when: Callable[[CapturedMessage], bool] | None = None


@dataclass
class _Scripts:
    mail: list[_Script] = field(default_factory=list)
    rcpt: list[_Script] = field(default_factory=list)
    data: list[_Script] = field(default_factory=list)


def _take(scripts: list[_Script], key: str | None, message: CapturedMessage | None = None) -> str | None:
    for script in scripts:
        if script.key is not None and script.key != key:
            continue
        if script.when is not None and (message is None or not script.when(message)):
            continue
        if script.times is not None:
            script.times -= 1
            if script.times <= 0:
                scripts.remove(script)
        return script.reply
    return None


class CaptureUpstream:
    """An SMTP server on loopback that keeps what it receives and replies as scripted."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        hostname: str = "upstream.test",
        starttls_context: ssl.SSLContext | None = None,
        tls_context: ssl.SSLContext | None = None,
        credentials: tuple[str, str] | None = None,
        record: bool = True,
        data_size_limit: int | None = 32 * 1024 * 1024,
        pipelining: bool = False,
    ) -> None:
        self.host = host
        self.pipelining = pipelining
        """Advertise PIPELINING (RFC 2920), as Postfix does; aiosmtpd answers pipelined commands in order."""
        self.port = port
        self._hostname = hostname
        self._starttls_context = starttls_context
        self._tls_context = tls_context
        self._credentials = credentials
        self._record = record
        self._data_size_limit = data_size_limit
        self.messages: list[CapturedMessage] = []
        self.received = 0
        """Messages accepted so far (counted even when ``record`` is False)."""
        self.sessions = 0
        """Connections accepted so far."""
        self.data_delay = 0.0
        """Seconds to wait before answering the end of DATA (a slow upstream)."""
        self._scripts = _Scripts()
        self._server: asyncio.AbstractServer | None = None
        self._live: set[SMTP] = set()
        self._session_numbers: dict[int, int] = {}
        self._arrived = asyncio.Condition()

    # -- lifecycle

    async def __aenter__(self) -> CaptureUpstream:
        await self.start()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        await self.stop()

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    @property
    def is_up(self) -> bool:
        return self._server is not None

    async def start(self) -> None:
        """Listen (on the same port as before, after ``go_down``)."""
        if self._server is not None:
            return
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._new_session, self.host, self.port, ssl=self._tls_context, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop listening and drop every open connection."""
        await self.go_down()

    async def go_down(self) -> None:
        """Simulate an outage: refuse new connections and cut the open ones."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        sessions = list(self._live)
        for session in sessions:
            transport = session.transport
            if isinstance(transport, asyncio.Transport):
                transport.abort()
            elif transport is not None:
                transport.close()
        handlers = [s._handler_coroutine for s in sessions if s._handler_coroutine is not None]
        if handlers:
            await asyncio.wait(handlers, timeout=5)
        self._live.clear()
        if server is not None:
            await server.wait_closed()

    async def come_up(self) -> None:
        """End an outage: listen again on the same port."""
        await self.start()

    # -- scripting

    def reply_to_mail(self, reply: str, *, sender: str | None = None, times: int | None = None) -> None:
        """Answer MAIL FROM (from ``sender``, or anyone) with ``reply``."""
        self._scripts.mail.append(_Script(reply, times, sender))

    def reply_to_rcpt(self, reply: str, *, recipient: str | None = None, times: int | None = None) -> None:
        """Answer RCPT TO (for ``recipient``, or anyone) with ``reply``."""
        self._scripts.rcpt.append(_Script(reply, times, recipient))

    def reply_to_data(
        self,
        reply: str,
        *,
        times: int | None = None,
        when: Callable[[CapturedMessage], bool] | None = None,
    ) -> None:
        """Answer the end of DATA (for messages ``when`` accepts, or any) with ``reply``.

        A 2xx reply here still records the message; anything else does not.
        """
        self._scripts.data.append(_Script(reply, times, None, when))

    def clear_replies(self) -> None:
        """Back to accepting everything."""
        self._scripts = _Scripts()

    # -- reading back

    async def wait_for(self, count: int, within: float = 10.0) -> list[CapturedMessage]:
        """Wait until ``count`` messages have arrived; return them all (TimeoutError after ``within`` s)."""
        async with asyncio.timeout(within), self._arrived:
            await self._arrived.wait_for(lambda: self.received >= count)
        return list(self.messages)

    def recipients_of(self, predicate: Callable[[CapturedMessage], bool]) -> list[str]:
        """Every recipient of every captured message matching ``predicate`` (duplicates kept)."""
        return [r for m in self.messages if predicate(m) for r in m.rcpt_tos]

    # -- the aiosmtpd side

    def _new_session(self) -> SMTP:
        auth: dict[str, Any] = {}
        if self._credentials is not None:
            # Implicit TLS is TLS from the first byte, but aiosmtpd only counts STARTTLS as TLS.
            auth = {
                "authenticator": self._authenticate,
                "auth_require_tls": self._tls_context is None,
            }
        server = SMTP(
            _Handler(self),
            hostname=self._hostname,
            tls_context=self._starttls_context,
            require_starttls=self._starttls_context is not None and self._credentials is not None,
            data_size_limit=self._data_size_limit,
            enable_SMTPUTF8=True,
            decode_data=False,
            loop=asyncio.get_running_loop(),
            **auth,
        )
        self._live.add(server)
        self.sessions += 1
        self._session_numbers[id(server)] = self.sessions
        return server

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        if self._credentials is not None and isinstance(data, LoginPassword):
            user, password = self._credentials
            if data.login == user.encode() and data.password == password.encode():
                return AuthResult(success=True, auth_data=user)
        return AuthResult(success=False, handled=False)

    def _session_of(self, server: SMTP) -> int:
        return self._session_numbers.get(id(server), 0)

    async def _accepted(self, message: CapturedMessage) -> None:
        self.received += 1
        if self._record:
            self.messages.append(message)
        async with self._arrived:
            self._arrived.notify_all()


class _Handler:
    def __init__(self, upstream: CaptureUpstream) -> None:
        self._upstream = upstream

    async def handle_EHLO(
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        if self._upstream.pipelining:
            responses.insert(len(responses) - 1, "250-PIPELINING")
        return responses

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        upstream = self._upstream
        if upstream._credentials is not None and not session.authenticated:
            return "530 5.7.0 Authentication required"
        reply = _take(upstream._scripts.mail, address)
        if reply is not None and not reply.startswith("2"):
            return reply
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return reply or "250 2.1.0 Ok"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        reply = _take(self._upstream._scripts.rcpt, address)
        if reply is not None and not reply.startswith("2"):
            return reply
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return reply or "250 2.1.5 Ok"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        upstream = self._upstream
        content = envelope.original_content or b""
        auth_data = session.auth_data
        message = CapturedMessage(
            mail_from="" if envelope.mail_from in (None, "<>") else envelope.mail_from,
            rcpt_tos=tuple(envelope.rcpt_tos),
            content=content,
            mail_options=tuple(envelope.mail_options),
            session=upstream._session_of(server),
            tls=session.ssl is not None or upstream._tls_context is not None,
            authenticated_as=auth_data if isinstance(auth_data, str) else "",
        )
        reply = _take(upstream._scripts.data, None, message) or ACCEPT_DATA
        if upstream.data_delay:
            await asyncio.sleep(upstream.data_delay)
        if reply.startswith("2"):
            await upstream._accepted(message)
        return reply
