"""Delivery: spooled messages -> the upstream server or the local Maildir, with retries and DSNs.

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
import errno
import logging
import os
import re
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any, TypeVar

from gateway.crash_points import CrashPoints
from gateway.delivery.dsn import FailedRecipient, build_dsn
from gateway.delivery.maildir import Maildir, MaildirTransport
from gateway.delivery.model import (
    ATTEMPT_OUTCOMES,
    RECIPIENT_OUTCOMES,
    DeliveryStatistics,
    RecipientResult,
    Transport,
)
from gateway.delivery.schedule import Schedule
from gateway.delivery.status import (
    attempt_outcome,
    backoff,
    dsn_sent,
    expire,
    next_attempt_text,
    record_attempt,
    reported,
    schedule,
)
from gateway.delivery.upstream import IDLE_CONNECTION_LIMIT, UpstreamTransport
from gateway.errors import CorruptSpoolEntry, SpoolError
from gateway.histogram import Histogram
from gateway.logs import log_event
from gateway.settings import DeliverySettings
from gateway.state.ports import QueuePort
from gateway.state.spool import (
    PENDING_STATES,
    DeliveryStatus,
    QueueState,
    SpoolEnvelope,
    SpoolMessage,
    io_executor,
)

__all__ = ["DeliveryStatistics", "DeliveryWorker", "Transport", "UpstreamTransport"]

log = logging.getLogger("gateway.delivery.worker")
_T = TypeVar("_T")

Clock = Callable[[], float]

PRUNE_INTERVAL = 60.0
"""Seconds between passes that delete finished messages past their retention."""
IN_FLIGHT_PER_CONNECTION = 4
"""Messages in progress per upstream connection: while some wait for their spool updates to reach
the disk, others use the connection. ``concurrency`` bounds the connections, not the bookkeeping."""
RECORD_RETRY_LIMIT = 60.0
"""Longest wait between tries to record what was sent (the first waits ``poll_interval``, doubling
up to this or ``max_backoff``, whichever is shorter)."""
DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})
"""Errors that say the disk (its space, its inodes, or the quota) is full: logged once per episode."""

_ADDRESS = re.compile(r"<?[^\s<>@]+@[^\s<>]+>?")


# --- the worker ---------------------------------------------------------------------------------------


class DeliveryWorker:
    """Delivers what the spool holds until told to stop; one per spool (it takes the spool's lock).

    ``clock`` (unix time) decides backoff and expiry; tests pass a fake one. Waiting is bounded by
    ``settings.poll_interval``, so a clock moved forward takes effect within one interval.
    """

    def __init__(
        self,
        spool: QueuePort,
        settings: DeliverySettings,
        *,
        hostname: str,
        clock: Clock = time.time,
        environ: Mapping[str, str] | None = None,
        crash_at: str | None = None,
    ) -> None:
        self._spool = spool
        self._settings = settings
        self._hostname = hostname
        self._clock = clock
        self._crash_points = CrashPoints(crash_at)  # fault tests only (settings: fault_injection)
        self._transport: Transport
        if settings.upstream is not None:
            self._transport = UpstreamTransport(
                settings.upstream, hostname=hostname, environ=os.environ if environ is None else environ
            )
        else:
            self._transport = MaildirTransport(Maildir(settings.maildir))
        self._plan = Schedule()
        self._sending = asyncio.Semaphore(settings.concurrency)
        self._senders = 0
        self._critical: set[asyncio.Task[Any]] = set()
        self._wakeup = asyncio.Event()
        self._stopping = False
        self._attempts = 0
        self._outcomes: collections.Counter[str] = collections.Counter()
        self._latency = Histogram()  # accepted (250) to delivered to every recipient
        self._recipients: collections.Counter[str] = collections.Counter()
        self._dsns = 0
        self._errors = 0
        # Sent, but the result could not be written (disk full): retried for the record alone, never
        # sent again for that. A crash loses this memory; then each such message is sent once more.
        self._unrecorded: dict[str, DeliveryStatus] = {}
        self._record_tries: collections.Counter[str] = collections.Counter()
        self._disk_full = False
        self._disk_full_total = 0

    @property
    def transport(self) -> Transport:
        return self._transport

    def statistics(self) -> DeliveryStatistics:
        return DeliveryStatistics(
            in_flight=len(self._plan.active),
            sending=self._senders,
            ready=len(self._plan.ready),
            scheduled=len(self._plan.due),
            connections_open=self._transport.connections_open(),
            connections_total=self._transport.connections_made(),
            attempts_total=self._attempts,
            outcomes_total={k: self._outcomes[k] for k in ATTEMPT_OUTCOMES},
            recipients_total={k: self._recipients[k] for k in RECIPIENT_OUTCOMES},
            dsns_total=self._dsns,
            errors_total=self._errors,
            out_of_step_total=self._transport.out_of_step,
            unrecorded=len(self._unrecorded),
            disk_full_total=self._disk_full_total,
            delivery_seconds=self._latency.snapshot(),
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
                raise SpoolError(f"cannot read {self._spool.describe()}: {exc}") from exc
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
        log_event(log, "delivery_worker_stopped", pending=len(self._plan.where))

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
        self._plan.enqueue(queue_id, state)

    def _schedule(self, queue_id: str, state: QueueState, when: float) -> None:
        self._plan.schedule(queue_id, state, when)

    async def _load_backlog(self) -> None:
        spool = self._spool
        for queue_id in await _in_thread(spool.pending_ids, QueueState.INCOMING):
            self._enqueue(queue_id, QueueState.INCOMING)
        deferred = await _in_thread(spool.pending_ids, QueueState.DEFERRED)
        due = await _in_thread(_next_attempts, spool, deferred)
        for queue_id in deferred:
            self._schedule(queue_id, QueueState.DEFERRED, due.get(queue_id, 0.0))
        if self._plan.where:
            log_event(log, "delivery_backlog", incoming=len(self._plan.ready), deferred=len(deferred))

    async def _scan_incoming(self) -> None:
        # Mail can reach incoming/ from outside this process: `queue retry`, or a commit elsewhere.
        try:
            found = await _in_thread(self._spool.pending_ids, QueueState.INCOMING)
        except (OSError, SpoolError) as exc:
            error = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            log_event(log, "spool_scan_failed", logging.ERROR, error=error)
            return
        for queue_id in found:
            plan = self._plan
            if queue_id in self._unrecorded:
                if queue_id not in plan.where and queue_id not in plan.active:  # owed, and in no plan
                    self._schedule(queue_id, QueueState.INCOMING, self._clock())
            elif queue_id not in plan.where or queue_id in plan.due:
                self._enqueue(queue_id, QueueState.INCOMING)
        if self._spool.shared:
            await self._scan_deferred()

    async def _scan_deferred(self) -> None:
        # A shared queue: deferred mail another instance tried last becomes ours when it stops or
        # dies (its claims run out), so deferred mail is looked for too, not only at start.
        try:
            found = await _in_thread(self._spool.pending_ids, QueueState.DEFERRED)
            new = [queue_id for queue_id in found if not self._known(queue_id)]
            due = await _in_thread(_next_attempts, self._spool, new)
        except (OSError, SpoolError) as exc:
            log_event(log, "spool_scan_failed", logging.ERROR, error=str(exc))
            return
        for queue_id in new:
            if not self._known(queue_id):  # attempts may have ended meanwhile, rescheduling theirs
                self._schedule(queue_id, QueueState.DEFERRED, due.get(queue_id, 0.0))

    def _known(self, queue_id: str) -> bool:
        """Whether this worker has ``queue_id`` in hand: waiting, in flight, or its record pending."""
        plan = self._plan
        return queue_id in plan.where or queue_id in plan.active or queue_id in self._unrecorded

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
            plan = self._plan
            next_due = plan.promote_due(now)
            while plan.ready and len(plan.active) < settings.concurrency * IN_FLIGHT_PER_CONNECTION:
                queue_id = self._next_ready()
                if queue_id is None:
                    break
                group.create_task(self._attempt(queue_id, plan.start(queue_id)))
            delay = settings.poll_interval
            if next_due is not None:
                delay = min(delay, max(next_due - now, 0.001))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wakeup.wait()

    def _next_ready(self) -> str | None:
        # Disk full: only the records of what was sent go on; new sending waits (it stays ready).
        return self._plan.next_ready(only=self._unrecorded if self._disk_full else None)

    async def _prune(self) -> None:
        try:
            await self._spool.prune(
                now=self._clock(),
                done_retention=self._settings.done_retention,
                bounced_retention=self._settings.bounced_retention,
            )
        except (OSError, SpoolError) as exc:
            error = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            log_event(log, "spool_prune_failed", logging.WARNING, error=error)

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
            # Try again later, wherever it now is. If even that cannot be told (the store is away),
            # try it where it was: the attempt finds it if it moved. Never drop it: a message whose
            # result is owed is skipped by the scans (and held by this instance's claim).
            located: QueueState | None = state
            with contextlib.suppress(Exception):
                located = await _in_thread(self._spool.locate, queue_id)
            if located in PENDING_STATES:
                if queue_id in self._unrecorded:
                    self._record_later(queue_id, located)
                else:
                    self._schedule(queue_id, located, self._clock() + self._settings.initial_backoff)
        finally:
            self._plan.finish(queue_id)
            self._wakeup.set()

    async def _deliver(self, queue_id: str, state: QueueState) -> None:
        message = await self._read(queue_id, state)
        if message is None:
            self._forget(queue_id)
            return
        envelope, content, state = message.envelope, message.content, message.state
        remembered = self._unrecorded.get(queue_id)
        if remembered is not None:
            await self._record(queue_id, state, message, remembered)  # sent already: record it, only
            return
        now = self._clock()
        if self._disk_full:
            # Taken before the disk filled: what is sent now could not be recorded either.
            self._schedule(queue_id, state, now + self._settings.poll_interval)
            return
        status = message.status or DeliveryStatus.initial(envelope)
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
            if any(r.outcome == "delivered" for r in results):
                self._crash_points.reached("after-upstream-250")
            status = record_attempt(status, results, now)
            self._attempts += 1
        expiry = envelope.received_at + self._settings.retry_lifetime
        expired = bool(status.pending()) and now >= expiry
        if expired:
            status = expire(status, now)
        elif status.pending():
            status = schedule(status, min(now + self._backoff(status.attempts), expiry))
        if results or expired:
            outcome = attempt_outcome(results, expired)
            self._outcomes[outcome] += 1
            for result in results:
                self._recipients[result.outcome] += 1
            self._log_attempt(envelope, content, status, results, outcome, started, now)
        await self._record(queue_id, state, message, status)

    async def _record(
        self, queue_id: str, state: QueueState, message: SpoolMessage, status: DeliveryStatus
    ) -> None:
        """Settle ``status``; if the spool cannot take it, keep it in memory and try the record again
        later (never the sending: the upstream may already have the message)."""
        try:
            await self._settle(queue_id, state, message, status, self._clock())
        except FileNotFoundError:
            self._forget(queue_id)
            raise
        except Exception as exc:  # whatever failed, what was sent stays sent
            self._unrecorded[queue_id] = status
            self._record_tries[queue_id] += 1
            self._record_failed(queue_id, exc)
            self._record_later(queue_id, state)
            return
        tries, was_full = self._record_tries.get(queue_id, 0), self._disk_full
        self._disk_full = False
        self._forget(queue_id)
        if tries:
            log_event(log, "delivery_recorded", queue_id=queue_id, tries=tries + 1)
        if was_full:
            log_event(log, "spool_disk_full_cleared", logging.WARNING, unrecorded=len(self._unrecorded))

    def _record_later(self, queue_id: str, state: QueueState) -> None:
        """Try the record of what was sent again, backing off from ``poll_interval``."""
        exponent = min(max(self._record_tries[queue_id], 1) - 1, 30)
        limit = min(RECORD_RETRY_LIMIT, self._settings.max_backoff)
        delay = min(self._settings.poll_interval * 2.0**exponent, limit)
        self._schedule(queue_id, state, self._clock() + delay)

    def _forget(self, queue_id: str) -> None:
        self._unrecorded.pop(queue_id, None)
        self._record_tries.pop(queue_id, None)
        if not self._unrecorded:
            self._disk_full = False  # nothing left whose record would tell when space returns

    def _record_failed(self, queue_id: str, exc: Exception) -> None:
        """Disk full: one line when it starts (and one when it ends); anything else: one line each."""
        if isinstance(exc, OSError) and exc.errno in DISK_FULL:
            self._disk_full_total += 1
            if not self._disk_full:
                self._disk_full = True
                log_event(
                    log,
                    "spool_disk_full",
                    logging.ERROR,
                    error=errno.errorcode.get(exc.errno or 0, "?"),
                    detail="results of sent messages are kept in memory until the spool takes them; "
                    "no new delivery starts meanwhile",
                )
            return
        self._errors += 1
        error = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        log_event(log, "delivery_record_failed", logging.ERROR, queue_id=queue_id, error=error)

    def _backoff(self, attempts: int) -> float:
        return backoff(attempts, self._settings.initial_backoff, self._settings.max_backoff)

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
            if finished is QueueState.DONE:
                self._latency.observe(max(0.0, time.time() - message.envelope.received_at))
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
        if not envelope.mail_from:
            # Never answer a bounce with a bounce: that is how mail loops start.
            log_event(log, "dsn_suppressed", queue_id=queue_id, reason="null_sender", failed=len(failures))
            return reported(status)
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
        return dsn_sent(status)

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
            next_attempt=next_attempt_text(status, now),
        )


def _redact(reply: str) -> str:
    # Upstream replies often quote the recipient ("550 5.1.1 <bob@example.org>: unknown"); logs never
    # hold recipients' addresses. The status file and the sender's DSN keep the reply as it was.
    return _ADDRESS.sub("<address>", reply)


def _next_attempts(spool: QueuePort, queue_ids: Sequence[str]) -> dict[str, float]:
    due = {}
    for queue_id in queue_ids:
        # Gone meanwhile (SpoolError: delivered by another instance, deleted): nothing to schedule.
        with contextlib.suppress(FileNotFoundError, SpoolError):
            status = spool.find(queue_id).status
            if status is not None:
                due[queue_id] = status.next_attempt_at
    return due


async def _in_thread(function: Callable[..., _T], *args: Any) -> _T:
    return await asyncio.get_running_loop().run_in_executor(io_executor(), function, *args)
