"""Group commit for the PostgreSQL queue: concurrent changes share one transaction, one WAL flush.

The files queue shares one folder fsync among every rename made meanwhile; here every change asked
for while a transaction runs joins the next one, and its callers are released together once the
``COMMIT`` has returned (``synchronous_commit`` on: the WAL is on the primary's disk). A change that
does not apply (a message gone, or claimed by another instance) fails alone; if the transaction
itself fails, each change is tried again in a transaction of its own, so one bad change never fails
the others. Follow-ups and tasks run on the same thread after the commit, as the files queue runs
them after its batch (``spool_commit``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg

from gateway.errors import SpoolError, StateUnavailable
from gateway.logs import log_event
from gateway.state.spool_commit import FollowUp, io_executor

log = logging.getLogger("gateway.state.postgresql.queue")

Cursor = psycopg.Cursor[Any]
# One change inside the batch's transaction: returns None when it applied, else the error its caller
# gets (the transaction carries on); an exception it raises aborts the transaction.
Work = Callable[[Cursor], BaseException | None]
Task = Callable[[], None]


@dataclass(eq=False, slots=True)
class Item:
    """One change of a batch, or a task riding along with it."""

    work: Work | None = None
    follow_up: FollowUp | None = None
    task: Task | None = None


@dataclass(frozen=True)
class BatchOutcome:
    errors: list[BaseException | None]
    transactions: int


def apply_batch(
    transaction: Callable[[], contextlib.AbstractContextManager[Cursor]], items: Sequence[Item]
) -> BatchOutcome:
    """Apply every change in one transaction (each alone if that fails), then follow-ups, then tasks."""
    errors: list[BaseException | None] = [None] * len(items)
    changes = [index for index, item in enumerate(items) if item.work is not None]
    transactions = 0
    if changes:
        transactions = 1
        try:
            with transaction() as cursor:
                for index in changes:
                    errors[index] = _work(items[index])(cursor)
        except Exception as batch_error:
            if len(changes) == 1 or _unavailable(batch_error):
                # The database cannot be reached: trying each change alone would only make every
                # caller wait for the same answer once per change.
                for index in changes:
                    errors[index] = batch_error
            else:
                for index in changes:
                    transactions += 1
                    try:
                        with transaction() as cursor:
                            errors[index] = _work(items[index])(cursor)
                    except Exception as exc:
                        errors[index] = exc
    _run_follow_ups(items, errors)
    for index, item in enumerate(items):
        if item.task is not None:
            try:
                item.task()
            except Exception as exc:  # the task's caller gets it, as from a thread of its own
                errors[index] = exc
    return BatchOutcome(errors, transactions)


def _unavailable(error: BaseException) -> bool:
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, StateUnavailable):
            return True
        cause = cause.__cause__
    return False


def _work(item: Item) -> Work:
    assert item.work is not None
    return item.work


def _run_follow_ups(items: Sequence[Item], errors: Sequence[BaseException | None]) -> None:
    flushes: dict[int, Callable[[], None]] = {}
    for item, error in zip(items, errors, strict=True):
        follow_up = item.follow_up
        if follow_up is None or error is not None:
            continue
        _run_logged(follow_up.record)
        if follow_up.flush is not None:
            flushes.setdefault(id(follow_up.flush), follow_up.flush)
    for flush in flushes.values():
        _run_logged(flush)


def _run_logged(work: Callable[[], None]) -> None:
    try:
        work()
    except Exception as exc:  # the follow-up should have handled it; the commit stands regardless
        log_event(log, "spool_follow_up_failed", logging.ERROR, error=type(exc).__name__)


class Batcher:
    """Runs changes in batches on the I/O threads, one batch at a time (as ``GroupCommitter``)."""

    def __init__(
        self,
        transaction: Callable[[], contextlib.AbstractContextManager[Cursor]],
        on_batch: Callable[[BatchOutcome], None],
    ) -> None:
        self._transaction = transaction
        self._on_batch = on_batch
        self._loop: asyncio.AbstractEventLoop | None = None
        self._running = False
        self._waiting: list[tuple[Item, asyncio.Future[None]]] = []

    async def apply(self, item: Item) -> None:
        """Return once ``item`` is committed (or its task has run); raise what it failed with."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # a new event loop (tests, a restarted service): start afresh
            self._loop, self._running, self._waiting = loop, False, []
        done = loop.create_future()
        self._waiting.append((item, done))
        if not self._running:
            self._launch(loop)
        await done

    def _launch(self, loop: asyncio.AbstractEventLoop) -> None:
        batch, self._waiting = self._waiting, []
        self._running = True
        try:
            io_executor().submit(self._run, loop, batch)
        except RuntimeError as exc:  # the executor is shutting down (interpreter exit)
            self._finished(loop, batch, SpoolError(f"queue I/O unavailable: {exc}"))

    def _run(self, loop: asyncio.AbstractEventLoop, batch: list[tuple[Item, asyncio.Future[None]]]) -> None:
        outcome: BatchOutcome | BaseException
        try:
            outcome = apply_batch(self._transaction, [item for item, _ in batch])
        except BaseException as exc:  # handed to the callers; the thread carries on
            outcome = exc
        with contextlib.suppress(RuntimeError):  # the loop has been closed meanwhile: nobody waits
            loop.call_soon_threadsafe(self._finished, loop, batch, outcome)

    def _finished(
        self,
        loop: asyncio.AbstractEventLoop,
        batch: list[tuple[Item, asyncio.Future[None]]],
        outcome: BatchOutcome | BaseException,
    ) -> None:
        if loop is not self._loop:
            return
        self._running = False
        if isinstance(outcome, BatchOutcome):
            self._on_batch(outcome)
            errors: list[BaseException | None] = list(outcome.errors)
        else:
            errors = [outcome] * len(batch)
        for (_, done), error in zip(batch, errors, strict=True):
            if done.done():
                continue
            if error is None:
                done.set_result(None)
            else:
                done.set_exception(error)
                done.exception()  # retrieved here: its caller may have been cancelled meanwhile
        if self._waiting and not loop.is_closed():
            self._launch(loop)
