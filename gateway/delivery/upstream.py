"""The upstream transport: a small pool of SMTP connections, one strictly read transaction per message.

Each message is one MAIL, RCPT per recipient, DATA and the content, pipelined when the server offers
PIPELINING (RFC 2920), one command at a time otherwise. Every reply is checked against the command
that asked for it (``upstream_replies``): a reply of the wrong kind, an extra line, or a connection
out of step drops the connection and defers the message, and a recipient counts as delivered only on
the upstream's 2xx to the final dot, proven in step by the 250 to a NOOP sent after it. Waits follow
RFC 5321 §4.5.3.2: ``timeout`` (5 minutes) for the connection and each command, ``data_timeout``
(2 minutes) for the 354, ``final_reply_timeout`` (10 minutes) for the reply to the final dot.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import ssl
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from gateway.delivery.model import AttemptResult, RecipientOutcome, RecipientResult
from gateway.delivery.smtp_client import (
    Disconnected,
    ReplyError,
    SMTPConnection,
    SMTPError,
    prepare_content,
)
from gateway.delivery.upstream_replies import OutOfStep, Phase, Reply, expect
from gateway.errors import ConfigError
from gateway.logs import log_event
from gateway.netaddr import host_port, is_loopback
from gateway.settings import UpstreamSettings
from gateway.state.spool import SpoolEnvelope

log = logging.getLogger("gateway.delivery.worker")

IDLE_CONNECTION_LIMIT = 10.0
"""Seconds an unused upstream connection is kept open for the next message."""
PROBE_AFTER_IDLE = 2.0
"""A connection idle longer than this is checked with RSET before it carries another message."""
QUIT_TIMEOUT = 5.0
DATA_BYTES_PER_SECOND = 100_000
"""Time allowed for sending the content: one second per this many bytes, on top of the wait for
the reply to the final dot."""

_SESSION_ERRORS = (SMTPError, OSError, TimeoutError)
_NOOP = b"NOOP\r\n"


# What can never appear in a spooled address on an SMTP command line (intake refuses such
# addresses; this keeps a damaged spool entry from smuggling parameters or commands upstream).
_UNSAFE_IN_PATH = re.compile(r"[\s<>\x00-\x1f\x7f]")


def _path(address: str, encoding: str) -> bytes:
    """``<address>`` for MAIL FROM / RCPT TO. The spool holds plain ``local@domain`` addresses (or
    "" for the null sender), written as they are."""
    if _UNSAFE_IN_PATH.search(address):
        raise ValueError("the address cannot be written in an SMTP command")
    return b"<" + address.encode(encoding) + b">"


# For an address (from a damaged spool entry) that no SMTP command line can carry.
_UNWRITABLE_SENDER = "553 5.1.7 the sender address cannot be written in an SMTP command"
_UNWRITABLE_RECIPIENT = "553 5.1.3 the recipient address cannot be written in an SMTP command"


def _answered(address: str, code: int, message: str, remote: str) -> RecipientResult:
    """What the upstream's reply ``code message`` means for ``address``."""
    return RecipientResult(address, _classify(code), _reply(code, message), remote)


def _command(verb_and_path: bytes, options: Sequence[str] = ()) -> bytes:
    """One command line (options are the gateway's own SIZE/BODY/SMTPUTF8)."""
    return b" ".join((verb_and_path, *(option.encode("ascii") for option in options))) + b"\r\n"


