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

import contextlib
import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg

from gateway.errors import StateUnavailable
from gateway.state.batching import Batcher as GenericBatcher
from gateway.state.batching import FollowUp, run_follow_ups, run_tasks

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
    run_follow_ups([item.follow_up for item in items], errors)
    tasks = [index for index, item in enumerate(items) if item.task is not None]
    for index, error in zip(tasks, run_tasks([_task(items[index]) for index in tasks]), strict=True):
        errors[index] = error
    return BatchOutcome(errors, transactions)


def _unavailable(error: BaseException) -> bool:
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, StateUnavailable):
            return True
        cause = cause.__cause__
    return False


def _task(item: Item) -> Task:
    assert item.task is not None
    return item.task


def _work(item: Item) -> Work:
    assert item.work is not None
    return item.work


class Batcher(GenericBatcher[Item, BatchOutcome]):
    """Runs changes in batches on the I/O threads, one batch at a time (as ``GroupCommitter``)."""

    def __init__(
        self,
        transaction: Callable[[], contextlib.AbstractContextManager[Cursor]],
        on_batch: Callable[[BatchOutcome], None],
    ) -> None:
        super().__init__(functools.partial(apply_batch, transaction), on_batch, "queue")
