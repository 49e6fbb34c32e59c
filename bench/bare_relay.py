"""The benchmark's baseline: a bare aiosmtpd -> aiosmtplib relay with no spool, no policy, no fsync.

Each client session relays through its own persistent upstream connection, answering 250 only after
the upstream did (the fastest honest relay the two libraries make without a queue). AUTH PLAIN/LOGIN
is offered and accepts any login, so clients run the same commands as against the gateway. With a
certificate (``--tls``) it offers STARTTLS, with the gateway's TLS settings, and requires it first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from multiprocessing.sharedctypes import Synchronized
from typing import Any

import aiosmtplib
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, Session


def accept_any_login(*_args: Any) -> AuthResult:
    return AuthResult(success=True)


class RelaySession(SMTP):
    """An aiosmtpd session that owns one upstream connection for its whole life."""

    def __init__(self, upstream_host: str, upstream_port: int, **kwargs: Any) -> None:
        self.upstream: aiosmtplib.SMTP | None = None
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        super().__init__(self, **kwargs)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.upstream is None or not self.upstream.is_connected:
            self.upstream = aiosmtplib.SMTP(hostname=self.upstream_host, port=self.upstream_port, timeout=60)
            await self.upstream.connect()
        assert envelope.mail_from is not None and envelope.original_content is not None
        try:
            await self.upstream.sendmail(envelope.mail_from, envelope.rcpt_tos, envelope.original_content)
        except aiosmtplib.SMTPException as exc:
            return f"451 4.4.0 upstream failed: {exc}"
        return "250 2.0.0 OK relayed"

    def connection_lost(self, error: Exception | None) -> None:
        super().connection_lost(error)
        if self.upstream is not None and self.upstream.is_connected:
            self.upstream.close()


async def serve_bare_relay(
    host: str,
    upstream_port: int,
    ready: Synchronized[int],
    tls: tuple[str, str] | None = None,
) -> None:
    """``tls``: (certificate chain, key) to offer STARTTLS with, required before AUTH and MAIL."""
    loop = asyncio.get_running_loop()
    context = None
    if tls is not None:
        # The gateway's server settings (gateway/state/tls.py): defaults, TLS 1.2 at least.
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(*tls)

    def session() -> RelaySession:
        return RelaySession(
            host,
            upstream_port,
            data_size_limit=64 * 1024 * 1024,
            enable_SMTPUTF8=True,
            hostname="bare-relay.example.net",
            authenticator=accept_any_login,
            auth_require_tls=tls is not None,
            tls_context=context,
            require_starttls=tls is not None,
        )

    server = await loop.create_server(session, host, 0)
    ready.value = int(server.sockets[0].getsockname()[1])
    async with server:
        await server.serve_forever()


def run_bare_relay(
    host: str, upstream_port: int, ready: Synchronized[int], tls: tuple[str, str] | None = None
) -> None:
    """Process entry point (multiprocessing target)."""
    # aiosmtpd 1.4.6 warns about its own deprecated Session.login_data on every successful AUTH.
    logging.getLogger("mail.log").setLevel(logging.ERROR)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve_bare_relay(host, upstream_port, ready, tls))