class UpstreamTransport:
    """The organisation's mail server, over a small pool of reused SMTP connections."""

    def __init__(
        self, settings: UpstreamSettings, *, hostname: str, environ: Mapping[str, str] | None = None
    ) -> None:
        self._settings = settings
        self._hostname = hostname
        self._password = upstream_password(settings, os.environ if environ is None else environ)
        if settings.username and settings.security == "none" and not is_loopback(settings.host):
            raise ConfigError(
                "delivery.upstream: security is none, so the upstream password would cross the network "
                "in clear text; use starttls or tls (none is for a server on this machine only)"
            )
        self._tls_context = upstream_tls_context(settings) if settings.security != "none" else None
        self.description = host_port(settings.host, settings.port)
        self._idle: list[tuple[SMTPConnection, float]] = []
        self._in_use: set[SMTPConnection] = set()
        self._made = 0
        self._closing = False
        self.out_of_step = 0
        """Connections dropped because the upstream's replies did not match the commands sent."""

    def connections_open(self) -> int:
        return sum(1 for c in (*self._in_use, *(c for c, _ in self._idle)) if c.is_connected)

    def connections_made(self) -> int:
        return self._made

    async def send(self, envelope: SpoolEnvelope, content: bytes, recipients: Sequence[str]) -> AttemptResult:
        remote = self._settings.host
        for reused_first in (True, False):
            try:
                client, reused = await self._acquire(allow_reuse=reused_first)
            except OutOfStep as exc:
                reply = self._out_of_step(exc)
                return AttemptResult(tuple(RecipientResult(r, "deferred", reply, remote) for r in recipients))
            except _SESSION_ERRORS as exc:
                reply = _connection_problem(exc, "connecting to")
                return AttemptResult(tuple(RecipientResult(r, "deferred", reply) for r in recipients))
            keep = False
            try:
                result, keep = await self._transaction(client, envelope, content, recipients)
                return result
            except _StaleConnection as exc:
                if reused:
                    continue  # the pooled connection had died quietly: try once on a fresh one
                problem: BaseException = exc.__cause__ or exc
            except OutOfStep as exc:
                # Nothing read since the last proven reply can be trusted: defer every recipient of
                # this attempt (a failure, too, might have been another command's reply).
                reply = self._out_of_step(exc)
                return AttemptResult(tuple(RecipientResult(r, "deferred", reply, remote) for r in recipients))
            except _SESSION_ERRORS as exc:
                problem = exc
            finally:
                self._release(client, keep)
            reply = _connection_problem(problem, "talking to")
            return AttemptResult(tuple(RecipientResult(r, "deferred", reply, remote) for r in recipients))
        raise AssertionError("unreachable")  # pragma: no cover

    def _out_of_step(self, exc: OutOfStep) -> str:
        self.out_of_step += 1
        log_event(log, "upstream_out_of_step", logging.WARNING, phase=exc.phase, problem=exc.detail)
        return f"451 4.4.2 the upstream server's replies were out of step ({exc.detail}); will retry"

    async def _acquire(self, *, allow_reuse: bool) -> tuple[SMTPConnection, bool]:
        timeout = self._settings.timeout
        while allow_reuse and self._idle:
            client, since = self._idle.pop()
            idle = time.monotonic() - since
            if not client.is_connected or idle > IDLE_CONNECTION_LIMIT:
                await _quit(client)
                continue
            try:
                client.check_in_step("idle")
                if idle > PROBE_AFTER_IDLE:
                    async with asyncio.timeout(timeout):
                        [reply] = await _ask(client, [("rset", b"RSET\r\n")])
                    if reply.code != 250:
                        client.close()
                        continue
            except OutOfStep as exc:
                self._out_of_step(exc)  # a line sent while it waited: retire it, no message involved
                client.close()
                continue
            except _SESSION_ERRORS:
                client.close()
                continue
            self._in_use.add(client)
            return client, True
        settings = self._settings
        client = SMTPConnection(settings.host, settings.port, local_hostname=self._hostname)
        try:
            async with asyncio.timeout(timeout):
                # The extensions (SIZE, 8BITMIME, SMTPUTF8) are known before MAIL is composed.
                await client.connect(
                    tls_context=self._tls_context,
                    starttls=settings.security == "starttls",
                    username=settings.username,
                    password=self._password,
                    handshake_timeout=timeout,
                )
            client.check_in_step("greeting")
        except BaseException:
            client.close()
            raise
        self._made += 1
        self._in_use.add(client)
        return client, False

    def _release(self, client: SMTPConnection, keep: bool) -> None:
        self._in_use.discard(client)
        if keep and client.is_connected and not self._closing:
            self._idle.append((client, time.monotonic()))
        else:
            client.close()

    async def _transaction(
        self, client: SMTPConnection, envelope: SpoolEnvelope, content: bytes, recipients: Sequence[str]
    ) -> tuple[AttemptResult, bool]:
        """One MAIL/RCPT.../DATA transaction; returns the results and whether the connection is reusable."""
        remote = self._settings.host
        timeout = self._settings.timeout
        international = not envelope.mail_from.isascii() or not all(r.isascii() for r in recipients)
        options: list[str] = []
        if client.supports_extension("size"):
            options.append(f"SIZE={len(content)}")
        if not content.isascii() and client.supports_extension("8bitmime"):
            options.append("BODY=8BITMIME")
        if client.supports_extension("smtputf8") and (international or not _headers_ascii(content)):
            options.append("SMTPUTF8")
        elif international:
            reply = "550 5.6.7 the upstream server does not support SMTPUTF8, needed for this address"
            return AttemptResult(tuple(RecipientResult(r, "failed", reply, remote) for r in recipients)), True
        encoding = "utf-8" if "SMTPUTF8" in options else "ascii"
        results: dict[str, RecipientResult] = {}
        try:
            mail = _command(b"MAIL FROM:" + _path(envelope.mail_from, encoding), options)
        except ValueError:
            return AttemptResult(
                tuple(RecipientResult(r, "failed", _UNWRITABLE_SENDER) for r in recipients)
            ), True
        sent: list[str] = []
        rcpts: list[bytes] = []
        for address in recipients:
            try:
                rcpts.append(_command(b"RCPT TO:" + _path(address, encoding)))
            except ValueError:
                results[address] = RecipientResult(address, "failed", _UNWRITABLE_RECIPIENT)
            else:
                sent.append(address)
        if not sent:
            return AttemptResult(tuple(results[r] for r in recipients)), True

        def finished() -> AttemptResult:
            return AttemptResult(tuple(results[r] for r in recipients))

        pipelined = self._settings.pipelining and client.supports_extension("pipelining")
        try:
            if pipelined:
                # MAIL, every RCPT and DATA in one write (RFC 2920): the outcomes are the same.
                async with asyncio.timeout(timeout):
                    replies = await _ask(
                        client, [("mail", mail), *(("rcpt", line) for line in rcpts), ("data", b"DATA\r\n")]
                    )
                mail_reply, rcpt_replies, data_reply = replies[0], replies[1:-1], replies[-1]
            else:
                async with asyncio.timeout(timeout):
                    [mail_reply] = await _ask(client, [("mail", mail)])
        except (Disconnected, ConnectionError) as exc:
            raise _StaleConnection from exc  # nothing was delivered: safe to try on a fresh connection
        accepted: list[str] = []
        if mail_reply.code != 250:
            results.update((a, _answered(a, mail_reply.code, mail_reply.message, remote)) for a in sent)
            if not pipelined:
                return finished(), await _reset(client, timeout)
        else:
            if not pipelined:
                rcpt_replies = []
                for line in rcpts:
                    async with asyncio.timeout(timeout):
                        rcpt_replies.extend(await _ask(client, [("rcpt", line)]))
            for address, response in zip(sent, rcpt_replies, strict=True):
                if response.code in (250, 251):
                    accepted.append(address)
                else:
                    results[address] = _answered(address, response.code, response.message, remote)
        if not pipelined:
            if not accepted:
                return finished(), await _reset(client, timeout)
            async with asyncio.timeout(self._settings.data_timeout):
                [data_reply] = await _ask(client, [("data", b"DATA\r\n")])
        if data_reply.code != 354:
            results.update((a, _answered(a, data_reply.code, data_reply.message, remote)) for a in accepted)
            return finished(), await _reset(client, timeout)
        if not accepted:
            # The server took DATA with no recipient accepted, which RFC 2920 tells it not to do:
            # end the message empty at once, so that nothing is delivered, and start again.
            async with asyncio.timeout(timeout):
                await _finish(client, b"", proof=False)
            return finished(), await _reset(client, timeout)
        wait = self._settings.final_reply_timeout + len(content) / DATA_BYTES_PER_SECOND
        async with asyncio.timeout(wait):
            response = await _finish(client, content, proof=pipelined)
        if 200 <= response.code < 300:
            if not pipelined:
                # The proof that this 2xx answered the dot: the next command gets its own reply.
                async with asyncio.timeout(timeout):
                    await _ask(client, [("noop", _NOOP)])
            reply = _reply(response.code, response.message)
            results.update((a, RecipientResult(a, "delivered", reply, remote)) for a in accepted)
            return finished(), True
        results.update((a, _answered(a, response.code, response.message, remote)) for a in accepted)
        return finished(), await _reset(client, timeout)

    async def close_idle(self, older_than: float) -> None:
        """Politely close connections nobody has used for ``older_than`` seconds."""
        now = time.monotonic()
        stale = [(c, t) for c, t in self._idle if now - t > older_than or not c.is_connected]
        if not stale:
            return
        self._idle = [(c, t) for c, t in self._idle if (c, t) not in stale]
        await asyncio.gather(*(_quit(c) for c, _ in stale))

    async def close(self) -> None:
        """Say QUIT on every idle connection and close everything (the worker is stopping)."""
        self._closing = True
        idle, self._idle = self._idle, []
        try:
            await asyncio.gather(*(_quit(c) for c, _ in idle))
        finally:
            for client in (*(c for c, _ in idle), *self._in_use):
                client.close()
            self._closing = False


