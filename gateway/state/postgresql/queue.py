"""The queue in PostgreSQL: accepted messages and their delivery status, shared by several gateways.

One row per message (``queue_messages``, migration 0002): its envelope, its exact bytes with their
SHA-256, the state (the files queue's folder) and the per-recipient status (the same JSON as the files
queue's ``status/<queue id>.json``). ``commit`` returns once the row is committed with
``synchronous_commit`` on; concurrent commits share one transaction (``queue_batches``).

Several instances deliver from one queue. An instance takes a message before each attempt
(``read`` claims it: its id in ``claimed_by``, a lease in ``lease_until`` on the database's clock)
and keeps it while it lives: its heartbeat (run while ``delivery_lock`` is held) renews the leases of
everything it claimed, a clean stop gives them up, and the messages of an instance that died are
taken over by the others once its leases have run out. A message claimed by another live instance
is neither listed as pending nor readable for delivery, and nobody else may record its results: two
instances never deliver the same message at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, ParamSpec, TypeVar

import psycopg
from psycopg.rows import tuple_row

from gateway.errors import CorruptSpoolEntry, SpoolError, StateError
from gateway.logs import log_event
from gateway.state.delivery_status import DeliveryStatus, decode_status
from gateway.state.postgresql import queue_changes
from gateway.state.postgresql.queue_batches import Batcher, BatchOutcome, Cursor, Item
from gateway.state.spool_commit import FollowUp, io_executor
from gateway.state.spool_records import (
    PENDING_STATES,
    QUEUE_ID,
    QueueState,
    RecoveryReport,
    SpoolEntry,
    SpoolEnvelope,
    SpoolMessage,
    SpoolStatistics,
    checked_id,
    new_queue_id,
)

log = logging.getLogger("gateway.state.postgresql.queue")
_P = ParamSpec("_P")
_T = TypeVar("_T")

Connect = Callable[[], contextlib.AbstractContextManager[psycopg.Connection[Any]]]

LEASE_SECONDS = 60.0
"""How long a claim outlives its instance's last heartbeat: a dead instance's messages wait this long."""
STATISTICS_AGE = 5.0
"""Seconds ``recent_statistics`` serves one count of the messages before counting again."""
FRESH_CACHE_BYTES = 64 * 1024 * 1024
"""Memory for just-committed messages, handed to this process's delivery without reading them back."""

# The statements in full (no text is ever built from values). queue_now() is the database's clock,
# queue_claimable() whether an instance may take a message (migration 0002).
_CLAIM = (
    "UPDATE queue_messages SET claimed_by = %(me)s, lease_until = queue_now() + %(lease)s "
    "WHERE queue_id = %(id)s AND state = %(state)s AND queue_claimable(claimed_by, lease_until, %(me)s) "
    "RETURNING status::text, queue_id, mail_from, rcpt_tos, authenticated_as, received_at, "
    "client_address, content, sha256"
)
_CLAIM_STATUS = (
    "UPDATE queue_messages SET claimed_by = %(me)s, lease_until = queue_now() + %(lease)s "
    "WHERE queue_id = %(id)s AND state = %(state)s AND queue_claimable(claimed_by, lease_until, %(me)s) "
    "RETURNING status::text"
)
_READ = (
    "SELECT status::text, queue_id, mail_from, rcpt_tos, authenticated_as, received_at, "
    "client_address, content, sha256 FROM queue_messages WHERE queue_id = %(id)s AND state = %(state)s"
)
_READ_STATUS = "SELECT status::text FROM queue_messages WHERE queue_id = %(id)s AND state = %(state)s"
_ENTRIES = (
    "SELECT state, size, problem, status::text, queue_id, mail_from, rcpt_tos, authenticated_as, "
    "received_at, client_address FROM queue_messages"
)
_ORDER = " ORDER BY queue_state_rank(state), queue_id"


