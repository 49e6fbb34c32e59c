"""Who may use the SMTP intake, and for how long: admission, session budgets, free space; pure decisions.

Nothing here touches a socket, a file or the clock: the SMTP shell (``gateway.intake.smtp``) passes in the
times, counts and free-space figures it observed and applies what comes back. The shapes follow
sshd (``MaxStartups``, ``LoginGraceTime``), Postfix (``smtpd_min_data_rate``, the free-space check at
MAIL) and chasquid (a connection deadline; a connection closed at its third failure):

- Connections that have not logged in ("strangers") and members' sessions are counted apart. When
  every stranger slot is taken, a newcomer closes the *oldest idle stranger* instead of being turned
  away, so sockets held by strangers can never keep a member from connecting and logging in; logged-in
  sessions have a cap of their own.
- A stranger must log in within ``login_time`` and ``commands_before_login`` commands; NOOP, RSET and
  EHLO count like any other command and extend nothing.
- Every connection ends after ``session_lifetime``; DATA must keep up ``min_data_rate`` on average
  after ``data_rate_grace`` (Postfix's deadline: the grace plus one second per ``min_data_rate`` bytes).
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

from gateway.settings import AuthSettings, GatewaySettings, LimitsSettings

INODES_PER_MESSAGE = 8
"""Inodes one message may take: its spool file (written in tmp/ first), its status file, the gateway's own
messages committed with it (notices, review requests) and the audit records; generous on purpose."""


class Limit(enum.StrEnum):
    """Why the intake refused or ended a connection; the values are metric labels."""

    SHUTTING_DOWN = "shutting_down"
    TOO_MANY_CONNECTIONS = "too_many_connections"
    TOO_MANY_FROM_ADDRESS = "too_many_from_address"
    MADE_ROOM = "made_room"
    TOO_MANY_SESSIONS = "too_many_sessions"
    LOGIN_TOO_SLOW = "login_too_slow"
    COMMANDS_BEFORE_LOGIN = "commands_before_login"
    SESSION_TOO_LONG = "session_too_long"
    DATA_TOO_SLOW = "data_too_slow"
    IDLE = "idle"
    AUTH_FAILURES = "auth_failures"
    TOO_MANY_ERRORS = "too_many_errors"
    INSUFFICIENT_STORAGE = "insufficient_storage"


# The settings' defaults are the defaults here too: one place says what they are.
_LIMITS, _AUTH = LimitsSettings(), AuthSettings()


@dataclass(frozen=True)
class AdmissionLimits:
    """The limits that apply here, taken from ``limits:`` and ``auth:`` in the settings."""

    max_connections: int = _LIMITS.max_connections
    max_connections_per_client: int = _LIMITS.max_connections_per_client
    max_sessions: int = _LIMITS.max_sessions
    login_time: float = _LIMITS.login_time
    commands_before_login: int = _LIMITS.commands_before_login
    session_lifetime: float = _LIMITS.session_lifetime
    min_data_rate: int = _LIMITS.min_data_rate
    data_rate_grace: float = _LIMITS.data_rate_grace
    auth_failures_per_connection: int = _AUTH.max_failures_per_connection

    @classmethod
    def from_settings(cls, settings: GatewaySettings) -> AdmissionLimits:
        limits = settings.limits
        return cls(
            max_connections=limits.max_connections,
            max_connections_per_client=limits.max_connections_per_client,
            max_sessions=limits.max_sessions,
            login_time=limits.login_time,
            commands_before_login=limits.commands_before_login,
            session_lifetime=limits.session_lifetime,
            min_data_rate=limits.min_data_rate,
            data_rate_grace=limits.data_rate_grace,
            auth_failures_per_connection=settings.auth.max_failures_per_connection,
        )


K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True)
class Admitted(Generic[K]):
    """Let the connection in; close ``make_room`` first (with 421 4.7.0) if it is not None."""

    make_room: K | None = None


@dataclass(frozen=True)
class Refused:
    """Answer 421 and close: ``limit`` says which."""

    limit: Limit


class Admission(Generic[K]):
    """The open connections, strangers apart from members, and who gets in next.

    ``K`` is whatever identifies a connection to the caller (the shell uses its protocol objects).
    Strangers are kept in arrival order, so the first idle one found is the oldest.
    """

    def __init__(self, limits: AdmissionLimits) -> None:
        self.limits = limits
        self._strangers: dict[K, str] = {}  # connection -> client address, oldest first
        self._per_address: Counter[str] = Counter()
        self._members: set[K] = set()

    @property
    def strangers(self) -> int:
        return len(self._strangers)

    @property
    def members(self) -> int:
        return len(self._members)

    def arrive(self, key: K, address: str, idle: Callable[[K], bool]) -> Admitted[K] | Refused:
        """A new connection from ``address``; ``idle(k)`` tells whether stranger ``k`` may be closed."""
        limits = self.limits
        if self._per_address[address] >= limits.max_connections_per_client:
            return Refused(Limit.TOO_MANY_FROM_ADDRESS)
        make_room: K | None = None
        if len(self._strangers) >= limits.max_connections:
            make_room = next((known for known in self._strangers if idle(known)), None)
            if make_room is None:
                return Refused(Limit.TOO_MANY_CONNECTIONS)
            self.leave(make_room)
        self._strangers[key] = address
        self._per_address[address] += 1
        return Admitted(make_room)

    def log_in(self, key: K) -> Limit | None:
        """A stranger logged in: it becomes a member's session, or the refusal if those are all taken."""
        if key in self._members:
            return None
        if len(self._members) >= self.limits.max_sessions:
            return Limit.TOO_MANY_SESSIONS
        self._forget_stranger(key)
        self._members.add(key)
        return None

    def leave(self, key: K) -> None:
        """The connection is closed (or about to be); unknown keys are ignored."""
        self._forget_stranger(key)
        self._members.discard(key)

    def _forget_stranger(self, key: K) -> None:
        address = self._strangers.pop(key, None)
        if address is not None:
            self._per_address[address] -= 1
            if self._per_address[address] <= 0:
                del self._per_address[address]


