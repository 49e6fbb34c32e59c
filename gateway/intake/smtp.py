"""SMTP submission intake: listeners, limits, TLS, AUTH, envelope checks, DATA -> screen -> spool -> reply.

aiosmtpd provides the connection plumbing (stream protocol, STARTTLS transport switch, idle timer);
the command loop, every command and the DATA reader are ours, because aiosmtpd's own versions send
replies without enhanced status codes, show Python error text to clients, accept bare CR/LF in DATA,
read DATA line by line, and neither advertise nor accept AUTH on an implicit-TLS listener unless TLS
is not required at all (aiosmtpd issues 274, 281). Here the TLS check looks at the transport itself,
so AUTH works on both listeners and nowhere without TLS.

The end of DATA hands the checked submission to the decision layer's ``SubmissionCommitter``
(screening and spool commit), with the idle timer stopped; a message is answered 250 only after the
spool has it on disk and the decision is recorded.
"""

from __future__ import annotations

import asyncio
import asyncio.sslproto as sslproto
import base64
import binascii
import contextlib
import dataclasses
import datetime
import email.utils
import functools
import logging
import os
import socket
import ssl
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from aiosmtpd.smtp import SMTP
from email_validator import EmailNotValidError, validate_email

from gateway import replies
from gateway.decision.commit import Committed, SubmissionCommitter
from gateway.decision.screening import Screener, Submission
from gateway.errors import GatewayError
from gateway.histogram import Histogram, HistogramSnapshot
from gateway.intake.admission import (
    Admission,
    AdmissionLimits,
    Admitted,
    ConditionLog,
    FreeSpace,
    Limit,
    SessionClock,
    storage_shortage,
)
from gateway.intake.dataread import DataReader
from gateway.intake.submission_checks import IntakeRefusal, check_submitted, missing_headers, too_big
from gateway.logs import describe_error, log_event
from gateway.netaddr import is_loopback
from gateway.replies import Reply
from gateway.settings import GatewaySettings
from gateway.state.accounts import LoginThrottle
from gateway.state.ports import AccountsPort, QueuePort
from gateway.state.spool import Spool

logger = logging.getLogger(__name__)

COMMAND_LINE_LIMIT = 2048
"""Longest command line: RFC 5321's 512 octets plus room for MAIL parameters (SIZE, BODY, AUTH...)."""
AUTH_LINE_LIMIT = 12288
"""Longest AUTH command or SASL response line (RFC 4954 section 4)."""
MAX_ERRORS = 20
"""Error replies on one connection before it is closed (Postfix's smtpd_hard_error_limit)."""
READ_CHUNK = 256 * 1024
TLS_HANDSHAKE_TIMEOUT = 60.0
PASSWORD_CHECKS_AT_ONCE = 4
SOMAXCONN_FILE = Path("/proc/sys/net/core/somaxconn")
SMALL_BACKLOG = 512
BACKLOG_HINT = "a burst of more connections may wait unanswered; raise net.core.somaxconn (sysctl)"

# What a connection is told when the intake ends it or turns it away, by the limit that did it.
LIMIT_REPLIES: dict[Limit, Reply] = {
    Limit.SHUTTING_DOWN: replies.SHUTTING_DOWN,
    Limit.TOO_MANY_CONNECTIONS: replies.TOO_MANY_CONNECTIONS,
    Limit.TOO_MANY_FROM_ADDRESS: replies.TOO_MANY_CONNECTIONS_FROM_YOU,
    Limit.MADE_ROOM: replies.MADE_ROOM,
    Limit.TOO_MANY_SESSIONS: replies.TOO_MANY_SESSIONS,
    Limit.LOGIN_TOO_SLOW: replies.LOGIN_TOO_SLOW,
    Limit.COMMANDS_BEFORE_LOGIN: replies.TOO_MANY_COMMANDS_BEFORE_LOGIN,
    Limit.SESSION_TOO_LONG: replies.SESSION_TOO_LONG,
    Limit.DATA_TOO_SLOW: replies.DATA_TOO_SLOW,
    Limit.IDLE: replies.TIMEOUT,
    Limit.AUTH_FAILURES: replies.AUTH_TOO_MANY_FAILURES,
    Limit.TOO_MANY_ERRORS: replies.TOO_MANY_ERRORS,
    Limit.INSUFFICIENT_STORAGE: replies.INSUFFICIENT_STORAGE,
}


def kernel_backlog() -> int:
    """The kernel's cap on a listener's queue (net.core.somaxconn); asking for more gets no more."""
    try:
        return max(1, int(SOMAXCONN_FILE.read_text(encoding="ascii").strip()))
    except (OSError, ValueError):
        return socket.SOMAXCONN


def spool_free_space(path: Path) -> FreeSpace:
    """Free bytes and inodes an unprivileged writer may use on ``path``'s file system."""
    stats = os.statvfs(path)
    # Some file systems (btrfs, some network ones) report no inode counts at all: nothing to check.
    inodes = stats.f_favail if stats.f_files > 0 else None
    return FreeSpace(bytes=stats.f_bavail * stats.f_frsize, inodes=inodes)


class _ClientGone(Exception):
    """The client closed the connection or the TLS handshake failed."""


