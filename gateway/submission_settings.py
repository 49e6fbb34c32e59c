"""The mail clients' side of the settings: the listeners, their certificate, members' logins, the limits."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, NonNegativeInt, PositiveInt, ValidationInfo, field_validator

from gateway.settings_base import Port, Seconds, Section


class ListenerSettings(Section):
    """One SMTP submission listener."""

    enabled: bool = Field(True, description="Whether this listener is started.")
    host: str = Field("127.0.0.1", description="Address to listen on.")
    port: Port = Field(description="TCP port (0 picks a free one, for tests).")


class ServerSettings(Section):
    """How the gateway presents itself to mail clients."""

    hostname: str = Field("localhost", description="Name in the greeting and EHLO reply.")
    submission: ListenerSettings = Field(
        default=ListenerSettings(port=2587),
        description="STARTTLS listener (port 587 style).",
    )
    submissions: ListenerSettings = Field(
        default=ListenerSettings(port=2465),
        description="Implicit-TLS listener (port 465 style); Gmail's 'Send mail as' can use it.",
    )
    listen_backlog: PositiveInt | None = Field(
        None,
        description=(
            "Connections the kernel queues for each listener until the gateway accepts them. Default: "
            "the kernel's own limit (net.core.somaxconn, read at start), so a burst of connections is "
            "queued and answered instead of dropped unanswered."
        ),
    )


class TlsSettings(Section):
    """Certificate for both listeners. Without one, a self-signed certificate is made at first start."""

    cert_file: Path | None = Field(None, description="PEM certificate chain.")
    # validate_default: the both-or-neither check must also run when key_file is left out.
    key_file: Path | None = Field(None, description="PEM private key.", validate_default=True)

    @field_validator("key_file")
    @classmethod
    def _both_or_neither(cls, key: Path | None, info: ValidationInfo) -> Path | None:
        if (key is None) != (info.data.get("cert_file") is None):
            raise ValueError("set both cert_file and key_file, or neither")
        return key


class AuthSettings(Section):
    """Committee members' accounts."""

    users_file: Path = Field(Path("users.passwd"), description="argon2 password file (0600).")
    allow_plaintext_auth_on_loopback: bool = Field(
        False, description="Offer AUTH without TLS to clients on 127.0.0.1/::1 (local trials only)."
    )
    max_failures: PositiveInt = Field(5, description="Failed logins allowed per client address...")
    failure_window: Seconds = Field(900.0, description="...within this many seconds.")
    max_failures_per_connection: PositiveInt = Field(
        3, description="Failed logins on one connection before it is closed with 421 4.7.0 (as chasquid)."
    )


class LimitsSettings(Section):
    """Limits that protect the gateway, and the members who use it, from careless and hostile clients.

    Connections that have not logged in are counted apart from members' sessions, so strangers holding
    sockets can never keep a member out.
    """

    max_message_size: PositiveInt = Field(25 * 1024 * 1024, description="Bytes (SIZE).")
    max_recipients: PositiveInt = Field(100, description="RCPT TO commands per message.")
    max_connections: PositiveInt = Field(
        200,
        description=(
            "Concurrent connections that have not logged in (yet). When they are all taken, a new "
            "connection closes the oldest idle one of them (421 4.7.0) instead of being turned away."
        ),
    )
    max_connections_per_client: PositiveInt = Field(
        20, description="Concurrent connections not logged in, per client address; more get 421 4.7.0."
    )
    max_sessions: PositiveInt = Field(
        100, description="Concurrent logged-in sessions, counted apart from `max_connections`."
    )
    login_time: Seconds = Field(
        60.0,
        description=(
            "A connection must log in within this many seconds of connecting; NOOP, RSET or EHLO do "
            "not extend it."
        ),
    )
    commands_before_login: PositiveInt = Field(
        20, description="Commands a connection may send before it logs in (EHLO, STARTTLS, AUTH... count)."
    )
    session_lifetime: Seconds = Field(
        3600.0,
        description=(
            "Longest a connection may stay open, logged in or not, even while a message arrives (as "
            "chasquid's connection deadline); the mail program then reconnects. At 1 h, a message of "
            "`max_message_size` must arrive at about 7 KB/s or more."
        ),
    )
    min_data_rate: NonNegativeInt = Field(
        500,
        description=(
            "Bytes a second a message must arrive at, on average, once `data_rate_grace` has passed "
            "since DATA (Postfix's smtpd_min_data_rate); slower gets 421 4.4.2. 0 switches it off."
        ),
    )
    data_rate_grace: Seconds = Field(60.0, description="Seconds of DATA before `min_data_rate` applies.")
    command_timeout: Seconds = Field(300.0, description="Idle time allowed between commands.")
    max_line_length: PositiveInt = Field(
        998, description="Longest message line in bytes (RFC 5322 limit, without CRLF)."
    )
    spool_reserve_bytes: NonNegativeInt = Field(
        100 * 1024 * 1024,
        description=(
            "Free bytes the spool's file system must keep beyond the message (its SIZE=, or "
            "`max_message_size` if not declared); with less, MAIL gets 452 4.3.1."
        ),
    )
    spool_reserve_inodes: NonNegativeInt = Field(
        1000, description="Free inodes the spool's file system must keep; with fewer, MAIL gets 452 4.3.1."
    )
