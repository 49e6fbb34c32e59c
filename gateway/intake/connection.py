"""One submission connection: the asyncio shell that runs a ``Session`` on a socket (public APIs only).

A plain ``asyncio.Protocol`` hands every chunk the transport reads (up to 256 KiB) to the session,
writes what the session wants sent, and does what its events ask: wait for more bytes, switch to TLS
with ``loop.start_tls``, check a password in a thread, hand a complete message to the decision
layer. It also keeps the connection's timers (idle, login time, lifetime, DATA rate) and answers
the session's quick questions (``SessionHost``) from the service.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection
from typing import TYPE_CHECKING

from gateway import replies
from gateway.intake.admission import Limit, SessionClock
from gateway.intake.events import (
    CLOSED,
    LIMIT_REPLIES,
    NEED_DATA,
    CheckCredentials,
    MessageReceived,
    SessionConfig,
    StartTls,
)
from gateway.intake.session import Session
from gateway.intake.transaction import answer_message
from gateway.logs import log_event
from gateway.netaddr import is_loopback
from gateway.replies import Reply
from gateway.state.ports import AccountsPort

if TYPE_CHECKING:
    from gateway.intake.smtp import SubmissionService

logger = logging.getLogger("gateway.intake.smtp")

READ_CHUNK = 256 * 1024
# Bytes read but not yet looked at by the session (it is busy: a password check, a commit) above
# which reading stops for a while, as a StreamReader with READ_CHUNK as its limit would.
UNREAD_HIGH_WATER = 2 * READ_CHUNK


class SubmissionConnection(asyncio.Protocol):
    """One client connection and the task that runs its session; also the session's ``SessionHost``."""

    def __init__(self, service: SubmissionService, listener: str, implicit_tls: bool) -> None:
        self.service = service
        self.listener = listener
        self.implicit_tls = implicit_tls
        self.loop = asyncio.get_running_loop()
        self.client_address = ""
        self.transport: asyncio.Transport | None = None
        self._plain_transport: asyncio.Transport | None = None  # under TLS after STARTTLS
        self.session: Session | None = None
        self._clock = SessionClock(service.admission.limits, opened_at=self.loop.time())
        self._task: asyncio.Task[None] | None = None
        self._refusal: Reply | None = None
        self._news = False  # bytes, the end of input or the loss arrived since the session last looked
        self._waiter: asyncio.Future[None] | None = None
        self._writable: asyncio.Future[None] | None = None
        self._unread = 0
        self._reading_paused = False
        self._waiting = False
        self._lost = False
        self._checking_password = False
        self._progress = 0
        self._timeout = service.settings.limits.command_timeout
        self._idle_deadline: float | None = None  # loop time; None while the idle timer is stopped
        self._timeout_handle: asyncio.TimerHandle | None = None

    # --- asyncio's callbacks ------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.client_address = str(peer[0]) if peer else ""
        settings = self.service.settings
        config = SessionConfig(
            hostname=settings.server.hostname,
            client_address=self.client_address,
            max_message_size=settings.limits.max_message_size,
            max_recipients=settings.limits.max_recipients,
            tls_active=self.implicit_tls,
            starttls_available=not self.implicit_tls,
            plaintext_auth_allowed=(
                settings.auth.allow_plaintext_auth_on_loopback and is_loopback(self.client_address)
            ),
        )
        self.session = Session(config, self, self._clock)
        self._task = self.loop.create_task(self._run())
        self._refusal = self.service.connection_opened(self, self._task)
        self._reset_timeout()

    def data_received(self, data: bytes) -> None:
        assert self.session is not None
        self.session.receive_data(data, self.loop.time())
        self._unread += len(data)
        if self._unread > UNREAD_HIGH_WATER and not self._reading_paused and self.transport is not None:
            self._reading_paused = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool | None:
        # Commands a client pipelined before it half-closed are all answered: the session meets the
        # end of input only after the bytes before it.
        assert self.session is not None
        self.session.receive_data(b"", self.loop.time())
        self._wake()
        return not self._tls()  # a TLS transport cannot stay half open

    def connection_lost(self, exc: Exception | None) -> None:
        if self._lost:
            return
        self._lost = True
        if self._timeout_handle is not None:
            self._timeout_handle.cancel()
        if self.session is not None:
            self.session.receive_data(b"", self.loop.time())
        self._wake()
        self._writable_again()
        self.service.connection_closed(self)

    def pause_writing(self) -> None:
        if self._writable is None:
            self._writable = self.loop.create_future()

    def resume_writing(self) -> None:
        self._writable_again()

    # --- the session's task -------------------------------------------------------------------------
    async def _run(self) -> None:
        session = self.session
        transport = self.transport
        assert session is not None and transport is not None
        try:
            if self._refusal is not None:
                transport.write(f"{self._refusal}\r\n".encode())
                transport.close()
                return
            session.greet()
            while not self._closing():
                self._news = False
                event = session.next_event()
                self._flush()
                if session.progress != self._progress:
                    self._progress = session.progress
                    self._reset_timeout()
                if event is NEED_DATA:
                    await self._drain()
                    if not self._news:
                        await self._wait_for_news()
                elif event is CLOSED:
                    break
                elif isinstance(event, MessageReceived):
                    await self._answer(session, event)
                elif isinstance(event, CheckCredentials):
                    await self._check(session, event)
                elif isinstance(event, StartTls):
                    await self._start_tls(session)
                else:
                    raise AssertionError(f"unexpected session event {event!r}")
            self._close()
        except asyncio.CancelledError:
            self._close()
            raise
        except ConnectionError:
            self._close()

    def _flush(self) -> None:
        assert self.session is not None and self.transport is not None
        out = self.session.data_to_send()
        if out:
            self.transport.write(out)
        self._unread = 0
        if self._reading_paused and not self._lost:
            self._reading_paused = False
            self.transport.resume_reading()

    async def _drain(self) -> None:
        if self._writable is not None:
            await self._writable

    async def _wait_for_news(self) -> None:
        self._waiter = self.loop.create_future()
        self._waiting = True
        try:
            await self._waiter
        finally:
            self._waiter = None
            self._waiting = False

    def _wake(self) -> None:
        self._news = True
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _writable_again(self) -> None:
        writable, self._writable = self._writable, None
        if writable is not None and not writable.done():
            writable.set_result(None)

    def _closing(self) -> bool:
        return self.transport is None or self.transport.is_closing()

    def _close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def _tls(self) -> bool:
        return self.transport is not None and self.transport.get_extra_info("ssl_object") is not None

    async def _answer(self, session: Session, event: MessageReceived) -> None:
        # Deciding and storing may take a while; the idle timer must not cut it short.
        self._stop_timer()
        tls = self.transport.get_extra_info("ssl_object") if self.transport is not None else None
        try:
            reply = await answer_message(self.service, event, self.client_address, self.listener, tls)
        except Exception as exc:
            session.failed(exc)
        else:
            session.message_answered(reply)
        if not self._lost:
            self._reset_timeout()

    async def _check(self, session: Session, event: CheckCredentials) -> None:
        service = self.service
        try:
            self._checking_password = True
            try:
                # Each argon2 check takes tens of milliseconds and 64 MiB; bound how many run at once.
                async with service.password_checks:
                    member = await asyncio.to_thread(_reload_and_verify, service.accounts, event)
            finally:
                self._checking_password = False
            session.credentials_checked(member)
        except Exception as exc:
            session.failed(exc)

    async def _start_tls(self, session: Session) -> None:
        plain = self.transport
        assert plain is not None
        await self._drain()
        # From the switch on, every byte the session receives is a decrypted one; anything the
        # client sent in plaintext after STARTTLS was dropped by the session.
        session.tls_began()
        try:
            secure = await self.loop.start_tls(plain, self, self.service.tls_context, server_side=True)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log_event(logger, "smtp.tls_failed", client=self.client_address, error=type(exc).__name__)
            # asyncio never tells a protocol whose TLS handshake failed that the connection is gone.
            plain.close()
            self.connection_lost(exc)
            return
        if secure is None:  # the connection went away during the handshake
            plain.close()
            self.connection_lost(None)
            return
        self._plain_transport = plain
        self.transport = secure
        self._reset_timeout()

    # --- SessionHost --------------------------------------------------------------------------------
    def stopping(self) -> bool:
        return self.service.stopping

    def addresses_of(self, member: str) -> Collection[str]:
        accounts = self.service.accounts
        accounts.reload_if_changed()
        return accounts.addresses_of(member)

    def storage_refusal(self, size: int | None) -> Reply | None:
        return self.service.storage_refusal(size)

    def auth_throttled(self) -> bool:
        service = self.service
        if not service.throttle.blocked(self.client_address):
            return False
        service.counters.auth_throttled += 1
        log_event(logger, "smtp.auth_throttled", logging.WARNING, client=self.client_address)
        return True

    def auth_failed(self, mechanism: str) -> None:
        service = self.service
        service.throttle.record_failure(self.client_address)
        service.counters.auth_failures += 1
        log_event(
            logger, "smtp.auth_failed", logging.WARNING, client=self.client_address, mechanism=mechanism
        )

    def log_in(self, member: str, mechanism: str) -> Limit | None:
        service = self.service
        refused = service.admission.log_in(self)
        if refused is not None:
            return refused
        service.counters.auth_successes += 1
        log_event(logger, "smtp.auth_ok", client=self.client_address, member=member, mechanism=mechanism)
        return None

    def limit_reached(self, limit: Limit) -> None:
        self.service.limit_reached(limit, self.client_address)

    # --- ended from outside -------------------------------------------------------------------------
    def end(self, limit: Limit) -> None:
        """Close the connection at once with the 421 that names ``limit`` (counted and logged)."""
        if self._closing():
            return
        self.service.limit_reached(limit, self.client_address)
        self._send_and_close(LIMIT_REPLIES[limit])

    def may_make_room(self) -> bool:
        """Whether this connection, not logged in, may be closed for a newcomer: not while its
        password is being checked (the one step of a stranger's that is ours to finish)."""
        return not self._checking_password

    def close_if_idle(self) -> None:
        """On shutdown: a connection waiting for a command, outside a transaction, is closed at once."""
        if self._waiting and self.session is not None and self.session.waiting_for_command:
            self._send_and_close(replies.SHUTTING_DOWN)

    def abort(self) -> None:
        for transport in (self.transport, self._plain_transport):
            if transport is not None:
                transport.abort()

    def _send_and_close(self, reply: Reply) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(f"{reply}\r\n".encode())
            transport.close()

    # --- timers -------------------------------------------------------------------------------------
    def _reset_timeout(self) -> None:
        # Called for every command and every chunk of DATA. Replacing a timer each time costs about
        # as much as reading the command: move a deadline instead, and let one timer follow it.
        now = self.loop.time()
        self._idle_deadline = now + self._timeout
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


def _reload_and_verify(accounts: AccountsPort, event: CheckCredentials) -> str | None:
    """On a thread: the accounts as of now (a ``user add`` on any host), then the password check."""
    accounts.reload_if_changed()
    return accounts.verify(event.login, event.password)