@dataclass(frozen=True)
class SmtpStatistics:
    """Counters of the intake since start (``*_total``) and the connections open now."""

    connections_open: int
    sessions_open: int
    connections_total: int
    connections_refused_total: int
    refusals_total: dict[str, int]
    auth_successes_total: int
    auth_failures_total: int
    auth_throttled_total: int
    messages_accepted_total: int
    messages_refused_total: int
    messages_deferred_total: int
    bytes_accepted_total: int
    commits_in_flight: int
    submission_seconds: HistogramSnapshot | None = None  # end of DATA to the reply


@dataclass
class _Counters:
    connections_total: int = 0
    connections_refused: int = 0
    auth_successes: int = 0
    auth_failures: int = 0
    auth_throttled: int = 0
    messages_accepted: int = 0
    messages_refused: int = 0
    messages_deferred: int = 0
    bytes_accepted: int = 0


@dataclass
class _Transaction:
    """One MAIL ... DATA transaction; RSET, EHLO, HELO, STARTTLS and the end of DATA start a new one."""

    mail_from: str | None = None
    smtp_utf8: bool = False
    rcpt_tos: list[str] = field(default_factory=list)


class SubmissionService:
    """The STARTTLS (587-style) and implicit-TLS (465-style) submission listeners and their connections."""

    def __init__(
        self,
        settings: GatewaySettings,
        spool: QueuePort,
        accounts: AccountsPort,
        screener: Screener,
        tls_context: ssl.SSLContext,
    ) -> None:
        self.settings = settings
        self.spool = spool
        self.accounts = accounts
        self.screener = screener
        self.tls_context = tls_context
        self.throttle = LoginThrottle(settings.auth.max_failures, settings.auth.failure_window)
        # Each argon2 check takes tens of milliseconds and 64 MiB; bound how many run at once.
        self.password_checks = asyncio.Semaphore(PASSWORD_CHECKS_AT_ONCE)
        self.stopping = False
        self._servers: dict[str, asyncio.Server] = {}
        self._addresses: dict[str, tuple[str, int]] = {}
        self._protocols: set[SubmissionProtocol] = set()
        self.admission: Admission[SubmissionProtocol] = Admission(AdmissionLimits.from_settings(settings))
        self.refusals: Counter[Limit] = Counter()
        self.free_space: Callable[[Path], FreeSpace] = spool_free_space  # replaceable in tests
        self._storage = ConditionLog()
        self._handlers: set[asyncio.Task[None]] = set()
        self._all_closed = asyncio.Event()
        self._all_closed.set()
        self.counters = _Counters()
        self.submission_time = Histogram()
        self.committer = SubmissionCommitter(spool, screener)

    async def start(self) -> None:
        """Bind the enabled listeners (port 0 picks a free port; see ``addresses``)."""
        loop = asyncio.get_running_loop()
        server_settings = self.settings.server
        # asyncio's default backlog (100) let the kernel drop connections of a burst unanswered.
        backlog = server_settings.listen_backlog or kernel_backlog()
        if backlog < SMALL_BACKLOG:
            log_event(logger, "smtp.small_backlog", logging.WARNING, backlog=backlog, hint=BACKLOG_HINT)
        listeners = (
            ("submission", server_settings.submission, False),
            ("submissions", server_settings.submissions, True),
        )
        try:
            for name, listener, implicit_tls in listeners:
                if not listener.enabled:
                    continue
                server = await loop.create_server(
                    lambda name=name, implicit_tls=implicit_tls: SubmissionProtocol(self, name, implicit_tls),
                    host=listener.host,
                    port=listener.port,
                    backlog=backlog,
                    ssl=self.tls_context if implicit_tls else None,
                    ssl_handshake_timeout=(
                        min(TLS_HANDSHAKE_TIMEOUT, self.settings.limits.command_timeout)
                        if implicit_tls
                        else None
                    ),
                )
                self._servers[name] = server
                host, port = server.sockets[0].getsockname()[:2]
                self._addresses[name] = (str(host), int(port))
        except OSError as exc:
            await self.stop(0)
            raise GatewayError(f"cannot listen for SMTP: {exc}") from exc

    @property
    def addresses(self) -> dict[str, tuple[str, int]]:
        """``{"submission": (host, port), "submissions": (host, port)}`` of the bound listeners."""
        return dict(self._addresses)

    async def stop(self, grace: float) -> None:
        """Stop accepting; close idle connections at once; give transactions ``grace`` seconds; close.

        Spool commits already started always finish (and their clients get their 250) first.
        """
        self.stopping = True
        for server in self._servers.values():
            server.close()
        for protocol in list(self._protocols):
            protocol.close_if_idle()
        await self._wait_for_connections(grace)
        for protocol in list(self._protocols):
            protocol.abort()
        await self._wait_for_connections(1.0)
        await self.committer.wait_for_commits()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        for server in self._servers.values():
            await server.wait_closed()
        self._servers.clear()

    async def _wait_for_connections(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._all_closed.wait()

    def statistics(self) -> SmtpStatistics:
        counters = self.counters
        admission = self.admission
        return SmtpStatistics(
            connections_open=admission.strangers + admission.members,
            sessions_open=admission.members,
            connections_total=counters.connections_total,
            connections_refused_total=counters.connections_refused,
            refusals_total={limit.value: count for limit, count in self.refusals.items()},
            auth_successes_total=counters.auth_successes,
            auth_failures_total=counters.auth_failures,
            auth_throttled_total=counters.auth_throttled,
            messages_accepted_total=counters.messages_accepted,
            messages_refused_total=counters.messages_refused,
            messages_deferred_total=counters.messages_deferred,
            bytes_accepted_total=counters.bytes_accepted,
            commits_in_flight=self.committer.commits_in_flight,
            submission_seconds=self.submission_time.snapshot(),
        )

    # --- used by the connections ---------------------------------------------------------------
    def connection_opened(self, protocol: SubmissionProtocol, handler: asyncio.Task[None]) -> Reply | None:
        """Register a new connection; return the 421 to send if it cannot be served."""
        self._protocols.add(protocol)
        self._all_closed.clear()
        self._handlers.add(handler)
        handler.add_done_callback(self._handlers.discard)
        if self.stopping:
            decision: Admitted[SubmissionProtocol] | Limit = Limit.SHUTTING_DOWN
        else:
            address = protocol.client_address
            arrived = self.admission.arrive(protocol, address, SubmissionProtocol.may_make_room)
            decision = arrived if isinstance(arrived, Admitted) else arrived.limit
        if isinstance(decision, Limit):
            self.counters.connections_refused += 1
            self.limit_reached(decision, protocol.client_address)
            return LIMIT_REPLIES[decision]
        if decision.make_room is not None:
            decision.make_room.end(Limit.MADE_ROOM)
        self.counters.connections_total += 1
        return None

    def connection_closed(self, protocol: SubmissionProtocol) -> None:
        self.admission.leave(protocol)
        self._protocols.discard(protocol)
        if not self._protocols:
            self._all_closed.set()

    def limit_reached(self, limit: Limit, client: str) -> None:
        """Count and log a connection turned away or ended by a limit."""
        self.refusals[limit] += 1
        level = logging.INFO if limit in (Limit.IDLE, Limit.SHUTTING_DOWN) else logging.WARNING
        log_event(logger, "smtp.limit", level, client=client, limit=limit.value)

    def storage_refusal(self, size: int | None) -> Reply | None:
        """452 4.3.1 if the spool cannot take a message of ``size`` bytes (None: the largest allowed)."""
        limits = self.settings.limits
        needed = limits.max_message_size if size is None else size
        try:
            free = self.free_space(self.spool.root)
        except OSError as exc:
            # Not knowing is no reason to refuse: a full disk still fails the commit, with a 451.
            shortage: str | None = None
            self._log_storage(f"unknown: {exc.strerror}")
        else:
            shortage = storage_shortage(free, needed, limits.spool_reserve_bytes, limits.spool_reserve_inodes)
            self._log_storage(shortage, free)
        if shortage is None:
            return None
        self.refusals[Limit.INSUFFICIENT_STORAGE] += 1
        return replies.INSUFFICIENT_STORAGE

    def _log_storage(self, condition: str | None, free: FreeSpace | None = None) -> None:
        change = self._storage.update(condition)
        if change is None:
            return  # once per condition, not at every MAIL
        was, now = change
        if now is None:
            log_event(logger, "smtp.storage_ok", was=was)
        elif free is None:
            log_event(logger, "smtp.storage_unknown", logging.WARNING, error=now)
        else:
            log_event(
                logger,
                "smtp.storage_low",
                logging.WARNING,
                short_of=now,
                free_bytes=free.bytes,
                free_inodes=free.inodes,
                reserve_bytes=self.settings.limits.spool_reserve_bytes,
                reserve_inodes=self.settings.limits.spool_reserve_inodes,
            )


def parse_path(arg: str, keyword: str) -> tuple[str, list[str]] | None:
    """Split ``FROM:<path> PARAM...`` / ``TO:<path> PARAM...``; None if the syntax is wrong."""
    if arg[: len(keyword)].upper() != keyword:
        return None
    rest = arg[len(keyword) :].strip()
    if rest.startswith("<"):
        end = rest.find(">")
        if end < 0:
            return None
        path, tail = rest[1:end], rest[end + 1 :]
        if tail and not tail[0].isspace():
            return None
    else:
        # Lenient, like Postfix: some clients omit the angle brackets.
        path, _, tail = rest.partition(" ")
        if not path:
            return None
    return path.strip(), tail.split()


def parse_parameters(words: list[str]) -> dict[str, str | None] | None:
    """ESMTP ``KEY[=VALUE]`` parameters by upper-cased key; None if one is malformed."""
    parameters: dict[str, str | None] = {}
    for word in words:
        key, equals, value = word.partition("=")
        if not key.isascii() or not key.replace("-", "").isalnum() or (equals and not value):
            return None
        parameters[key.upper()] = value if equals else None
    return parameters


# Committee mail goes to the same few addresses again and again; validating one costs more than
# the rest of a RCPT command.
@functools.lru_cache(maxsize=4096)
def forward_path_problem(path: str) -> str | None:
    """Why a RCPT address is refused, in words; None if it is a plain ``local@domain`` address."""
    if not path:
        return "the address is empty"
    if path.startswith("@"):
        return "source routes (@relay:user@domain) are not accepted"
    if '"' in path or "\\" in path:
        return "quoted local parts are not accepted"
    local, at, domain = path.rpartition("@")
    if not at or not local or not domain:
        return "the address has no domain"
    if "@" in local:
        return "the address has more than one @"
    if "%" in local:
        return "the percent hack (user%host@relay) is not accepted"
    if "!" in local:
        return "bang paths (host!user) are not accepted"
    if domain.startswith("["):
        return "address literals (user@[192.0.2.1]) are not accepted"
    try:
        validate_email(path, check_deliverability=False, test_environment=True, allow_smtputf8=True)
    except EmailNotValidError as exc:
        return f"the address is not valid ({exc})"
    return None


CommandHandler = Callable[["SubmissionProtocol", str], Awaitable[Reply | None]]


class SubmissionProtocol(SMTP):
    """One client connection. Commands are dispatched from an explicit table (see ``COMMANDS``)."""

    # aiosmtpd sizes its StreamReader buffer from this; we read in chunks, so give it room.
    line_length_limit = READ_CHUNK

    def __init__(self, service: SubmissionService, listener: str, implicit_tls: bool) -> None:
        settings = service.settings
        super().__init__(
            _NO_HOOKS,
            data_size_limit=settings.limits.max_message_size,
            enable_SMTPUTF8=True,
            hostname=settings.server.hostname,
            ident="conduct-gateway",
            tls_context=None if implicit_tls else service.tls_context,
            timeout=settings.limits.command_timeout,
            loop=asyncio.get_running_loop(),
        )
        # aiosmtpd grows a class-wide dict on every EHLO; keep a private one.
        self.command_size_limits = {}
        self.service = service
        self.listener = listener
        self.implicit_tls = implicit_tls
        self.client_address = ""
        self._inbox = bytearray()
        self._txn = _Transaction()
        self._refusal: Reply | None = None
        self._waiting_for_command = False
        self._in_data = False
        self._errors = 0
        self._member_address: str | None = None
        self._lost = False
        self._close_after_reply = False
        self._idle_deadline: float | None = None  # loop time; None while the idle timer is stopped
        self._clock = SessionClock(service.admission.limits, opened_at=self.loop.time())
        self._checking_password = False

    # --- connection life cycle -----------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        upgrade = self._original_transport is not None
        super().connection_made(transport)
        if upgrade:
            # RFC 3207 4.2: forget everything learnt before TLS (aiosmtpd renewed the session already).
            self._member_address = None
            return
        peer = transport.get_extra_info("peername")
        self.client_address = str(peer[0]) if peer else ""
        assert self._handler_coroutine is not None
        self._refusal = self.service.connection_opened(self, self._handler_coroutine)

    def connection_lost(self, error: Exception | None) -> None:
        if self._lost:
            return
        self._lost = True
        super().connection_lost(error)
        self.service.connection_closed(self)

    def eof_received(self) -> bool | None:
        # aiosmtpd cancels the command loop here, dropping commands a client pipelined before it
        # half-closed; instead let the loop finish the buffer and meet the end of input itself.
        keep_open = asyncio.StreamReaderProtocol.eof_received(self)
        return False if self._tls_protocol is not None else keep_open

    def _timeout_cb(self) -> None:
        self.end(Limit.IDLE)

    def end(self, limit: Limit) -> None:
        """Close the connection at once with the 421 that names ``limit`` (counted and logged)."""
        if self.transport is None or self.transport.is_closing():
            return
        self.service.limit_reached(limit, self.client_address)
        self._send_and_close(LIMIT_REPLIES[limit])

    def may_make_room(self) -> bool:
        """Whether this connection, not logged in, may be closed for a newcomer: not while its
        password is being checked (the one step of a stranger's that is ours to finish)."""
        return not self._checking_password

    def _send_and_close(self, reply: Reply) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(f"{reply}\r\n".encode())  # type: ignore[attr-defined]
            transport.close()

    def close_if_idle(self) -> None:
        """On shutdown: a connection waiting for a command, outside a transaction, is closed at once."""
        if self._waiting_for_command and self._txn.mail_from is None and not self._in_data:
            self._send_and_close(replies.SHUTTING_DOWN)

    def abort(self) -> None:
        transport = self.transport
        if transport is not None:
            transport.abort()  # type: ignore[attr-defined]
        if self._original_transport is not None:
            self._original_transport.abort()  # type: ignore[attr-defined]

    def _reset_timeout(self, duration: float | None = None) -> None:
        # Called for every command and every chunk of DATA. Replacing a timer each time costs about
        # as much as reading the command: move a deadline instead, and let one timer follow it.
        now = self.loop.time()
        self._idle_deadline = now + (duration or self._timeout_duration)
        # The session's budgets (login time, lifetime, DATA rate) may run out before the idle time.
        deadline = min(self._idle_deadline, self._clock.deadline()[0])
        handle = self._timeout_handle
        # A new timer unless one is pending that fires before the deadline (it then follows it).
        if handle is None or handle.cancelled() or not now <= handle.when() <= deadline:
            if handle is not None:
                handle.cancel()
            self._timeout_handle = self.loop.call_at(deadline, self._idle_check)

    def _idle_check(self) -> None:
        idle_deadline = self._idle_deadline
        if idle_deadline is None:
            return  # stopped since it was set; the next reset starts a timer again
        now = self.loop.time()
        limit = self._clock.expired(now)
        if limit is None and now >= idle_deadline:
            limit = Limit.IDLE
        if limit is not None:
            self.end(limit)
        else:
            deadline = min(idle_deadline, self._clock.deadline()[0])
            self._timeout_handle = self.loop.call_at(deadline, self._idle_check)

    def _stop_timer(self) -> None:
        self._idle_deadline = None

    # --- input -----------------------------------------------------------------------------------
    async def _fill(self) -> None:
        chunk = await self._reader.read(READ_CHUNK)
        if not chunk:
            raise _ClientGone
        self._inbox += chunk

    async def _read_line(self, limit: int) -> bytes | None:
        """The next line, with its line ending; None if longer than ``limit`` (then skipped whole)."""
        start = 0
        too_long = False
        while True:
            end = self._inbox.find(b"\n", start)
            if end >= 0:
                line = bytes(self._inbox[: end + 1])
                del self._inbox[: end + 1]
                return None if too_long or len(line) > limit else line
            if len(self._inbox) > limit:
                too_long = True
                self._inbox.clear()
            start = len(self._inbox)
            await self._fill()

    # --- the command loop ------------------------------------------------------------------------
    async def _handle_client(self) -> None:
        try:
            if self._refusal is not None:
                await self.push(str(self._refusal))
                self._close()
                return
            await self.push(str(replies.greeting(self.hostname)))
            while self.transport is not None and not self.transport.is_closing():
                if self.service.stopping and self._txn.mail_from is None:
                    await self.push(str(replies.SHUTTING_DOWN))
                    self._close()
                    return
                self._waiting_for_command = True
                try:
                    line = await self._read_line(AUTH_LINE_LIMIT)
                finally:
                    self._waiting_for_command = False
                self._reset_timeout()
                over_budget = self._clock.command()
                if over_budget is not None:
                    await self._end_after_reply(over_budget)
                    return
                reply = await self._run_command(line)
                if reply is None:
                    continue
                if reply.code >= 500:
                    self._errors += 1
                    if self._errors >= MAX_ERRORS:
                        await self._end_after_reply(Limit.TOO_MANY_ERRORS)
                        return
                await self.push(str(reply))
                if self._close_after_reply:
                    self._close()
                    return
        except asyncio.CancelledError:
            self._close()
            raise
        except (_ClientGone, ConnectionError):
            self._close()

    def _close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    async def _end_after_reply(self, limit: Limit) -> None:
        self.service.limit_reached(limit, self.client_address)
        await self.push(str(LIMIT_REPLIES[limit]))
        self._close()

    async def _run_command(self, line: bytes | None) -> Reply | None:
        if line is None or (len(line) > COMMAND_LINE_LIMIT and not line[:5].upper().startswith(b"AUTH ")):
            return replies.LINE_TOO_LONG
        text = line.rstrip(b"\r\n")
        if b"\r" in text or b"\0" in text:
            return replies.BAD_COMMAND_BYTES
        verb_bytes, _, arg_bytes = text.partition(b" ")
        verb = verb_bytes.decode("ascii", "replace").upper()
        handler = self.COMMANDS.get(verb)
        if handler is None:
            log_event(logger, "smtp.unknown_command", logging.DEBUG, client=self.client_address)
            return replies.UNRECOGNIZED
        try:
            arg = arg_bytes.decode("utf-8").strip()
        except UnicodeDecodeError:
            return replies.BAD_UTF8
        try:
            return await handler(self, arg)
        except (_ClientGone, ConnectionError, asyncio.CancelledError):
            raise
        except Exception as exc:
            # Never show Python error text to a client (aiosmtpd's default does): log, answer 451.
            log_event(
                logger,
                "smtp.internal_error",
                logging.ERROR,
                client=self.client_address,
                command=verb,
                error=describe_error(exc),
            )
            self._txn = _Transaction()
            return replies.INTERNAL_ERROR

    # --- state helpers -------------------------------------------------------------------------------
    def _tls_active(self) -> bool:
        transport = self.transport
        return transport is not None and transport.get_extra_info("ssl_object") is not None

    def _auth_allowed(self) -> bool:
        if self._tls_active():
            return True
        return self.service.settings.auth.allow_plaintext_auth_on_loopback and is_loopback(
            self.client_address
        )

    def _member(self) -> str | None:
        return self._member_address

    def _needs_session(self) -> Reply | None:
        """The reply refusing a transaction command before EHLO, TLS or AUTH; None if allowed."""
        assert self.session is not None
        if not self.session.host_name:
            return replies.SEND_EHLO_FIRST
        if self._member() is None:
            if not self._auth_allowed() and self.tls_context is not None:
                return replies.STARTTLS_REQUIRED
            return replies.AUTH_REQUIRED
        return None

    # --- commands ----------------------------------------------------------------------------------
    async def cmd_ehlo(self, arg: str) -> Reply | None:
        if not arg:
            return replies.syntax("EHLO hostname")
        assert self.session is not None
        self._txn = _Transaction()
        self.session.host_name = arg
        self.session.extended_smtp = True
        extensions = [
            "PIPELINING",
            f"SIZE {self.service.settings.limits.max_message_size}",
            "8BITMIME",
            "SMTPUTF8",
            "ENHANCEDSTATUSCODES",
        ]
        if self.tls_context is not None and not self._tls_active():
            extensions.append("STARTTLS")
        if self._auth_allowed():
            extensions.append("AUTH PLAIN LOGIN")
        return replies.ehlo(self.hostname, extensions)

    async def cmd_helo(self, arg: str) -> Reply | None:
        if not arg:
            return replies.syntax("HELO hostname")
        assert self.session is not None
        self._txn = _Transaction()
        self.session.host_name = arg
        self.session.extended_smtp = False
        return replies.helo(self.hostname)

    async def cmd_starttls(self, arg: str) -> Reply | None:
        if arg:
            return replies.syntax("STARTTLS")
        if self._tls_active():
            return replies.TLS_ALREADY_ACTIVE
        if self.tls_context is None:
            return replies.TLS_NOT_AVAILABLE
        self._txn = _Transaction()
        # RFC 3207 4.2 (and CVE-2011-0411): commands pipelined in plaintext after STARTTLS are dropped.
        self._inbox.clear()
        await self.push(str(replies.READY_FOR_TLS))
        waiter = self.loop.create_future()
        self._tls_protocol = sslproto.SSLProtocol(self.loop, self, self.tls_context, waiter, server_side=True)
        self._original_transport = self.transport
        assert self._original_transport is not None
        self._original_transport.set_protocol(self._tls_protocol)
        self.transport = self._tls_protocol._app_transport
        self._tls_protocol.connection_made(self._original_transport)
        try:
            await waiter
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log_event(logger, "smtp.tls_failed", client=self.client_address, error=type(exc).__name__)
            # asyncio never tells a protocol whose TLS handshake failed that the connection is gone.
            self.transport.close()
            self.connection_lost(exc)
            raise _ClientGone from exc
        # aiosmtpd's connection_made() made a fresh session (no EHLO, no AUTH), as RFC 3207 requires.
        self._inbox.clear()
        return None

    async def cmd_auth(self, arg: str) -> Reply | None:
        assert self.session is not None
        if not self.session.host_name or not self.session.extended_smtp:
            return replies.SEND_EHLO_FIRST
        if not self._auth_allowed():
            return replies.AUTH_ENCRYPTION_REQUIRED
        if self._member_address is not None:
            return replies.AUTH_ALREADY
        if self._txn.mail_from is not None:
            return replies.AUTH_IN_TRANSACTION
        words = arg.split()
        if not words or len(words) > 2:
            return replies.syntax("AUTH mechanism [initial-response]")
        mechanism = words[0].upper()
        if mechanism not in ("PLAIN", "LOGIN"):
            return replies.AUTH_UNKNOWN_MECHANISM
        service = self.service
        if service.throttle.blocked(self.client_address):
            service.counters.auth_throttled += 1
            log_event(logger, "smtp.auth_throttled", logging.WARNING, client=self.client_address)
            return replies.AUTH_THROTTLED
        initial = words[1] if len(words) == 2 else None
        credentials = await (self._sasl_plain(initial) if mechanism == "PLAIN" else self._sasl_login(initial))
        if isinstance(credentials, Reply):
            return credentials
        login, password = credentials
        service.accounts.reload_if_changed()
        self._checking_password = True
        try:
            async with service.password_checks:
                member = await asyncio.to_thread(service.accounts.verify, login, password)
        finally:
            self._checking_password = False
        if member is None:
            service.throttle.record_failure(self.client_address)
            service.counters.auth_failures += 1
            log_event(
                logger, "smtp.auth_failed", logging.WARNING, client=self.client_address, mechanism=mechanism
            )
            return self._closing_on(self._clock.auth_failed()) or replies.AUTH_FAILED
        refused = self._closing_on(service.admission.log_in(self))
        if refused is not None:
            return refused
        self.session.authenticated = True
        self._member_address = member
        self._clock.log_in()
        service.counters.auth_successes += 1
        log_event(logger, "smtp.auth_ok", client=self.client_address, member=member, mechanism=mechanism)
        return replies.AUTH_OK

    def _closing_on(self, limit: Limit | None) -> Reply | None:
        """The 421 for ``limit`` (counted), the connection to close after it; None without a limit."""
        if limit is None:
            return None
        self.service.limit_reached(limit, self.client_address)
        self._close_after_reply = True
        return LIMIT_REPLIES[limit]

    async def _sasl_response(self, challenge: str) -> bytes | Reply:
        await self.push(challenge)
        line = await self._read_line(AUTH_LINE_LIMIT)
        if line is None:
            return replies.AUTH_LINE_TOO_LONG
        answer = line.strip()
        if answer == b"*":
            return replies.AUTH_CANCELLED
        return _b64(answer)

    async def _sasl_plain(self, initial: str | None) -> tuple[str, str] | Reply:
        if initial is None:
            data = await self._sasl_response(replies.AUTH_CHALLENGE_EMPTY)
        else:
            # RFC 4954: "=" is an empty initial response.
            data = b"" if initial == "=" else _b64(initial.encode("ascii", "replace"))
        if isinstance(data, Reply):
            return data
        parts = data.split(b"\0")
        if len(parts) != 3:
            return replies.AUTH_BAD_PLAIN
        try:
            authzid, login, password = (part.decode("utf-8") for part in parts)
        except UnicodeDecodeError:
            return replies.AUTH_BAD_PLAIN
        if authzid and authzid.lower() != login.lower():
            return replies.AUTH_AUTHZID
        return login, password

    async def _sasl_login(self, initial: str | None) -> tuple[str, str] | Reply:
        if initial is None:
            user = await self._sasl_response(replies.AUTH_CHALLENGE_USERNAME)
        else:
            user = _b64(initial.encode("ascii", "replace"))
        if isinstance(user, Reply):
            return user
        password = await self._sasl_response(replies.AUTH_CHALLENGE_PASSWORD)
        if isinstance(password, Reply):
            return password
        try:
            return user.decode("utf-8"), password.decode("utf-8")
        except UnicodeDecodeError:
            return replies.AUTH_BAD_PLAIN

    async def cmd_mail(self, arg: str) -> Reply | None:
        refusal = self._needs_session()
        if refusal is not None:
            return refusal
        member = self._member()
        assert member is not None
        if self._txn.mail_from is not None:
            return replies.NESTED_MAIL
        parsed = parse_path(arg, "FROM:")
        parameters = parse_parameters(parsed[1]) if parsed is not None else None
        if parsed is None or parameters is None:
            return replies.syntax("MAIL FROM:<address> [SIZE=n] [BODY=8BITMIME] [SMTPUTF8]")
        sender = parsed[0]
        size = parameters.pop("SIZE", None)
        if size is not None:
            if not (size.isascii() and size.isdigit()):
                return replies.syntax("MAIL FROM:<address> SIZE=<bytes>")
            limit = self.service.settings.limits.max_message_size
            if int(size) > limit:
                return replies.message_size_exceeds(limit)
        body = parameters.pop("BODY", "7BIT")
        if body is None or body.upper() not in ("7BIT", "8BITMIME"):
            return replies.BAD_BODY_PARAMETER
        smtp_utf8 = "SMTPUTF8" in parameters
        if parameters.pop("SMTPUTF8", None) is not None:
            return replies.syntax("MAIL FROM:<address> SMTPUTF8 (SMTPUTF8 takes no value)")
        parameters.pop("AUTH", None)  # RFC 4954 5: accepted and ignored; the session says who sends
        if parameters:
            return replies.UNKNOWN_PARAMETER
        if not sender.isascii() and not smtp_utf8:
            return replies.SMTPUTF8_NEEDED
        self.service.accounts.reload_if_changed()
        if sender.lower() not in self.service.accounts.addresses_of(member):
            log_event(
                logger, "smtp.sender_refused", logging.WARNING, client=self.client_address, member=member
            )
            return replies.sender_not_yours(sender, member)
        # Postfix's check at MAIL: better a 452 now than a full upload that cannot be stored.
        no_room = self.service.storage_refusal(int(size) if size is not None else None)
        if no_room is not None:
            return no_room
        self._txn = _Transaction(mail_from=sender, smtp_utf8=smtp_utf8)
        return replies.SENDER_OK

    async def cmd_rcpt(self, arg: str) -> Reply | None:
        refusal = self._needs_session()
        if refusal is not None:
            return refusal
        if self._txn.mail_from is None:
            return replies.NEED_MAIL
        parsed = parse_path(arg, "TO:")
        parameters = parse_parameters(parsed[1]) if parsed is not None else None
        if parsed is None or parameters is None:
            return replies.syntax("RCPT TO:<address>")
        if parameters:
            return replies.UNKNOWN_PARAMETER
        recipient = parsed[0]
        problem = forward_path_problem(recipient)
        if problem is not None:
            log_event(logger, "smtp.recipient_refused", client=self.client_address, member=self._member())
            return replies.odd_forward_path(problem)
        if not recipient.isascii() and not self._txn.smtp_utf8:
            return replies.SMTPUTF8_NEEDED
        limit = self.service.settings.limits.max_recipients
        if recipient.lower() in (known.lower() for known in self._txn.rcpt_tos):
            return replies.RECIPIENT_OK
        if len(self._txn.rcpt_tos) >= limit:
            return replies.too_many_recipients(limit)
        self._txn.rcpt_tos.append(recipient)
        return replies.RECIPIENT_OK

    async def cmd_data(self, arg: str) -> Reply | None:
        refusal = self._needs_session()
        if refusal is not None:
            return refusal
        if self._txn.mail_from is None:
            return replies.NEED_MAIL
        if not self._txn.rcpt_tos:
            return replies.NEED_RCPT
        if arg:
            return replies.syntax("DATA")
        self._in_data = True
        try:
            await self.push(str(replies.START_DATA))
            reader = DataReader(self.service.settings.limits.max_message_size)
            self._clock.data_begins(self.loop.time())
            try:
                while not reader.consume(self._inbox):
                    before = len(self._inbox)
                    await self._fill()
                    self._clock.data_arrived(len(self._inbox) - before)
                    # Data still arriving keeps the session alive, if it arrives fast enough.
                    self._reset_timeout()
            except Exception:
                # Out of step with the client: the rest of the message must never be read as commands.
                self._close_after_reply = True
                raise
            # Deciding and storing may take a while; the idle timer must not cut it short.
            self._stop_timer()
            return await self._end_of_data(reader)
        finally:
            self._in_data = False
            self._clock.data_ends()
            self._txn = _Transaction()
            if self.transport is not None:
                self._reset_timeout()

    async def _end_of_data(self, reader: DataReader) -> Reply:
        service = self.service
        member = self._member()
        txn = self._txn
        assert member is not None and txn.mail_from is not None
        queue_id = Spool.new_queue_id()
        record = _Record(queue_id, member, self.client_address, self.listener, len(txn.rcpt_tos), reader.size)
        content = reader.content
        submission = Submission(
            queue_id=queue_id,
            mail_from=txn.mail_from,
            rcpt_tos=tuple(txn.rcpt_tos),
            authenticated_as=member,
            content=content or b"",
            client_address=self.client_address,
        )
        checked = (
            too_big(reader.max_size)
            if reader.too_big or content is None
            else check_submitted(
                content,
                member=member,
                allowed=service.accounts.addresses_of(member),
                max_line_length=service.settings.limits.max_line_length,
            )
        )
        if isinstance(checked, IntakeRefusal):
            refusal = await service.committer.refused_at_intake(submission, checked.reply, checked.code)
            return self._finished(record, refusal)
        assert content is not None
        added = missing_headers(checked, self.hostname, _now())
        submission = dataclasses.replace(submission, content=added + content)
        finish = functools.partial(self._finished_commit, record)
        return await service.committer.decide(submission, self._received_header(queue_id), finish)

    def _finished_commit(self, record: _Record, committed: Committed) -> Reply:
        self.service.counters.bytes_accepted += committed.accepted_bytes
        return self._finished(record, committed.reply, committed.recipients)

    def _finished(self, record: _Record, reply: Reply, recipients: int | None = None) -> Reply:
        """Count and log the end of one transaction (one line, metadata only)."""
        self.service.submission_time.observe(time.monotonic() - record.started)
        counters = self.service.counters
        if reply.code < 400:
            counters.messages_accepted += 1
            outcome = "queued"
        elif reply.code < 500:
            counters.messages_deferred += 1
            outcome = "deferred"
        else:
            counters.messages_refused += 1
            outcome = "refused"
        log_event(
            logger,
            "smtp.transaction",
            queue_id=record.queue_id,
            member=record.member,
            client=record.client,
            listener=record.listener,
            recipients=record.recipients if recipients is None else recipients,
            size=record.size,
            outcome=outcome,
            reply=reply.code,
            status=reply.status,
        )
        return reply

    def _received_header(self, queue_id: str) -> bytes:
        # Trace without the client's address or EHLO name: a member's home IP or laptop name must not
        # reach the people a committee writes to.
        transport = self.transport
        ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
        protocol = "ESMTPSA" if ssl_object is not None else "ESMTPA"
        tls = ""
        if isinstance(ssl_object, ssl.SSLObject):
            cipher = ssl_object.cipher()
            if cipher is not None:
                tls = f"\r\n\t(using {cipher[1]} with cipher {cipher[0]} ({cipher[2]} bits))"
        stamp = email.utils.format_datetime(_now())
        header = f"Received: by {self.hostname} (conduct-gateway) with {protocol} id {queue_id}{tls};"
        return f"{header}\r\n\t{stamp}\r\n".encode("ascii", "replace")

    async def cmd_rset(self, arg: str) -> Reply | None:
        if arg:
            return replies.syntax("RSET")
        self._txn = _Transaction()
        return replies.OK

    async def cmd_noop(self, arg: str) -> Reply | None:
        return replies.OK

    async def cmd_quit(self, arg: str) -> Reply | None:
        if arg:
            return replies.syntax("QUIT")
        await self.push(str(replies.CLOSING))
        self._close()
        return None

    async def cmd_vrfy(self, arg: str) -> Reply | None:
        return replies.CANNOT_VRFY if arg else replies.syntax("VRFY address")

    async def cmd_expn(self, arg: str) -> Reply | None:
        return replies.NOT_IMPLEMENTED

    async def cmd_help(self, arg: str) -> Reply | None:
        return replies.HELP

    COMMANDS: ClassVar[dict[str, CommandHandler]] = {
        "EHLO": cmd_ehlo,
        "HELO": cmd_helo,
        "STARTTLS": cmd_starttls,
        "AUTH": cmd_auth,
        "MAIL": cmd_mail,
        "RCPT": cmd_rcpt,
        "DATA": cmd_data,
        "RSET": cmd_rset,
        "NOOP": cmd_noop,
        "QUIT": cmd_quit,
        "VRFY": cmd_vrfy,
        "EXPN": cmd_expn,
        "HELP": cmd_help,
    }


@dataclass(frozen=True)
class _Record:
    """What the transaction log line says about a message: never content, subject or recipients."""

    queue_id: str
    member: str
    client: str
    listener: str
    recipients: int
    size: int
    started: float = dataclasses.field(default_factory=time.monotonic)  # the end of DATA


class _NoHooks:
    """aiosmtpd wants a handler object; every command lives on SubmissionProtocol instead."""


_NO_HOOKS = _NoHooks()


def _b64(data: bytes) -> bytes | Reply:
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        return replies.AUTH_BAD_BASE64


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)