class PostgresQueue:
    """The queue in PostgreSQL (implements ``QueuePort``). One per process, like ``Spool``.

    ``connect`` opens a connection inside a transaction, committed when the block ends
    (``Database.connection``). Async methods are for the running service; the plain ones block on
    the database briefly (the CLI and tests).
    """

    def __init__(self, connect: Connect, *, lease_seconds: float = LEASE_SECONDS, name: str = "") -> None:
        self.connect = connect  # public: another view of the same queue is PostgresQueue(queue.connect)
        self._connect = connect
        self.lease_seconds = lease_seconds
        # Who claims: unique per queue object, readable by an operator looking at claimed_by.
        self.instance = name or f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self._listeners: list[Callable[[str], None]] = []
        self._commits = 0
        self._commit_failures = 0
        self._transactions = 0
        self._quarantined = 0
        self._batcher = Batcher(self._transaction, self._count_batch)
        self._fresh: dict[str, SpoolMessage] = {}
        self._fresh_bytes = 0
        self._delivering = threading.Lock()
        self._counting = threading.Lock()
        self._counts: dict[str, tuple[int, float]] = {}
        self._counted_at = -STATISTICS_AGE
        self._recounting = False

    shared = True
    """Other instances deliver from this queue too: the delivery worker looks for their work."""

    @property
    def disk_path(self) -> None:
        """The queue is not on this host's disk: the intake checks no free space for it."""
        return None

    def describe(self) -> str:
        return "the PostgreSQL queue"

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[Cursor]:
        """A transaction; the database's errors become SpoolError (what the queue's callers handle)."""
        try:
            with self._connect() as connection:
                # ``Database`` never lets synchronous_commit be off (nor weakens a stronger setting,
                # such as remote_apply for a replica): a committed transaction is on disk.
                yield connection.cursor(row_factory=tuple_row)
        except (StateError, psycopg.Error) as exc:
            raise SpoolError(f"{self.describe()} failed: {_reason(exc)}") from exc

    def _params(self, **values: Any) -> dict[str, Any]:
        return {"me": self.instance, "lease": self.lease_seconds, **values}

    # -- intake

    @staticmethod
    def new_queue_id() -> str:
        return new_queue_id()

    async def commit(
        self, envelope: SpoolEnvelope, content: bytes, follow_up: FollowUp | None = None
    ) -> None:
        """Store a new message as incoming; return once its transaction is committed.

        ``follow_up`` runs on the I/O thread after the commit, before this returns (as ``Spool``).
        Committing a queue id already stored with the same bytes changes nothing and succeeds (a
        release recovered after a crash); with other bytes it is refused.
        """
        queue_id = checked_id(envelope.queue_id)
        if not envelope.rcpt_tos:
            raise SpoolError(f"message {queue_id} has no recipients; nothing to spool")
        work = functools.partial(queue_changes.insert, envelope, content, hashlib.sha256(content).hexdigest())
        try:
            await self._batcher.apply(Item(work=work, follow_up=follow_up))
        except SpoolError as exc:
            self._commit_failures += 1
            log_event(log, "spool_commit_failed", logging.ERROR, queue_id=queue_id, error=_reason(exc))
            raise SpoolError(f"cannot store message {queue_id} in the queue: {_reason(exc)}") from exc
        self._commits += 1
        if self._fresh_bytes + len(content) <= FRESH_CACHE_BYTES:
            self._fresh[queue_id] = SpoolMessage(envelope, content, QueueState.INCOMING, None)
            self._fresh_bytes += len(content)
        for listener in tuple(self._listeners):
            listener(queue_id)

    def on_commit(self, listener: Callable[[str], None]) -> Callable[[], None]:
        """Call ``listener(queue_id)`` after each commit made by this process; returns an unsubscribe.

        Commits by other instances are found by the delivery worker's scans.
        """
        self._listeners.append(listener)

        def unsubscribe() -> None:
            with contextlib.suppress(ValueError):
                self._listeners.remove(listener)

        return unsubscribe

    async def run_with_next_batch(self, task: Callable[[], None]) -> None:
        """Run blocking ``task`` on the I/O thread after the next batch's transaction."""
        await self._batcher.apply(Item(task=task))

    # -- delivery

    @contextlib.contextmanager
    def delivery_lock(self) -> Iterator[None]:
        """While held, this instance delivers: a heartbeat renews its claims; leaving gives them up.

        Other instances may deliver from the same queue at the same time (each message is claimed by
        one). SpoolError if this queue object is delivering already.
        """
        if not self._delivering.acquire(blocking=False):
            raise SpoolError(f"this process is delivering from {self.describe()} already")
        stop = threading.Event()
        beat = threading.Thread(target=self._heartbeat, args=(stop,), name="queue-heartbeat", daemon=True)
        try:
            beat.start()
            yield
        finally:
            stop.set()
            beat.join()
            with contextlib.suppress(SpoolError):
                self._release_all()
            self._delivering.release()

    def _heartbeat(self, stop: threading.Event) -> None:
        while not stop.wait(self.lease_seconds / 4):
            try:
                self.renew()
            except SpoolError as exc:
                log_event(log, "queue_heartbeat_failed", logging.WARNING, error=str(exc))

    def renew(self) -> int:
        """Extend the lease of every message this instance has claimed; returns how many."""
        with self._transaction() as cursor:
            # SKIP LOCKED: a row this instance's own batch is changing right now is renewed at the next
            # beat (a lease outlasts several), instead of both transactions waiting on each other's
            # rows taken in another order (a deadlock, which PostgreSQL resolves by failing one).
            cursor.execute(
                "UPDATE queue_messages SET lease_until = queue_now() + %(lease)s WHERE queue_id IN ("
                "SELECT queue_id FROM queue_messages WHERE claimed_by = %(me)s FOR UPDATE SKIP LOCKED)",
                self._params(),
            )
            return cursor.rowcount

    def _release_all(self) -> None:
        with self._transaction() as cursor:
            cursor.execute(
                "UPDATE queue_messages SET claimed_by = NULL, lease_until = NULL WHERE claimed_by = %(me)s",
                self._params(),
            )

    def recover(self) -> RecoveryReport:
        """Nothing is half-written in a database; claims that ran out are cleared for the listings."""
        with self._transaction() as cursor:
            cursor.execute(
                "UPDATE queue_messages SET claimed_by = NULL, lease_until = NULL "
                "WHERE claimed_by IS NOT NULL AND lease_until < queue_now()"
            )
        return RecoveryReport()

    def pending_ids(self, state: QueueState) -> list[str]:
        """Queue ids in a pending state that this instance may take, oldest first."""
        with self._transaction() as cursor:
            cursor.execute(
                "SELECT queue_id FROM queue_messages WHERE state = %(state)s "
                "AND queue_claimable(claimed_by, lease_until, %(me)s) ORDER BY queue_id",
                self._params(state=state.value),
            )
            return [row[0] for row in cursor.fetchall()]

    def locate(self, queue_id: str) -> QueueState | None:
        with self._transaction() as cursor:
            cursor.execute("SELECT state FROM queue_messages WHERE queue_id = %s", (queue_id,))
            row = cursor.fetchone()
        return None if row is None else QueueState(row[0])

    async def read(self, queue_id: str, state: QueueState) -> SpoolMessage:
        """Claim a pending message for an attempt and read it with its status.

        FileNotFoundError if it is not in ``state`` or another live instance has claimed it;
        CorruptSpoolEntry if its bytes no longer match their checksum.
        """
        queue_id = checked_id(queue_id)
        fresh = self._fresh.pop(queue_id, None)
        if fresh is not None:
            self._fresh_bytes -= len(fresh.content)
            if state is not QueueState.INCOMING:
                fresh = None
        return await self._in_thread(self._claim, queue_id, state, fresh)

    def _claim(self, queue_id: str, state: QueueState, fresh: SpoolMessage | None) -> SpoolMessage:
        if state in PENDING_STATES:
            statement = _CLAIM if fresh is None else _CLAIM_STATUS
        else:  # finished mail is read, never claimed: nobody delivers it any more
            statement = _READ if fresh is None else _READ_STATUS
        with self._transaction() as cursor:
            cursor.execute(statement, self._params(id=queue_id, state=state.value))
            row = cursor.fetchone()
        if row is None:
            raise FileNotFoundError(
                f"message {queue_id} is not {state.value} or is claimed by another instance"
            )
        status = self._status(queue_id, row[0])
        if fresh is not None:
            return SpoolMessage(fresh.envelope, fresh.content, state, status)
        envelope = _envelope(row[1:7])
        content, digest = bytes(row[7]), row[8]
        if hashlib.sha256(content).hexdigest() != digest:
            raise CorruptSpoolEntry(f"{queue_id}: content checksum mismatch")
        return SpoolMessage(envelope, content, state, status)

    def _status(self, queue_id: str, text: str | None) -> DeliveryStatus | None:
        if text is None:
            return None
        try:
            return decode_status(text.encode("utf-8"), queue_id)
        except CorruptSpoolEntry as exc:
            # The message itself is intact: deliver it again to everyone rather than lose it.
            self._quarantined += 1
            log_event(log, "spool_status_corrupt", logging.ERROR, queue_id=queue_id, reason=str(exc))
            return None

    async def write_status(self, queue_id: str, status: DeliveryStatus) -> None:
        """Durably replace the per-recipient status (QueueTakenOver if another instance claimed it)."""
        queue_id = checked_id(queue_id)
        work = functools.partial(queue_changes.write_status, self._params(id=queue_id), status)
        await self._batcher.apply(Item(work=work))

    async def move(self, queue_id: str, source: QueueState, target: QueueState) -> None:
        """Durably move a message to another state; FileNotFoundError if it is not in ``source``.

        A finished message (done, bounced) is no longer claimed by anyone.
        """
        queue_id = checked_id(queue_id)
        work = functools.partial(
            queue_changes.move, self._params(id=queue_id, source=source.value, target=target.value)
        )
        await self._batcher.apply(Item(work=work))

    async def quarantine(self, queue_id: str, state: QueueState, reason: str) -> None:
        """Set an unreadable message aside as corrupt (kept for an operator, never delivered)."""
        await self._in_thread(self._quarantine, queue_id, state, reason)

    def _quarantine(self, queue_id: str, state: QueueState, reason: str) -> None:
        with self._transaction() as cursor:
            cursor.execute(
                "UPDATE queue_messages SET state = 'corrupt', problem = %(reason)s, claimed_by = NULL, "
                "lease_until = NULL WHERE queue_id = %(id)s AND state = %(state)s",
                {"id": queue_id, "state": state.value, "reason": reason},
            )
            moved = cursor.rowcount
        if moved:
            self._quarantined += 1
            log_event(
                log, "spool_corrupt", logging.ERROR, queue_id=queue_id, state=state.value, reason=reason
            )

    async def prune(self, *, now: float, done_retention: float, bounced_retention: float) -> int:
        return await self._in_thread(self.prune_now, now, done_retention, bounced_retention)

    def prune_now(self, now: float, done_retention: float, bounced_retention: float) -> int:
        """Delete finished messages older than their retention (since they finished); how many went."""
        with self._transaction() as cursor:
            cursor.execute(
                "DELETE FROM queue_messages WHERE (state = 'done' AND finished_at <= %(done)s) "
                "OR (state = 'bounced' AND finished_at <= %(bounced)s)",
                {"done": now - done_retention, "bounced": now - bounced_retention},
            )
            removed = cursor.rowcount
        if removed:
            log_event(log, "spool_pruned", removed=removed)
        return removed

    async def _in_thread(self, function: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
        call = functools.partial(function, *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(io_executor(), call)

    def _count_batch(self, outcome: BatchOutcome) -> None:
        self._transactions += outcome.transactions

    # -- operators (plain methods: the CLI and tests)

    def entries(self, state: QueueState | None = None) -> list[SpoolEntry]:
        """Messages in one state (or all), oldest first; envelopes and status only, no content."""
        with self._transaction() as cursor:
            if state is None:
                cursor.execute(_ENTRIES + _ORDER)
            else:
                cursor.execute(_ENTRIES + " WHERE state = %(state)s" + _ORDER, {"state": state.value})
            return [self._entry(row) for row in cursor.fetchall()]

    def _entry(self, row: tuple[Any, ...]) -> SpoolEntry:
        state = QueueState(row[0])
        envelope = _envelope(row[4:10])
        if state is QueueState.CORRUPT:
            return SpoolEntry(
                envelope.queue_id, state, row[1], None, None, problem=row[2] or "set aside as unreadable"
            )
        return SpoolEntry(envelope.queue_id, state, row[1], envelope, self._status(envelope.queue_id, row[3]))

    def find(self, queue_id: str) -> SpoolEntry:
        """The entry with this queue id, in whatever state; SpoolError if there is none."""
        if QUEUE_ID.match(queue_id):
            with self._transaction() as cursor:
                cursor.execute(_ENTRIES + " WHERE queue_id = %s", (queue_id,))
                row = cursor.fetchone()
            if row is not None:
                return self._entry(row)
        raise SpoolError(f"no message {queue_id!r} in the spool (see: conduct-gateway queue list)")

    def load(self, queue_id: str) -> SpoolMessage:
        """The message with its content (``queue show``); CorruptSpoolEntry if it cannot be read."""
        entry = self.find(queue_id)
        if entry.state is QueueState.CORRUPT:
            raise CorruptSpoolEntry(f"message {queue_id} is in corrupt/: {entry.problem}")
        with self._transaction() as cursor:
            cursor.execute(
                "SELECT state, status::text, queue_id, mail_from, rcpt_tos, authenticated_as, received_at, "
                "client_address, content, sha256 FROM queue_messages WHERE queue_id = %s",
                (queue_id,),
            )
            row = cursor.fetchone()
        if row is None or row[0] == QueueState.CORRUPT.value:
            raise SpoolError(f"message {queue_id} changed state while being read; try again")
        content = bytes(row[8])
        if hashlib.sha256(content).hexdigest() != row[9]:
            raise CorruptSpoolEntry(f"{queue_id}: content checksum mismatch")
        return SpoolMessage(_envelope(row[2:8]), content, QueueState(row[0]), self._status(queue_id, row[1]))

    def retry(self, queue_id: str) -> None:
        """Send a deferred message back to incoming so it is tried at once."""
        entry = self.find(queue_id)
        if entry.state is QueueState.INCOMING:
            return
        if entry.state is not QueueState.DEFERRED:
            raise SpoolError(f"message {queue_id} is {entry.state.value}; only deferred mail can be retried")
        with self._transaction() as cursor:
            cursor.execute(
                "UPDATE queue_messages SET state = 'incoming' WHERE queue_id = %s AND state = 'deferred'",
                (queue_id,),
            )
            moved = cursor.rowcount
        if not moved:
            raise SpoolError(f"message {queue_id} changed state meanwhile; look again")
        log_event(log, "spool_retry", queue_id=queue_id)

    def retry_all(self) -> int:
        """Send every deferred message back to incoming; returns how many."""
        with self._transaction() as cursor:
            cursor.execute(
                "UPDATE queue_messages SET state = 'incoming' WHERE state = 'deferred' RETURNING queue_id"
            )
            moved = [row[0] for row in cursor.fetchall()]
        for queue_id in moved:
            log_event(log, "spool_retry", queue_id=queue_id)
        return len(moved)

    def delete(self, queue_id: str) -> QueueState:
        """Remove a message (any state) and its status; returns the state it was in.

        A message being delivered at this moment may still reach its recipients.
        """
        entry = self.find(queue_id)
        with self._transaction() as cursor:
            cursor.execute(
                "DELETE FROM queue_messages WHERE queue_id = %s AND state = %s", (queue_id, entry.state.value)
            )
            removed = cursor.rowcount
        if not removed:
            raise SpoolError(f"message {queue_id} changed state meanwhile; look again")
        log_event(log, "spool_deleted", queue_id=queue_id, state=entry.state.value)
        return entry.state

    def statistics(self) -> SpoolStatistics:
        """Counted in the database now (every instance's messages), with this process's totals."""
        return self._statistics_from(self._count())

    def recent_statistics(self) -> SpoolStatistics:
        """``statistics`` as last counted, never waiting for the database: for ``/metrics``, served
        on the event loop. A count older than ``STATISTICS_AGE`` is refreshed on an I/O thread
        (kept as it was while the database cannot be reached)."""
        with self._counting:
            stale = time.monotonic() - self._counted_at >= STATISTICS_AGE
            if stale and not self._recounting:
                self._recounting = True
                try:
                    io_executor().submit(self._recount)
                except RuntimeError:  # the executor is shutting down (interpreter exit)
                    self._recounting = False
            counts = self._counts
        return self._statistics_from(counts)

    def _recount(self) -> None:
        try:
            counts = self._count()
        except SpoolError as exc:
            log_event(log, "queue_statistics_failed", logging.WARNING, error=str(exc))
            counts = None
        with self._counting:
            if counts is not None:
                self._counts, self._counted_at = counts, time.monotonic()
            self._recounting = False

    def _count(self) -> dict[str, tuple[int, float]]:
        with self._transaction() as cursor:
            cursor.execute(
                "SELECT state, count(*), queue_now() - min(committed_at) FROM queue_messages GROUP BY state"
            )
            rows = cursor.fetchall()
        return {state: (int(count), float(age or 0.0)) for state, count, age in rows}

    def _statistics_from(self, counts: dict[str, tuple[int, float]]) -> SpoolStatistics:
        return SpoolStatistics(
            messages={s.value: int(counts.get(s.value, (0, 0.0))[0]) for s in QueueState},
            commits_total=self._commits,
            commit_failures_total=self._commit_failures,
            directory_syncs_total=0,
            file_syncs_total=0,
            transactions_total=self._transactions,
            quarantined_total=self._quarantined,
            oldest_age_seconds={
                s.value: max(0.0, float(counts.get(s.value, (0, 0.0))[1] or 0.0)) for s in PENDING_STATES
            },
        )


def _envelope(row: tuple[Any, ...]) -> SpoolEnvelope:
    queue_id, mail_from, rcpt_tos, authenticated_as, received_at, client_address = row
    return SpoolEnvelope(
        queue_id=queue_id,
        mail_from=mail_from,
        rcpt_tos=tuple(rcpt_tos),
        authenticated_as=authenticated_as,
        received_at=float(received_at),
        client_address=client_address,
    )


def _reason(exc: BaseException) -> str:
    """Ours as it is; the driver's by class and SQLSTATE only (its detail may quote a row)."""
    if isinstance(exc, psycopg.Error):
        state = exc.sqlstate
        return f"{type(exc).__name__}, SQLSTATE {state}" if state else type(exc).__name__
    return str(exc)