class _StaleConnection(Exception):
    """A pooled connection turned out to be closed when the next message was started on it."""


async def _ask(client: SMTPConnection, commands: Sequence[tuple[Phase, bytes]]) -> list[Reply]:
    """Send ``commands`` in one write and read one reply each, strictly (OutOfStep otherwise)."""
    client.check_in_step(commands[0][0])
    replies = await client.exchange([line for _, line in commands])
    for (phase, _), response in zip(commands, replies, strict=True):
        expect(phase, response)
    client.check_in_step(commands[-1][0])
    return replies


async def _finish(client: SMTPConnection, content: bytes, *, proof: bool) -> Reply:
    """Send the content and the final dot (and, when ``proof``, a NOOP in the same write); return the
    reply to the dot, read strictly."""
    client.check_in_step("dot")
    lines = [prepare_content(content) if content else b"", b".\r\n"]
    replies = await client.exchange([b"".join(lines), *([_NOOP] if proof else [])])
    expect("dot", replies[0])
    if proof:
        expect("noop", replies[1])
    client.check_in_step("noop" if proof else "dot")
    return replies[0]


async def _reset(client: SMTPConnection, seconds: float) -> bool:
    """RSET after a refused transaction; True if the connection can carry another message."""
    if not client.is_connected:
        return False
    try:
        async with asyncio.timeout(seconds):
            [reply] = await _ask(client, [("rset", b"RSET\r\n")])
    except _SESSION_ERRORS:
        return False
    return reply.code == 250


