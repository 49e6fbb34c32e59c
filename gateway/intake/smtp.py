"""SMTP submission intake: the STARTTLS and implicit-TLS listeners, their limits, counters and shutdown.

Each connection is a ``SubmissionConnection`` (``gateway.intake.connection``), the asyncio shell
around a pure ``Session`` (``gateway.intake.session``): the command loop, every command, AUTH and
the DATA reader are the session's, written for this gateway rather than taken from aiosmtpd, because
aiosmtpd's own versions send replies without enhanced status codes, show Python error text to
clients, accept bare CR/LF in DATA, read DATA line by line, and neither advertise nor accept AUTH on
an implicit-TLS listener unless TLS is not required at all (aiosmtpd issues 274, 281). Here AUTH
works on both listeners and nowhere without TLS.

The end of DATA hands the checked submission to the decision layer's ``SubmissionCommitter``
(screening and spool commit), with the idle timer stopped; a message is answered 250 only after the
spool has it on disk and the decision is recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import ssl
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from gateway import replies
from gateway.decision.commit import SubmissionCommitter
from gateway.decision.screening import Screener
from gateway.errors import GatewayError
from gateway.histogram import Histogram, HistogramSnapshot
from gateway.intake.admission import (
    Admission,
    AdmissionLimits,
    Admitted,
    ConditionLog,
    FreeSpace,
    Limit,
    storage_shortage,
)
from gateway.intake.commands import forward_path_problem
from gateway.intake.connection import READ_CHUNK, SubmissionConnection
from gateway.intake.events import AUTH_LINE_LIMIT, COMMAND_LINE_LIMIT, LIMIT_REPLIES, MAX_ERRORS
from gateway.login_throttle import LoginThrottle
from gateway.logs import log_event
from gateway.replies import Reply
from gateway.settings import GatewaySettings
from gateway.state.opening import open_state
from gateway.state.ports import AccountsPort, QueuePort

__all__ = [
    "AUTH_LINE_LIMIT",
    "COMMAND_LINE_LIMIT",
    "LIMIT_REPLIES",
    "MAX_ERRORS",
    "READ_CHUNK",
    "SmtpStatistics",
    "SubmissionService",
    "forward_path_problem",
    "kernel_backlog",
    "spool_free_space",
]

logger = logging.getLogger(__name__)

TLS_HANDSHAKE_TIMEOUT = 60.0
PASSWORD_CHECKS_AT_ONCE = 4
SOMAXCONN_FILE = Path("/proc/sys/net/core/somaxconn")
SMALL_BACKLOG = 512
BACKLOG_HINT = "a burst of more connections may wait unanswered; raise net.core.somaxconn (sysctl)"


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
        window = settings.auth.failure_window
        # Several gateways on PostgreSQL: a client's failures count wherever they happen.
        shared = open_state(settings).counts.counter("login-failures", window)
        self.throttle = LoginThrottle(settings.auth.max_failures, window, shared=shared)
        # Each argon2 check takes tens of milliseconds and 64 MiB; bound how many run at once.
        self.password_checks = asyncio.Semaphore(PASSWORD_CHECKS_AT_ONCE)
        self.stopping = False
        self._servers: dict[str, asyncio.Server] = {}
        self._addresses: dict[str, tuple[str, int]] = {}
        self._connections: set[SubmissionConnection] = set()
        self.admission: Admission[SubmissionConnection] = Admission(AdmissionLimits.from_settings(settings))
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
                    lambda name=name, implicit_tls=implicit_tls: SubmissionConnection(
                        self, name, implicit_tls
                    ),
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
        for connection in list(self._connections):
            connection.close_if_idle()
        await self._wait_for_connections(grace)
        for connection in list(self._connections):
            connection.abort()
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
    def connection_opened(
        self, connection: SubmissionConnection, handler: asyncio.Task[None]
    ) -> Reply | None:
        """Register a new connection; return the 421 to send if it cannot be served."""
        self._connections.add(connection)
        self._all_closed.clear()
        self._handlers.add(handler)
        handler.add_done_callback(self._handlers.discard)
        if self.stopping:
            decision: Admitted[SubmissionConnection] | Limit = Limit.SHUTTING_DOWN
        else:
            address = connection.client_address
            arrived = self.admission.arrive(connection, address, SubmissionConnection.may_make_room)
            decision = arrived if isinstance(arrived, Admitted) else arrived.limit
        if isinstance(decision, Limit):
            self.counters.connections_refused += 1
            self.limit_reached(decision, connection.client_address)
            return LIMIT_REPLIES[decision]
        if decision.make_room is not None:
            decision.make_room.end(Limit.MADE_ROOM)
        self.counters.connections_total += 1
        return None

    def connection_closed(self, connection: SubmissionConnection) -> None:
        self.admission.leave(connection)
        self._connections.discard(connection)
        if not self._connections:
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
        folder = self.spool.disk_path
        if folder is None:
            return None  # not on this host's disk (a database): its own errors answer 451
        try:
            free = self.free_space(folder)
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
