"""Delivery: spooled messages -> the upstream server (aiosmtplib) or the local Maildir, with retries and DSNs.

One worker per spool. Every recipient's result is kept in the spool (``status/``) before the message
moves on, so a restart tries only the recipients still pending. Replies are classified per
recipient: 2xx delivered, 5xx failed for good (the sender gets a DSN), anything else (4xx, a lost
connection, a timeout, a TLS failure) deferred and retried with exponential backoff until
``retry_lifetime`` has passed since the message was accepted.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import heapq
import logging
import os
import re
import ssl
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

import aiosmtplib

from gateway import upstream_fast_paths, upstream_pipelining
from gateway.dsn import FailedRecipient, build_dsn
from gateway.errors import ConfigError, CorruptSpoolEntry, SpoolError
from gateway.logs import log_event
from gateway.maildir import Maildir
from gateway.netaddr import host_port, is_loopback
from gateway.settings import DeliverySettings, UpstreamSettings
from gateway.spool import (
    PENDING_STATES,
    DeliveryStatus,
    QueueState,
    RecipientStatus,
    Spool,
    SpoolEnvelope,
    SpoolMessage,
    io_executor,
)

log = logging.getLogger("gateway.delivery")
_T = TypeVar("_T")

Clock = Callable[[], float]
Outcome = Literal["delivered", "deferred", "failed"]

PRUNE_INTERVAL = 60.0
"""Seconds between passes that delete finished messages past their retention."""
IDLE_CONNECTION_LIMIT = 10.0
"""Seconds an unused upstream connection is kept open for the next message."""
PROBE_AFTER_IDLE = 2.0
"""A connection idle longer than this is checked with RSET before it carries another message."""
IN_FLIGHT_PER_CONNECTION = 4
"""Messages in progress per upstream connection: while some wait for their spool updates to reach
the disk, others use the connection. ``concurrency`` bounds the connections, not the bookkeeping."""
QUIT_TIMEOUT = 5.0
DATA_BYTES_PER_SECOND = 100_000
"""Extra time allowed for DATA: one second per this many bytes, on top of the upstream timeout."""

_SESSION_ERRORS = (aiosmtplib.SMTPException, OSError, TimeoutError)
_ADDRESS = re.compile(r"<?[^\s<>@]+@[^\s<>]+>?")


@dataclass(frozen=True)
class RecipientResult:
    """What one attempt achieved for one recipient."""

    address: str
    outcome: Outcome
    reply: str
    remote: str = ""


@dataclass(frozen=True)
class AttemptResult:
    """What one attempt achieved, per recipient."""

    recipients: tuple[RecipientResult, ...]


class Transport(Protocol):
    """Where messages go: the upstream server or the local Maildir."""

    description: str

    async def send(
        self, envelope: SpoolEnvelope, content: bytes, recipients: Sequence[str]
    ) -> AttemptResult: ...

    async def close_idle(self, older_than: float) -> None: ...

    async def close(self) -> None: ...

    def connections_open(self) -> int: ...

    def connections_made(self) -> int: ...


ATTEMPT_OUTCOMES = ("delivered", "partial", "deferred", "bounced", "expired", "corrupt")
RECIPIENT_OUTCOMES: tuple[Outcome, ...] = ("delivered", "deferred", "failed")


@dataclass(frozen=True)
class DeliveryStatistics:
    """A snapshot for metrics and the CLI."""

    in_flight: int  # messages being worked on (sending, or recording the result)
    sending: int  # messages being handed to the upstream right now (at most ``concurrency``)
    ready: int
    scheduled: int
    connections_open: int
    connections_total: int
    attempts_total: int
    outcomes_total: Mapping[str, int]  # delivered / partial / deferred / bounced / expired / corrupt
    recipients_total: Mapping[str, int]  # delivered / deferred / failed
    dsns_total: int
    errors_total: int

    @classmethod
    def empty(cls) -> DeliveryStatistics:
        """Nothing delivered yet (every count present, at zero)."""
        return cls(
            in_flight=0,
            sending=0,
            ready=0,
            scheduled=0,
            connections_open=0,
            connections_total=0,
            attempts_total=0,
            outcomes_total=dict.fromkeys(ATTEMPT_OUTCOMES, 0),
            recipients_total=dict.fromkeys(RECIPIENT_OUTCOMES, 0),
            dsns_total=0,
            errors_total=0,
        )


# --- the worker ---------------------------------------------------------------------------------------


class DeliveryWorker:
    """Delivers what the spool holds until told to stop; one per spool (it takes the spool's lock).

    ``clock`` (unix time) decides backoff and expiry; tests pass a fake one. Waiting is bounded by
    ``settings.poll_interval``, so a clock moved forward takes effect within one interval.
    """

    def __init__(
        self,
        spool: Spool,
        settings: DeliverySettings,
        *,
        hostname: str,
        clock: Clock = time.time,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self._spool = spool
        self._settings = settings
        self._hostname = hostname
        self._clock = clock
        self._transport: Transport
        if settings.upstream is not None:
            self._transport = UpstreamTransport(
                settings.upstream, hostname=hostname, environ=os.environ if environ is None else environ
            )
        else:
            self._transport = MaildirTransport(Maildir(settings.maildir))
        self._ready: collections.deque[str] = collections.deque()
        self._where: dict[str, QueueState] = {}  # waiting messages (ready or scheduled) -> their folder
        self._due: dict[str, float] = {}  # scheduled messages -> next attempt (clock time)
        self._schedule_heap: list[tuple[float, str]] = []
        self._active: set[str] = set()
        self._sending = asyncio.Semaphore(settings.concurrency)
        self._senders = 0
        self._critical: set[asyncio.Task[Any]] = set()
        self._wakeup = asyncio.Event()
        self._stopping = False
        self._attempts = 0
        self._outcomes: collections.Counter[str] = collections.Counter()
        self._recipients: collections.Counter[str] = collections.Counter()
        self._dsns = 0
        self._errors = 0

    @property
    def transport(self) -> Transport:
        return self._transport

    def statistics(self) -> DeliveryStatistics:
        return DeliveryStatistics(
            in_flight=len(self._active),
            sending=self._senders,
            ready=len(self._ready),
            scheduled=len(self._due),
            connections_open=self._transport.connections_open(),
            connections_total=self._transport.connections_made(),
            attempts_total=self._attempts,
            outcomes_total={k: self._outcomes[k] for k in ATTEMPT_OUTCOMES},
            recipients_total={k: self._recipients[k] for k in RECIPIENT_OUTCOMES},
            dsns_total=self._dsns,
            errors_total=self._errors,
        )

    async def run(self, stop: asyncio.Event, *, recover: bool = True) -> None:
        """Deliver until ``stop`` is set; then let in-flight attempts finish, close connections, return.

        Raises SpoolError if another process is already delivering from the same spool. ``recover``
        False: the spool's owner has already cleaned up after an unclean stop (``Spool.recover``
        would remove another process's half-written files, such as the gateway's intake's).
        """
        self._stopping = False
        with self._spool.delivery_lock():
            try:
                if recover:
                    await _in_thread(self._spool.recover)
                await self._load_backlog()
            except OSError as exc:
                raise SpoolError(f"cannot read the spool at {self._spool.root}: {exc}") from exc
            unsubscribe = self._spool.on_commit(self._committed)
            try:
                async with asyncio.TaskGroup() as group:
                    group.create_task(self._watch(stop))
                    await self._dispatch(group)
            finally:
                unsubscribe()
                if self._critical:
                    await asyncio.wait(set(self._critical))
                await self._transport.close()
        log_event(log, "delivery_worker_stopped", pending=len(self._where))

    # -- scheduling

    async def _watch(self, stop: asyncio.Event) -> None:
        await stop.wait()
        self._stopping = True
        self._wakeup.set()

    def _committed(self, queue_id: str) -> None:
        self._enqueue(queue_id, QueueState.INCOMING)
        self._wakeup.set()

    def committed_elsewhere(self, queue_id: str) -> None:
        """Another process (the gateway's intake) committed ``queue_id`` to this spool: deliver it now."""
        self._committed(queue_id)

    def _enqueue(self, queue_id: str, state: QueueState) -> None:
        if queue_id in self._active or (queue_id in self._where and queue_id not in self._due):
            return
        self._due.pop(queue_id, None)  # sent back to incoming/ by `queue retry`: try it now
        self._where[queue_id] = state
        self._ready.append(queue_id)

    def _schedule(self, queue_id: str, state: QueueState, when: float) -> None:
        self._where[queue_id] = state
        self._due[queue_id] = when
        heapq.heappush(self._schedule_heap, (when, queue_id))

    def _promote_due(self, now: float) -> float | None:
        """Move due messages to the ready queue; return when the next one is due."""
        heap = self._schedule_heap
        while heap:
            when, queue_id = heap[0]
            if self._due.get(queue_id) != when:
                heapq.heappop(heap)  # stale: rescheduled or already taken
                continue
            if when > now:
                return when
            heapq.heappop(heap)
            del self._due[queue_id]
            self._ready.append(queue_id)
        return None

    async def _load_backlog(self) -> None:
        spool = self._spool
        for queue_id in await _in_thread(spool.pending_ids, QueueState.INCOMING):
            self._enqueue(queue_id, QueueState.INCOMING)
        deferred = await _in_thread(spool.pending_ids, QueueState.DEFERRED)
        due = await _in_thread(_next_attempts, spool, deferred)
        for queue_id in deferred:
            self._schedule(queue_id, QueueState.DEFERRED, due.get(queue_id, 0.0))
        if self._where:
            log_event(log, "delivery_backlog", incoming=len(self._ready), deferred=len(deferred))

    async def _scan_incoming(self) -> None:
        # Mail can reach incoming/ from outside this process: `queue retry`, or a commit elsewhere.
        try:
            found = await _in_thread(self._spool.pending_ids, QueueState.INCOMING)
        except OSError as exc:
            log_event(log, "spool_scan_failed", logging.ERROR, error=exc.strerror or str(exc))
            return
        for queue_id in found:
            if queue_id not in self._where or queue_id in self._due:
                self._enqueue(queue_id, QueueState.INCOMING)

    async def _dispatch(self, group: asyncio.TaskGroup) -> None:
        settings = self._settings
        next_scan = next_prune = 0.0
        closing_idle: asyncio.Task[None] | None = None
        while not self._stopping:
            self._wakeup.clear()
            tick = time.monotonic()
            if tick >= next_scan:
                await self._scan_incoming()
                next_scan = tick + settings.poll_interval
                if closing_idle is None or closing_idle.done():
                    closing_idle = group.create_task(self._transport.close_idle(IDLE_CONNECTION_LIMIT))
            if tick >= next_prune:
                await self._prune()
                next_prune = tick + PRUNE_INTERVAL
            now = self._clock()
            next_due = self._promote_due(now)
            while self._ready and len(self._active) < settings.concurrency * IN_FLIGHT_PER_CONNECTION:
                queue_id = self._ready.popleft()
                state = self._where.pop(queue_id)
                self._active.add(queue_id)
                group.create_task(self._attempt(queue_id, state))
            delay = settings.poll_interval
            if next_due is not None:
                delay = min(delay, max(next_due - now, 0.001))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wakeup.wait()

    async def _prune(self) -> None:
        try:
            await self._spool.prune(
                now=self._clock(),
                done_retention=self._settings.done_retention,
                bounced_retention=self._settings.bounced_retention,
            )
        except OSError as exc:
            log_event(log, "spool_prune_failed", logging.WARNING, error=exc.strerror or str(exc))

    # -- one attempt

    async def _attempt(self, queue_id: str, state: QueueState) -> None:
        try:
            await self._deliver(queue_id, state)
        except FileNotFoundError:
            # `queue delete` (or a hand) removed it while it was being delivered: nothing left to record.
            log_event(log, "spool_entry_vanished", logging.WARNING, queue_id=queue_id)
        except Exception as exc:  # one message's trouble must never stop the worker
            self._errors += 1
            log.exception("delivery of %s failed unexpectedly", queue_id)
            log_event(log, "delivery_error", logging.ERROR, queue_id=queue_id, error=type(exc).__name__)
            # Try again later, wherever it now is; if even that cannot be told, the next scan finds it.
            with contextlib.suppress(Exception):
                located = await _in_thread(self._spool.locate, queue_id)
                if located in PENDING_STATES:
                    self._schedule(queue_id, located, self._clock() + self._settings.initial_backoff)
        finally:
            self._active.discard(queue_id)
            self._wakeup.set()

    async def _deliver(self, queue_id: str, state: QueueState) -> None:
        message = await self._read(queue_id, state)
        if message is None:
            return
        envelope, content, state = message.envelope, message.content, message.state
        status = message.status or DeliveryStatus.initial(envelope)
        now = self._clock()
        pending = status.pending()
        started = time.monotonic()
        results: tuple[RecipientResult, ...] = ()
        if pending:
            async with self._sending:
                self._senders += 1
                try:
                    results = (await self._transport.send(envelope, content, pending)).recipients
                finally:
                    self._senders -= 1
            status = _apply(status, results, now)
            self._attempts += 1
        expiry = envelope.received_at + self._settings.retry_lifetime
        expired = bool(status.pending()) and now >= expiry
        if expired:
            status = _expire(status, now)
        elif status.pending():
            status = replace(status, next_attempt_at=min(now + self._backoff(status.attempts), expiry))
        if results or expired:
            outcome = _outcome(results, expired)
            self._outcomes[outcome] += 1
            for result in results:
                self._recipients[result.outcome] += 1
            self._log_attempt(envelope, content, status, results, outcome, started, now)
        await self._settle(queue_id, state, message, status, now)

    def _backoff(self, attempts: int) -> float:
        """initial_backoff after the first attempt, doubling after each further one, up to max_backoff."""
        exponent = min(max(attempts - 1, 0), 62)
        return min(self._settings.max_backoff, self._settings.initial_backoff * 2.0**exponent)

    async def _read(self, queue_id: str, state: QueueState) -> SpoolMessage | None:
        try:
            return await self._spool.read(queue_id, state)
        except FileNotFoundError:
            # Moved by an operator meanwhile (retry, delete): find where it is now.
            located = await _in_thread(self._spool.locate, queue_id)
            if located not in PENDING_STATES:
                return None
            state = located
            try:
                return await self._spool.read(queue_id, state)
            except FileNotFoundError:
                return None
            except CorruptSpoolEntry as exc:
                await self._quarantine(queue_id, state, exc)
                return None
        except CorruptSpoolEntry as exc:
            await self._quarantine(queue_id, state, exc)
            return None

    async def _quarantine(self, queue_id: str, state: QueueState, exc: CorruptSpoolEntry) -> None:
        self._outcomes["corrupt"] += 1
        await self._spool.quarantine(queue_id, state, str(exc))

    async def _settle(
        self,
        queue_id: str,
        state: QueueState,
        message: SpoolMessage,
        status: DeliveryStatus,
        now: float,
    ) -> None:
        """Record the results durably, send any DSN, and move the message to its next state."""
        spool = self._spool
        if not status.pending():
            finished = QueueState.BOUNCED if status.count("failed") else QueueState.DONE
            if status.unreported_failures():
                # Results first: a crash from here on must not send the delivered recipients a copy again.
                await self._durably(spool.write_status(queue_id, status))
                status = await self._report(queue_id, message, status, now)
                await self._durably(spool.write_status(queue_id, status))
            elif message.status is not None:
                await self._durably(spool.write_status(queue_id, status))
            await self._durably(spool.move(queue_id, state, finished))
            return
        await self._durably(spool.write_status(queue_id, status))
        if status.unreported_failures():
            status = await self._report(queue_id, message, status, now)
            await self._durably(spool.write_status(queue_id, status))
        if state is QueueState.INCOMING:
            await self._durably(spool.move(queue_id, QueueState.INCOMING, QueueState.DEFERRED))
        self._schedule(queue_id, QueueState.DEFERRED, status.next_attempt_at)

    async def _report(
        self, queue_id: str, message: SpoolMessage, status: DeliveryStatus, now: float
    ) -> DeliveryStatus:
        """Spool a DSN to the sender about the failures not reported yet; return the updated status."""
        envelope = message.envelope
        failures = status.unreported_failures()
        reported = status.updated({r.address: replace(r, reported=True) for r in failures})
        if not envelope.mail_from:
            # Never answer a bounce with a bounce: that is how mail loops start.
            log_event(log, "dsn_suppressed", queue_id=queue_id, reason="null_sender", failed=len(failures))
            return reported
        number = status.dsn_count + 1
        dsn_id = f"{queue_id}-D{number}"
        # The DSN's id is derived from the message's, so a restart after a crash finds it already spooled.
        if await _in_thread(self._spool.locate, dsn_id) is None:
            dsn = build_dsn(
                queue_id=dsn_id,
                original=envelope,
                original_content=message.content,
                failures=[
                    FailedRecipient(r.address, r.reply, r.remote, r.expired, r.updated_at) for r in failures
                ],
                reporting_host=self._hostname,
                created_at=now,
                retry_lifetime=self._settings.retry_lifetime,
            )
            dsn_envelope = SpoolEnvelope(
                queue_id=dsn_id,
                mail_from="",
                rcpt_tos=(envelope.mail_from,),
                authenticated_as="",
                received_at=now,
            )
            await self._durably(self._spool.commit(dsn_envelope, dsn))
            self._dsns += 1
            log_event(log, "dsn_queued", queue_id=queue_id, dsn_queue_id=dsn_id, failed=len(failures))
        return replace(reported, dsn_count=number)

    async def _durably(self, step: Coroutine[Any, Any, _T]) -> _T:
        # Spool updates run to the end even if the worker is cancelled meanwhile; run() waits for them.
        task = asyncio.ensure_future(step)
        self._critical.add(task)
        task.add_done_callback(self._critical.discard)
        return await asyncio.shield(task)

    def _log_attempt(
        self,
        envelope: SpoolEnvelope,
        content: bytes,
        status: DeliveryStatus,
        results: Sequence[RecipientResult],
        outcome: str,
        started: float,
        now: float,
    ) -> None:
        counts = collections.Counter(r.outcome for r in results)
        # The reply worth reading: the first failure, else the first deferral, else the acceptance.
        notable = next(
            (r for kind in ("failed", "deferred", "delivered") for r in results if r.outcome == kind), None
        )
        reply = notable.reply if notable else ""
        code = reply[:3] if reply[:3].isdigit() else None
        log_event(
            log,
            "delivery_attempt",
            logging.INFO if outcome == "delivered" else logging.WARNING,
            queue_id=envelope.queue_id,
            sender=envelope.mail_from or "<>",
            recipients=len(results),
            size=len(content),
            attempt=status.attempts,
            outcome=outcome,
            # Counts only when the outcome alone does not tell them (log_event leaves out None).
            delivered=counts["delivered"] if outcome == "partial" else None,
            deferred=(counts["deferred"] or None) if outcome == "partial" else None,
            failed=(counts["failed"] or None) if outcome in ("partial", "deferred") else None,
            via=self._transport.description,
            reply_code=code,
            reply=_redact(" ".join(reply.split()))[:300],
            duration_ms=round((time.monotonic() - started) * 1000, 1),
            next_attempt=_next_attempt_text(status, now),
        )


# What can never appear in a spooled address on an SMTP command line (intake refuses such
# addresses; this keeps a damaged spool entry from smuggling parameters or commands upstream).
_UNSAFE_IN_PATH = re.compile(r"[\s<>\x00-\x1f\x7f]")


def _path(address: str, encoding: str) -> bytes:
    """``<address>`` for MAIL FROM / RCPT TO. The spool holds plain ``local@domain`` addresses (or
    "" for the null sender), so aiosmtplib's per-call re-parsing with the email package is skipped."""
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
    """One command line for a pipelined group (options are the gateway's own SIZE/BODY/SMTPUTF8)."""
    return b" ".join((verb_and_path, *(option.encode("ascii") for option in options))) + b"\r\n"


async def _mail(client: aiosmtplib.SMTP, sender: str, options: Sequence[str], encoding: str) -> None:
    """MAIL FROM, as ``aiosmtplib.SMTP.mail`` sends it (SMTPSenderRefused unless 250)."""
    parameters = [option.encode("ascii") for option in options]
    response = await client.execute_command(
        b"MAIL", b"FROM:" + _path(sender, encoding), *parameters, timeout=None
    )
    if response.code != 250:
        raise aiosmtplib.SMTPSenderRefused(response.code, response.message, sender)


async def _rcpt(client: aiosmtplib.SMTP, recipient: str, encoding: str) -> None:
    """RCPT TO, as ``aiosmtplib.SMTP.rcpt`` sends it (SMTPRecipientRefused unless 250 or 251)."""
    response = await client.execute_command(b"RCPT", b"TO:" + _path(recipient, encoding), timeout=None)
    if response.code not in (250, 251):
        raise aiosmtplib.SMTPRecipientRefused(response.code, response.message, recipient)


def _redact(reply: str) -> str:
    # Upstream replies often quote the recipient ("550 5.1.1 <bob@example.org>: unknown"); logs never
    # hold recipients' addresses. The status file and the sender's DSN keep the reply as it was.
    return _ADDRESS.sub("<address>", reply)


def _apply(status: DeliveryStatus, results: Sequence[RecipientResult], now: float) -> DeliveryStatus:
    changes = {r.address: RecipientStatus(r.address, r.outcome, r.reply, now, r.remote) for r in results}
    return replace(status.updated(changes), attempts=status.attempts + 1, last_attempt_at=now)


def _expire(status: DeliveryStatus, now: float) -> DeliveryStatus:
    changes = {
        r.address: replace(
            r,
            state="failed",
            expired=True,
            reply=r.reply or "no delivery attempt could be made",
            updated_at=r.updated_at or now,
        )
        for r in status.recipients
        if r.state in ("pending", "deferred")
    }
    return status.updated(changes)


def _outcome(results: Sequence[RecipientResult], expired: bool) -> str:
    if expired:
        return "expired"
    kinds = {r.outcome for r in results}
    if kinds == {"delivered"} or not kinds:
        return "delivered"
    if "delivered" in kinds:
        return "partial"
    return "deferred" if "deferred" in kinds else "bounced"


def _next_attempt_text(status: DeliveryStatus, now: float) -> str | None:
    if not status.pending():
        return None
    return f"{max(0.0, status.next_attempt_at - now):.0f}s"


def _next_attempts(spool: Spool, queue_ids: Sequence[str]) -> dict[str, float]:
    due = {}
    for queue_id in queue_ids:
        with contextlib.suppress(FileNotFoundError, CorruptSpoolEntry):
            status = spool.find(queue_id).status
            if status is not None:
                due[queue_id] = status.next_attempt_at
    return due


async def _in_thread(function: Callable[..., _T], *args: Any) -> _T:
    return await asyncio.get_running_loop().run_in_executor(io_executor(), function, *args)


# --- transports -----------------------------------------------------------------------------------------


class MaildirTransport:
    """The embedded default: every message lands in the local Maildir."""

    description = "maildir"

    def __init__(self, maildir: Maildir) -> None:
        self._maildir = maildir

    async def send(self, envelope: SpoolEnvelope, content: bytes, recipients: Sequence[str]) -> AttemptResult:
        try:
            path = await _in_thread(self._maildir.deliver, envelope, content, recipients)
        except OSError as exc:
            reply = f"451 4.3.0 cannot write to the local maildir {self._maildir.path}: {exc.strerror or exc}"
            return AttemptResult(tuple(RecipientResult(r, "deferred", reply) for r in recipients))
        reply = f"250 2.0.0 delivered to the local maildir as new/{path.name}"
        return AttemptResult(tuple(RecipientResult(r, "delivered", reply) for r in recipients))

    async def close_idle(self, older_than: float) -> None:
        return None

    async def close(self) -> None:
        return None

    def connections_open(self) -> int:
        return 0

    def connections_made(self) -> int:
        return 0


class UpstreamTransport:
    """The organisation's mail server, over a small pool of reused aiosmtplib connections."""

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
        self._idle: list[tuple[aiosmtplib.SMTP, float]] = []
        self._in_use: set[aiosmtplib.SMTP] = set()
        self._made = 0
        self._closing = False
        upstream_fast_paths.install()  # aiosmtplib's DATA preparation, minus its no-op passes

    def connections_open(self) -> int:
        return sum(1 for c in (*self._in_use, *(c for c, _ in self._idle)) if c.is_connected)

    def connections_made(self) -> int:
        return self._made

    async def send(self, envelope: SpoolEnvelope, content: bytes, recipients: Sequence[str]) -> AttemptResult:
        for reused_first in (True, False):
            try:
                client, reused = await self._acquire(allow_reuse=reused_first)
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
            except _SESSION_ERRORS as exc:
                problem = exc
            finally:
                self._release(client, keep)
            reply = _connection_problem(problem, "talking to")
            remote = self._settings.host
            return AttemptResult(tuple(RecipientResult(r, "deferred", reply, remote) for r in recipients))
        raise AssertionError("unreachable")  # pragma: no cover

    async def _acquire(self, *, allow_reuse: bool) -> tuple[aiosmtplib.SMTP, bool]:
        timeout = self._settings.timeout
        while allow_reuse and self._idle:
            client, since = self._idle.pop()
            idle = time.monotonic() - since
            if not client.is_connected or idle > IDLE_CONNECTION_LIMIT:
                await _quit(client)
                continue
            if idle > PROBE_AFTER_IDLE:
                try:
                    async with asyncio.timeout(timeout):
                        await client.rset(timeout=timeout)
                except _SESSION_ERRORS:
                    client.close()
                    continue
            self._in_use.add(client)
            return client, True
        client = aiosmtplib.SMTP(
            hostname=self._settings.host,
            port=self._settings.port,
            local_hostname=self._hostname,
            timeout=timeout,
            use_tls=self._settings.security == "tls",
            start_tls=self._settings.security == "starttls",
            tls_context=self._tls_context,
            username=self._settings.username,
            password=self._password,
        )
        try:
            async with asyncio.timeout(timeout):
                await client.connect()
            if client.is_ehlo_or_helo_needed:
                # The extensions (SIZE, 8BITMIME, SMTPUTF8) must be known before MAIL is composed.
                async with asyncio.timeout(timeout):
                    try:
                        await client.ehlo(timeout=timeout)
                    except aiosmtplib.SMTPHeloError:
                        await client.helo(timeout=timeout)
        except BaseException:
            client.close()
            raise
        self._made += 1
        self._in_use.add(client)
        return client, False

    def _release(self, client: aiosmtplib.SMTP, keep: bool) -> None:
        self._in_use.discard(client)
        if keep and client.is_connected and not self._closing:
            self._idle.append((client, time.monotonic()))
        else:
            client.close()

    async def _transaction(
        self, client: aiosmtplib.SMTP, envelope: SpoolEnvelope, content: bytes, recipients: Sequence[str]
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
        if self._settings.pipelining and upstream_pipelining.available(client):
            return await self._pipelined_transaction(client, envelope, content, recipients, options, encoding)
        # Each command below runs under asyncio.timeout(); aiosmtplib gets timeout=None rather than
        # the same limit again, which would cost a second timer and a wait_for per reply.

        try:
            async with asyncio.timeout(timeout):
                await _mail(client, envelope.mail_from, options, encoding)
        except aiosmtplib.SMTPSenderRefused as exc:
            keep = await _reset(client, timeout)
            return AttemptResult(tuple(_answered(r, exc.code, exc.message, remote) for r in recipients)), keep
        except ValueError:
            return AttemptResult(
                tuple(RecipientResult(r, "failed", _UNWRITABLE_SENDER) for r in recipients)
            ), True
        except (aiosmtplib.SMTPServerDisconnected, ConnectionError) as exc:
            raise _StaleConnection from exc

        results: dict[str, RecipientResult] = {}
        accepted: list[str] = []
        for address in recipients:
            try:
                async with asyncio.timeout(timeout):
                    await _rcpt(client, address, encoding)
            except aiosmtplib.SMTPRecipientRefused as exc:
                results[address] = _answered(address, exc.code, exc.message, remote)
            except ValueError:
                results[address] = RecipientResult(address, "failed", _UNWRITABLE_RECIPIENT)
            else:
                accepted.append(address)
        if not accepted:
            keep = await _reset(client, timeout)
            return AttemptResult(tuple(results[r] for r in recipients)), keep

        data_timeout = timeout + len(content) / DATA_BYTES_PER_SECOND
        try:
            async with asyncio.timeout(data_timeout):
                response = await client.data(content, timeout=None)
        except aiosmtplib.SMTPDataError as exc:
            for address in accepted:
                results[address] = _answered(address, exc.code, exc.message, remote)
            keep = await _reset(client, timeout)
        else:
            reply = _reply(response.code, response.message)
            for address in accepted:
                results[address] = RecipientResult(address, "delivered", reply, remote)
            keep = True
        return AttemptResult(tuple(results[r] for r in recipients)), keep

    async def _pipelined_transaction(
        self,
        client: aiosmtplib.SMTP,
        envelope: SpoolEnvelope,
        content: bytes,
        recipients: Sequence[str],
        options: Sequence[str],
        encoding: str,
    ) -> tuple[AttemptResult, bool]:
        """The same transaction as ``_transaction``, with MAIL, every RCPT and DATA sent at once
        (RFC 2920); the outcomes per recipient are the same as one command at a time."""
        remote = self._settings.host
        timeout = self._settings.timeout
        results: dict[str, RecipientResult] = {}
        try:
            commands = [_command(b"MAIL FROM:" + _path(envelope.mail_from, encoding), options)]
        except ValueError:
            return AttemptResult(
                tuple(RecipientResult(r, "failed", _UNWRITABLE_SENDER) for r in recipients)
            ), True
        sent: list[str] = []
        for address in recipients:
            try:
                commands.append(_command(b"RCPT TO:" + _path(address, encoding)))
            except ValueError:
                results[address] = RecipientResult(address, "failed", _UNWRITABLE_RECIPIENT)
            else:
                sent.append(address)
        if not sent:
            return AttemptResult(tuple(results[r] for r in recipients)), True
        commands.append(b"DATA\r\n")
        try:
            async with asyncio.timeout(timeout):
                replies = await upstream_pipelining.exchange(client, commands)
        except (aiosmtplib.SMTPServerDisconnected, ConnectionError) as exc:
            raise _StaleConnection from exc  # nothing was delivered: safe to try on a fresh connection
        mail_reply, rcpt_replies, data_reply = replies[0], replies[1:-1], replies[-1]
        accepted: list[str] = []
        if mail_reply.code != 250:
            results.update((a, _answered(a, mail_reply.code, mail_reply.message, remote)) for a in sent)
        else:
            for address, response in zip(sent, rcpt_replies, strict=True):
                if response.code in (250, 251):
                    accepted.append(address)
                else:
                    results[address] = _answered(address, response.code, response.message, remote)
        if data_reply.code != 354:
            results.update((a, _answered(a, data_reply.code, data_reply.message, remote)) for a in accepted)
            return AttemptResult(tuple(results[r] for r in recipients)), await _reset(client, timeout)
        if not accepted:
            # The server took DATA with no recipient accepted, which RFC 2920 tells it not to do:
            # end the message empty at once, so that nothing is delivered, and start again.
            async with asyncio.timeout(timeout):
                await upstream_pipelining.send_content(client, b"")
            return AttemptResult(tuple(results[r] for r in recipients)), await _reset(client, timeout)
        data_timeout = timeout + len(content) / DATA_BYTES_PER_SECOND
        async with asyncio.timeout(data_timeout):
            response = await upstream_pipelining.send_content(client, content)
        if response.code == 250:
            reply = _reply(response.code, response.message)
            results.update((a, RecipientResult(a, "delivered", reply, remote)) for a in accepted)
            return AttemptResult(tuple(results[r] for r in recipients)), True
        results.update((a, _answered(a, response.code, response.message, remote)) for a in accepted)
        return AttemptResult(tuple(results[r] for r in recipients)), await _reset(client, timeout)

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


async def _reset(client: aiosmtplib.SMTP, seconds: float) -> bool:
    """RSET after a refused transaction; True if the connection can carry another message."""
    if not client.is_connected:
        return False
    try:
        async with asyncio.timeout(seconds):
            await client.rset(timeout=seconds)
    except _SESSION_ERRORS:
        return False
    return True


async def _quit(client: aiosmtplib.SMTP) -> None:
    try:
        if client.is_connected:
            async with asyncio.timeout(QUIT_TIMEOUT):
                await client.quit(timeout=QUIT_TIMEOUT)
    except _SESSION_ERRORS:
        pass
    finally:
        client.close()


def _classify(code: int) -> Outcome:
    if 200 <= code < 300:
        return "delivered"
    if 500 <= code < 600:
        return "failed"
    return "deferred"  # 4xx, and anything odd: retrying is the safe side


def _reply(code: int, message: str) -> str:
    return f"{code} {' '.join(message.split())}".strip()


def _connection_problem(exc: BaseException, doing: str) -> str:
    # A 4xx-style text: these are retried; the words end up in logs and, on expiry, in the DSN.
    if isinstance(exc, aiosmtplib.SMTPResponseException) and exc.code > 0:
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