async def _quit(client: SMTPConnection) -> None:
    try:
        if client.is_connected:
            async with asyncio.timeout(QUIT_TIMEOUT):
                await client.quit()
    except _SESSION_ERRORS:
        pass
    finally:
        client.close()


def _classify(code: int) -> RecipientOutcome:
    if 200 <= code < 300:
        return "delivered"
    if 500 <= code < 600:
        return "failed"
    return "deferred"  # 4xx, and anything odd: retrying is the safe side


def _reply(code: int, message: str) -> str:
    return f"{code} {' '.join(message.split())}".strip()


def _connection_problem(exc: BaseException, doing: str) -> str:
    # A 4xx-style text: these are retried; the words end up in logs and, on expiry, in the DSN.
    if isinstance(exc, ReplyError) and exc.code > 0:
        return _reply(exc.code, exc.message)
    if isinstance(exc, ssl.SSLCertVerificationError):
        detail = f"TLS certificate not trusted ({exc.verify_message})"
    elif isinstance(exc, ssl.SSLError) or isinstance(exc.__cause__, ssl.SSLError):
        detail = f"TLS failed ({exc})"
    elif isinstance(exc, TimeoutError):
        detail = "timed out"
    else:
        detail = " ".join(str(exc).split()) or type(exc).__name__
    cause = exc.__cause__
    if isinstance(cause, ssl.SSLCertVerificationError):
        detail = f"TLS certificate not trusted ({cause.verify_message})"
    return f"451 4.4.1 problem {doing} the upstream server: {detail}"


def _headers_ascii(content: bytes) -> bool:
    end = content.find(b"\r\n\r\n")
    return (content if end < 0 else content[:end]).isascii()


# --- settings that need the outside world ---------------------------------------------------------------


def upstream_password(settings: UpstreamSettings, environ: Mapping[str, str]) -> str | None:
    """The upstream AUTH password, from the environment variable or file the settings name.

    Raises ConfigError, naming the setting, when it is missing or the settings are inconsistent.
    """
    if settings.password_env and settings.password_file:
        raise ConfigError("delivery.upstream: set password_env or password_file, not both")
    if settings.username is None:
        if settings.password_env or settings.password_file:
            raise ConfigError("delivery.upstream: a password is set but no username")
        return None
    if settings.password_env:
        password = environ.get(settings.password_env, "")
        if not password:
            raise ConfigError(
                f"delivery.upstream.password_env: the environment variable {settings.password_env} "
                "is not set or empty"
            )
        return password
    if settings.password_file:
        path = Path(settings.password_file)
        try:
            password = path.read_text(encoding="utf-8").rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"delivery.upstream.password_file: cannot read {path}: {exc}") from None
        if not password:
            raise ConfigError(f"delivery.upstream.password_file: {path} is empty")
        return password
    raise ConfigError(
        "delivery.upstream: username is set but no password; name an environment variable in "
        "password_env or a file in password_file"
    )


def upstream_tls_context(settings: UpstreamSettings) -> ssl.SSLContext:
    """Certificate checks on unless switched off; ``ca_file`` is trusted in addition to the system CAs."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    if settings.ca_file is not None:
        try:
            context.load_verify_locations(cafile=str(settings.ca_file))
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"delivery.upstream.ca_file: cannot load {settings.ca_file}: {exc}") from None
    if not settings.verify_certificates:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context
