"""One SMTP submission session as a pure state machine: bytes in, events and reply bytes out (h11 style).

The shell (``gateway.intake.connection``) feeds the bytes it reads with ``receive_data`` and asks
``next_event`` what to do; before acting on an event it sends ``data_to_send()``. The events are
the things only the shell can do: read more (``NEED_DATA``), switch to TLS (``StartTls``), check a
password (``CheckCredentials``), screen and commit a message (``MessageReceived``) and close
(``CLOSED``). It answers with ``tls_began``, ``credentials_checked``, ``message_answered`` or
``failed``. Quick synchronous questions (the member's addresses, free space, the login throttle,
counting a limit) go to the ``SessionHost`` it was given. No asyncio, no socket, no clock: times
come in with the bytes.

The protections live here: a command line is one line ending in LF, at most ``COMMAND_LINE_LIMIT``
bytes (``AUTH_LINE_LIMIT`` for AUTH), without bare CR or NUL; DATA ends only at ``<CRLF>.<CRLF>``
(``DataReader``), so no byte sequence inside a message is ever read as a command; after STARTTLS
every byte received in plaintext is dropped (RFC 3207 4.2, CVE-2011-0411); AUTH needs TLS (or
loopback when allowed), on the STARTTLS and the implicit-TLS listener alike; ``MAX_ERRORS`` error
replies end the connection.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

from gateway import replies
from gateway.intake.admission import Limit, SessionClock
from gateway.intake.commands import forward_path_problem, parse_parameters, parse_path
from gateway.intake.dataread import DataReader
from gateway.intake.events import (
    AUTH_LINE_LIMIT,
    CLOSED,
    COMMAND_LINE_LIMIT,
    LIMIT_REPLIES,
    MAX_ERRORS,
    NEED_DATA,
    PAUSED,
    CheckCredentials,
    Event,
    MessageReceived,
    SessionConfig,
    SessionHost,
    StartTls,
)
from gateway.intake.sasl import MECHANISMS, Credentials, SaslExchange, Step
from gateway.logs import describe_error, log_event
from gateway.replies import Reply

logger = logging.getLogger("gateway.intake.smtp")


class _State(enum.Enum):
    COMMAND = "command"
    SASL = "sasl"
    DATA = "data"
    PAUSED = "paused"
    CLOSED = "closed"


@dataclass
class _Transaction:
    """One MAIL ... DATA transaction; RSET, EHLO, HELO, STARTTLS and the end of DATA start a new one."""

    mail_from: str | None = None
    smtp_utf8: bool = False
    rcpt_tos: list[str] = field(default_factory=list)


_OVERLONG = object()  # a line longer than its limit (skipped whole)

CommandHandler = Callable[["Session", str], Reply | None]


class Session:
    """The SMTP conversation of one connection. Commands are dispatched from ``COMMANDS``."""

    def __init__(self, config: SessionConfig, host: SessionHost, clock: SessionClock) -> None:
        self.config = config
        self.host = host
        self.clock = clock
        self.tls_active = config.tls_active
        self.member: str | None = None
        self.host_name: str | None = None  # the EHLO or HELO argument
        self.extended_smtp = False
        self.progress = 0  # command lines and DATA chunks so far: activity that keeps a session alive
        self._inbox = bytearray()
        self._out: list[bytes] = []
        self._state = _State.COMMAND
        self._eof = False
        self._now = clock.opened_at
        self._scan_from = 0
        self._too_long = False
        self._txn = _Transaction()
        self._errors = 0
        self._close_after_reply = False
        self._verb = ""
        self._sasl: SaslExchange | None = None
        self._reader: DataReader | None = None
        self._pending: Event | None = None

    # --- the shell's side ---------------------------------------------------------------------------
    def greet(self) -> None:
        """Queue the 220 greeting: the first thing a client hears."""
        self._send(replies.greeting(self.config.hostname))

    def receive_data(self, data: bytes, now: float) -> None:
        """Bytes read from the client at ``now`` (the shell's clock); ``b""`` is the end of input."""
        self._now = now
        if not data:
            self._eof = True
            return
        if isinstance(self._pending, StartTls):
            return  # plaintext after STARTTLS, before the switch: never read (RFC 3207 4.2)
        self._inbox += data
        if self._state is _State.DATA:
            self.clock.data_arrived(len(data))
            # Data still arriving keeps the session alive, if it arrives fast enough.
            self.progress += 1

    def data_to_send(self) -> bytes:
        """The reply bytes queued so far (and forget them)."""
        out = self._out
        if not out:
            return b""
        self._out = []
        return b"".join(out)

    def next_event(self) -> Event:
        """Go on with the conversation until the shell must act; see the module docstring."""
        while True:
            state = self._state
            if state is _State.COMMAND:
                event = self._next_command()
            elif state is _State.DATA:
                event = self._next_data()
            elif state is _State.SASL:
                event = self._next_sasl_line()
            elif state is _State.PAUSED:
                return PAUSED
            else:
                return CLOSED
            if event is not None:
                return event

    @property
    def waiting_for_command(self) -> bool:
        """Between commands, outside a transaction: a shutdown may close the connection at once."""
        return self._state is _State.COMMAND and self._txn.mail_from is None

    @property
    def in_data(self) -> bool:
        """DATA was accepted and the message is not answered yet."""
        return self._reader is not None

    def tls_began(self) -> None:
        """The connection is now TLS: every byte from here on is decrypted; the session starts afresh."""
        assert isinstance(self._pending, StartTls)
        self._resume()
        self.tls_active = True
        # RFC 3207 4.2: forget everything learnt before TLS.
        self.host_name = None
        self.extended_smtp = False
        self.member = None
        self._txn = _Transaction()

    def credentials_checked(self, member: str | None) -> None:
        """The answer to ``CheckCredentials``: the member who logged in, or None if they did not."""
        pending = self._pending
        assert isinstance(pending, CheckCredentials)
        self._resume()
        if member is None:
            self.host.auth_failed(pending.mechanism)
            reply = self._closing_on(self.clock.auth_failed()) or replies.AUTH_FAILED
        else:
            refused = self._closing_on(self.host.log_in(member, pending.mechanism))
            if refused is None:
                self.member = member
                self.clock.log_in()
            reply = refused or replies.AUTH_OK
        self._finish(reply)

    def message_answered(self, reply: Reply) -> None:
        """The answer to ``MessageReceived``: the reply the decision layer gave."""
        assert isinstance(self._pending, MessageReceived)
        self._resume()
        self._end_data()
        self._finish(reply)

    def failed(self, error: Exception) -> None:
        """What the shell did for the pending event raised: 451, logged without its text."""
        self._resume()
        self._end_data()
        self._finish(self._internal_error(error))

    # --- reading ------------------------------------------------------------------------------------
    def _resume(self) -> None:
        self._pending = None
        self._state = _State.COMMAND

    def _pause(self, event: Event) -> Event:
        self._pending = event
        self._state = _State.PAUSED
        return event

    def _take_line(self, limit: int) -> bytes | object | None:
        """The next line with its ending, ``_OVERLONG`` if longer than ``limit``, None if incomplete."""
        inbox = self._inbox
        end = inbox.find(b"\n", self._scan_from)
        if end < 0:
            if len(inbox) > limit:
                self._too_long = True
                inbox.clear()
            self._scan_from = len(inbox)
            return None
        line = bytes(inbox[: end + 1])
        del inbox[: end + 1]
        self._scan_from = 0
        too_long, self._too_long = self._too_long, False
        return _OVERLONG if too_long or len(line) > limit else line

    def _end_of_input(self) -> Event:
        # Whatever was left unfinished (a partial line, a message without its end) is dropped.
        self._end_data()
        return self._close()

    def _next_command(self) -> Event | None:
        if self.host.stopping() and self._txn.mail_from is None:
            self._send(replies.SHUTTING_DOWN)
            return self._close()
        line = self._take_line(AUTH_LINE_LIMIT)
        if line is None:
            return self._end_of_input() if self._eof else NEED_DATA
        self.progress += 1
        over_budget = self.clock.command()
        if over_budget is not None:
            return self._end_after_reply(over_budget)
        reply = self._run_command(line)
        if reply is not None:
            self._finish(reply)
        return self._pending if self._state is _State.PAUSED else None

    def _next_sasl_line(self) -> Event | None:
        line = self._take_line(AUTH_LINE_LIMIT)
        if line is None:
            return self._end_of_input() if self._eof else NEED_DATA
        assert self._sasl is not None
        try:
            step = self._sasl.respond(line if isinstance(line, bytes) else None)
        except Exception as exc:
            self._state = _State.COMMAND
            self._finish(self._internal_error(exc))
            return None
        return self._sasl_step(step)

    def _next_data(self) -> Event | None:
        reader = self._reader
        assert reader is not None
        try:
            done = reader.consume(self._inbox)
        except Exception as exc:
            # Out of step with the client: the rest of the message must never be read as commands.
            self._close_after_reply = True
            self._state = _State.COMMAND
            self._end_data()
            self._finish(self._internal_error(exc))
            return None
        if not done:
            return self._end_of_input() if self._eof else NEED_DATA
        txn = self._txn
        assert self.member is not None and txn.mail_from is not None
        return self._pause(MessageReceived(self.member, txn.mail_from, tuple(txn.rcpt_tos), reader))

    def _end_data(self) -> None:
        if self._reader is not None:
            self._reader = None
            self.clock.data_ends()
            self._txn = _Transaction()

    # --- replies ------------------------------------------------------------------------------------
    def _send(self, reply: Reply | str) -> None:
        self._out.append(f"{reply}\r\n".encode())

    def _close(self) -> Event:
        self._state = _State.CLOSED
        return CLOSED

    def _finish(self, reply: Reply) -> None:
        """Send a command's reply, counting errors; close after it if the command said so."""
        if reply.code >= 500:
            self._errors += 1
            if self._errors >= MAX_ERRORS:
                self._end_after_reply(Limit.TOO_MANY_ERRORS)
                return
        self._send(reply)
        if self._close_after_reply:
            self._close()

    def _end_after_reply(self, limit: Limit) -> Event:
        self.host.limit_reached(limit)
        self._send(LIMIT_REPLIES[limit])
        return self._close()

    def _closing_on(self, limit: Limit | None) -> Reply | None:
        """The 421 for ``limit`` (counted), the connection to close after it; None without a limit."""
        if limit is None:
            return None
        self.host.limit_reached(limit)
        self._close_after_reply = True
        return LIMIT_REPLIES[limit]

    def _internal_error(self, exc: Exception) -> Reply:
        # Never show Python error text to a client (aiosmtpd's default does): log, answer 451.
        log_event(
            logger,
            "smtp.internal_error",
            logging.ERROR,
            client=self.config.client_address,
            command=self._verb,
            error=describe_error(exc),
        )
        self._txn = _Transaction()
        return replies.INTERNAL_ERROR

    # --- commands -----------------------------------------------------------------------------------
    def _run_command(self, line: bytes | object) -> Reply | None:
        if not isinstance(line, bytes) or (
            len(line) > COMMAND_LINE_LIMIT and not line[:5].upper().startswith(b"AUTH ")
        ):
            return replies.LINE_TOO_LONG
        text = line.rstrip(b"\r\n")
        if b"\r" in text or b"\0" in text:
            return replies.BAD_COMMAND_BYTES
        verb_bytes, _, arg_bytes = text.partition(b" ")
        verb = verb_bytes.decode("ascii", "replace").upper()
        handler = self.COMMANDS.get(verb)
        if handler is None:
            log_event(logger, "smtp.unknown_command", logging.DEBUG, client=self.config.client_address)
            return replies.UNRECOGNIZED
        try:
            arg = arg_bytes.decode("utf-8").strip()
        except UnicodeDecodeError:
            return replies.BAD_UTF8
        self._verb = verb
        try:
            return handler(self, arg)
        except Exception as exc:
            return self._internal_error(exc)

    def _auth_allowed(self) -> bool:
        return self.tls_active or self.config.plaintext_auth_allowed

    def _needs_session(self) -> Reply | None:
        """The reply refusing a transaction command before EHLO, TLS or AUTH; None if allowed."""
        if not self.host_name:
            return replies.SEND_EHLO_FIRST
        if self.member is None:
            if not self._auth_allowed() and self.config.starttls_available:
                return replies.STARTTLS_REQUIRED
            return replies.AUTH_REQUIRED
        return None

    def cmd_ehlo(self, arg: str) -> Reply | None:
        if not arg:
            return replies.syntax("EHLO hostname")
        self._txn = _Transaction()
        self.host_name = arg
        self.extended_smtp = True
        extensions = [
            "PIPELINING",
            f"SIZE {self.config.max_message_size}",
            "8BITMIME",
            "SMTPUTF8",
            "ENHANCEDSTATUSCODES",
        ]
        if self.config.starttls_available and not self.tls_active:
            extensions.append("STARTTLS")
        if self._auth_allowed():
            extensions.append("AUTH PLAIN LOGIN")
        return replies.ehlo(self.config.hostname, extensions)

    def cmd_helo(self, arg: str) -> Reply | None:
        if not arg:
            return replies.syntax("HELO hostname")
        self._txn = _Transaction()
        self.host_name = arg
        self.extended_smtp = False
        return replies.helo(self.config.hostname)

    def cmd_starttls(self, arg: str) -> Reply | None:
        if arg:
            return replies.syntax("STARTTLS")
        if self.tls_active:
            return replies.TLS_ALREADY_ACTIVE
        if not self.config.starttls_available:
            return replies.TLS_NOT_AVAILABLE
        self._txn = _Transaction()
        # RFC 3207 4.2 (and CVE-2011-0411): commands pipelined in plaintext after STARTTLS are dropped.
        self._inbox.clear()
        self._scan_from = 0
        self._too_long = False
        self._send(replies.READY_FOR_TLS)
        self._pause(StartTls())
        return None

    def cmd_auth(self, arg: str) -> Reply | None:
        if not self.host_name or not self.extended_smtp:
            return replies.SEND_EHLO_FIRST
        if not self._auth_allowed():
            return replies.AUTH_ENCRYPTION_REQUIRED
        if self.member is not None:
            return replies.AUTH_ALREADY
        if self._txn.mail_from is not None:
            return replies.AUTH_IN_TRANSACTION
        words = arg.split()
        if not words or len(words) > 2:
            return replies.syntax("AUTH mechanism [initial-response]")
        mechanism = words[0].upper()
        if mechanism not in MECHANISMS:
            return replies.AUTH_UNKNOWN_MECHANISM
        if self.host.auth_throttled():
            return replies.AUTH_THROTTLED
        self._sasl = SaslExchange(mechanism)
        self._sasl_step(self._sasl.start(words[1] if len(words) == 2 else None))
        return None

    def _sasl_step(self, step: Step) -> Event | None:
        if isinstance(step, str):
            self._state = _State.SASL
            self._send(step)
            return None
        exchange = self._sasl
        self._sasl = None
        if isinstance(step, Credentials):
            assert exchange is not None
            return self._pause(CheckCredentials(step.login, step.password, exchange.mechanism))
        self._state = _State.COMMAND
        self._finish(step)
        return None

    def cmd_mail(self, arg: str) -> Reply | None:
        refusal = self._needs_session()
        if refusal is not None:
            return refusal
        member = self.member
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
            limit = self.config.max_message_size
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
        if sender.lower() not in self.host.addresses_of(member):
            log_event(
                logger,
                "smtp.sender_refused",
                logging.WARNING,
                client=self.config.client_address,
                member=member,
            )
            return replies.sender_not_yours(sender, member)
        # Postfix's check at MAIL: better a 452 now than a full upload that cannot be stored.
        no_room = self.host.storage_refusal(int(size) if size is not None else None)
        if no_room is not None:
            return no_room
        self._txn = _Transaction(mail_from=sender, smtp_utf8=smtp_utf8)
        return replies.SENDER_OK

    def cmd_rcpt(self, arg: str) -> Reply | None:
        refusal = self._needs_session()
        if refusal is not None:
            return refusal
        txn = self._txn
        if txn.mail_from is None:
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
            log_event(logger, "smtp.recipient_refused", client=self.config.client_address, member=self.member)
            return replies.odd_forward_path(problem)
        if not recipient.isascii() and not txn.smtp_utf8:
            return replies.SMTPUTF8_NEEDED
        limit = self.config.max_recipients
        if recipient.lower() in (known.lower() for known in txn.rcpt_tos):
            return replies.RECIPIENT_OK
        if len(txn.rcpt_tos) >= limit:
            return replies.too_many_recipients(limit)
        txn.rcpt_tos.append(recipient)
        return replies.RECIPIENT_OK

    def cmd_data(self, arg: str) -> Reply | None:
        refusal = self._needs_session()
        if refusal is not None:
            return refusal
        if self._txn.mail_from is None:
            return replies.NEED_MAIL
        if not self._txn.rcpt_tos:
            return replies.NEED_RCPT
        if arg:
            return replies.syntax("DATA")
        self._send(replies.START_DATA)
        self._reader = DataReader(self.config.max_message_size)
        self.clock.data_begins(self._now)
        self._state = _State.DATA
        return None

    def cmd_rset(self, arg: str) -> Reply | None:
        if arg:
            return replies.syntax("RSET")
        self._txn = _Transaction()
        return replies.OK

    def cmd_noop(self, arg: str) -> Reply | None:
        return replies.OK

    def cmd_quit(self, arg: str) -> Reply | None:
        if arg:
            return replies.syntax("QUIT")
        self._send(replies.CLOSING)
        self._close()
        return None

    def cmd_vrfy(self, arg: str) -> Reply | None:
        return replies.CANNOT_VRFY if arg else replies.syntax("VRFY address")

    def cmd_expn(self, arg: str) -> Reply | None:
        return replies.NOT_IMPLEMENTED

    def cmd_help(self, arg: str) -> Reply | None:
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
