"""What a submission session and its shell say to each other: events, answers' ports, limits and replies."""

from __future__ import annotations

import enum
from collections.abc import Collection
from dataclasses import dataclass
from typing import Protocol

from gateway import replies
from gateway.intake.admission import Limit
from gateway.intake.dataread import DataReader
from gateway.replies import Reply

COMMAND_LINE_LIMIT = 2048
"""Longest command line: RFC 5321's 512 octets plus room for MAIL parameters (SIZE, BODY, AUTH...)."""
AUTH_LINE_LIMIT = 12288
"""Longest AUTH command or SASL response line (RFC 4954 section 4)."""
MAX_ERRORS = 20
"""Error replies on one connection before it is closed (Postfix's smtpd_hard_error_limit)."""

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


class Signal(enum.Enum):
    """Events without data."""

    NEED_DATA = "need data"  # read more and call receive_data (b"" at the end of input)
    PAUSED = "paused"  # an answer (tls_began, credentials_checked, ...) is awaited
    CLOSED = "closed"  # send what is left, then close the connection; nothing more will come


NEED_DATA = Signal.NEED_DATA
PAUSED = Signal.PAUSED
CLOSED = Signal.CLOSED


@dataclass(frozen=True)
class StartTls:
    """Switch the connection to TLS now; call ``tls_began`` when the bytes read are the decrypted ones."""


@dataclass(frozen=True)
class CheckCredentials:
    """Check a login and password; answer ``credentials_checked`` with the member, or None."""

    login: str
    password: str
    mechanism: str


@dataclass(frozen=True)
class MessageReceived:
    """DATA is complete: screen and commit it, then answer ``message_answered`` with the reply."""

    member: str
    mail_from: str
    rcpt_tos: tuple[str, ...]
    data: DataReader  # the unstuffed content (None if too big), its size and the limit


Event = Signal | StartTls | CheckCredentials | MessageReceived


@dataclass(frozen=True)
class SessionConfig:
    """What a session knows of its connection and listener."""

    hostname: str
    client_address: str
    max_message_size: int
    max_recipients: int
    tls_active: bool  # implicit TLS: TLS from the first byte
    starttls_available: bool
    plaintext_auth_allowed: bool  # the loopback exception, when switched on


class SessionHost(Protocol):
    """The shell's answers to the quick questions a session asks; all synchronous."""

    def stopping(self) -> bool:
        """Whether the service is shutting down (the session then ends outside a transaction)."""

    def addresses_of(self, member: str) -> Collection[str]:
        """The member's own sender addresses, lower-cased (the accounts file reloaded if it changed)."""

    def storage_refusal(self, size: int | None) -> Reply | None:
        """The 452 if the spool cannot take ``size`` bytes now (None: the largest allowed)."""

    def auth_throttled(self) -> bool:
        """Whether this client has failed to log in too often lately (counted and logged if so)."""

    def auth_failed(self, mechanism: str) -> None:
        """Count and log a failed login."""

    def log_in(self, member: str, mechanism: str) -> Limit | None:
        """Admit the logged-in member's session (counted and logged); the limit if it cannot be."""

    def limit_reached(self, limit: Limit) -> None:
        """Count and log a limit that ends the connection."""