@dataclass
class SessionClock:
    """One connection's budgets: times are the caller's clock readings (seconds, any origin)."""

    limits: AdmissionLimits
    opened_at: float
    logged_in: bool = False
    commands_before_login: int = 0
    auth_failures: int = 0
    data_started: float | None = None
    data_received: int = 0

    def command(self) -> Limit | None:
        """Count one command line; the limit if it is one too many before logging in."""
        if self.logged_in:
            return None
        self.commands_before_login += 1
        if self.commands_before_login > self.limits.commands_before_login:
            return Limit.COMMANDS_BEFORE_LOGIN
        return None

    def log_in(self) -> None:
        self.logged_in = True

    def auth_failed(self) -> Limit | None:
        """Count one failed login; the limit once there have been too many on this connection."""
        self.auth_failures += 1
        if self.auth_failures >= self.limits.auth_failures_per_connection:
            return Limit.AUTH_FAILURES
        return None

    def data_begins(self, now: float) -> None:
        self.data_started = now
        self.data_received = 0

    def data_arrived(self, size: int) -> None:
        self.data_received += size

    def data_ends(self) -> None:
        self.data_started = None

    def deadline(self) -> tuple[float, Limit]:
        """The earliest time a budget runs out, and which one."""
        limits = self.limits
        candidates = [(self.opened_at + limits.session_lifetime, Limit.SESSION_TOO_LONG)]
        if not self.logged_in:
            candidates.append((self.opened_at + limits.login_time, Limit.LOGIN_TOO_SLOW))
        if self.data_started is not None and limits.min_data_rate > 0:
            allowed = limits.data_rate_grace + self.data_received / limits.min_data_rate
            candidates.append((self.data_started + allowed, Limit.DATA_TOO_SLOW))
        return min(candidates, key=lambda candidate: candidate[0])

    def expired(self, now: float) -> Limit | None:
        """The budget that has run out at ``now``, if any."""
        when, limit = self.deadline()
        return limit if now >= when else None


@dataclass(frozen=True)
class FreeSpace:
    """What the spool's file system has left for the gateway (``inodes`` None: it does not count them)."""

    bytes: int
    inodes: int | None


def storage_shortage(
    free: FreeSpace, message_size: int, reserve_bytes: int, reserve_inodes: int
) -> str | None:
    """Why a message of ``message_size`` bytes cannot be taken now ("bytes" or "inodes"), or None."""
    if free.bytes < message_size + reserve_bytes:
        return "bytes"
    if free.inodes is not None and free.inodes < reserve_inodes + INODES_PER_MESSAGE:
        return "inodes"
    return None


@dataclass
class ConditionLog:
    """Says when a condition starts and when it ends, so it is logged once, not at every occurrence."""

    current: str | None = None

    def update(self, condition: str | None) -> tuple[str | None, str | None] | None:
        """``(was, now)`` when the condition changed, else None."""
        if condition == self.current:
            return None
        was, self.current = self.current, condition
        return was, condition
