"""One batch at a time on the I/O threads: the group commit shared by the files spool and PostgreSQL queue.

Items submitted while a batch runs form the next one, which starts when it ends; every caller of a
batch is released together with its own item's error (or none). What a batch does (rename and fsync
folders, or run one transaction) is the ``apply`` function the owner passes in.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from gateway.errors import SpoolError
from gateway.logs import log_event

log = logging.getLogger("gateway.state.spool")

IO_THREADS = 16
"""Threads for blocking spool and maildir I/O (batches, large messages, reads, listings)."""


@functools.cache
def io_executor() -> ThreadPoolExecutor:
    """The shared pool for blocking file I/O (spool and maildir)."""
    return ThreadPoolExecutor(max_workers=IO_THREADS, thread_name_prefix="gateway-io")


@dataclass(frozen=True, slots=True)
class FollowUp:
    """Blocking work that must be durable with a commit before its caller hears of it (``Spool.commit``).

    ``record`` writes the decision's records (not yet durable); ``flush`` makes every record of the
    batch durable and runs once per batch (callers that pass the same callable share one run);
    ``withdraw`` records that the change, recorded already, could not be stored after all. The files
    spool runs ``record`` once the message's bytes are written and ``flush`` together with the
    message's own flush, both before the message becomes visible, so the message and its records
    reach the disk in one durable step (``spool_commit``); the PostgreSQL queue runs them after its
    transaction. All three handle their own errors: anything they raise is logged and does not fail
    the commit.
    """

    record: Callable[[], None]
    flush: Callable[[], None] | None = None
    withdraw: Callable[[], None] | None = None


def run_follow_ups(follow_ups: Sequence[FollowUp | None], errors: Sequence[BaseException | None]) -> None:
    """Each durable change's ``record``, then each distinct ``flush`` once."""
    run_flushes(run_records(follow_ups, errors))


def run_records(
    follow_ups: Sequence[FollowUp | None], errors: Sequence[BaseException | None]
) -> list[Callable[[], None]]:
    """Each ``record`` whose change has not failed; returns the distinct flushes they call for."""
    recorded = [f for f, error in zip(follow_ups, errors, strict=True) if f is not None and error is None]
    for follow_up in recorded:
        run_logged(follow_up.record)
    return distinct_flushes(recorded)


def distinct_flushes(follow_ups: Sequence[FollowUp]) -> list[Callable[[], None]]:
    """The flushes ``follow_ups`` call for, each callable once (followers of one batch share it)."""
    flushes = {id(f.flush): f.flush for f in follow_ups if f.flush is not None}
    return list(flushes.values())


def run_flushes(flushes: Sequence[Callable[[], None]]) -> None:
    for flush in flushes:
        run_logged(flush)


def run_tasks(tasks: Sequence[Callable[[], None]]) -> list[BaseException | None]:
    """Run the tasks riding with a batch, each distinct callable once: callers that pass the same one
    (the decisions' shared flush) share its run, and each gets its outcome (an exception, or None)."""
    outcomes: dict[int, BaseException | None] = {}
    errors: list[BaseException | None] = []
    for task in tasks:
        if id(task) not in outcomes:
            try:
                task()
            except Exception as exc:  # the task's callers get it, as from a thread of their own
                outcomes[id(task)] = exc
            else:
                outcomes[id(task)] = None
        errors.append(outcomes[id(task)])
    return errors


def run_logged(work: Callable[[], None]) -> None:
    """Run ``work``; log (by type only) and swallow what it raises."""
    try:
        work()
    except Exception as exc:  # the follow-up should have handled it; the commit stands regardless
        log_event(log, "spool_follow_up_failed", logging.ERROR, error=type(exc).__name__)


class Outcome(Protocol):
    """What a batch's ``apply`` returns: at least one error (or None) per item, in order."""

    @property
    def errors(self) -> Sequence[BaseException | None]: ...


ItemT = TypeVar("ItemT")
OutcomeT = TypeVar("OutcomeT", bound=Outcome)


class Batcher(Generic[ItemT, OutcomeT]):
    """Runs ``apply`` on batches of items on the I/O threads, one batch at a time.

    One thread call per batch, not per item; the answer comes back with one
    ``call_soon_threadsafe`` instead of ``run_in_executor``'s future chain, which takes two turns of
    the loop to reach the callback: under load each turn costs every caller milliseconds.
    """

    def __init__(
        self,
        apply: Callable[[list[ItemT]], OutcomeT],
        on_batch: Callable[[OutcomeT], None],
        what: str = "spool",
    ) -> None:
        self._apply = apply
        self._on_batch = on_batch
        self._what = what
        self._loop: asyncio.AbstractEventLoop | None = None
        self._running = False
        self._waiting: list[tuple[ItemT, asyncio.Future[None]]] = []

    async def apply(self, item: ItemT) -> None:
        """Return once ``item``'s batch has run; raise what ``item`` failed with."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # a new event loop (tests, a restarted service): start afresh
            self._loop, self._running, self._waiting = loop, False, []
        done = loop.create_future()
        self._waiting.append((item, done))
        if not self._running:
            self._launch(loop)
        # Awaited directly, not through a shield: each caller has its own future, so a cancelled
        # caller cancels only that (the batch skips it), and the answer reaches the caller one event
        # loop turn sooner.
        await done

    def _launch(self, loop: asyncio.AbstractEventLoop) -> None:
        batch, self._waiting = self._waiting, []
        self._running = True
        try:
            io_executor().submit(self._run, loop, batch)
        except RuntimeError as exc:  # the executor is shutting down (interpreter exit)
            self._finished(loop, batch, SpoolError(f"{self._what} I/O unavailable: {exc}"))

    def _run(self, loop: asyncio.AbstractEventLoop, batch: list[tuple[ItemT, asyncio.Future[None]]]) -> None:
        outcome: OutcomeT | BaseException
        try:
            outcome = self._apply([item for item, _ in batch])
        except BaseException as exc:  # handed to the callers; the thread carries on
            outcome = exc
        with contextlib.suppress(RuntimeError):  # the loop has been closed meanwhile: nobody waits
            loop.call_soon_threadsafe(self._finished, loop, batch, outcome)

    def _finished(
        self,
        loop: asyncio.AbstractEventLoop,
        batch: list[tuple[ItemT, asyncio.Future[None]]],
        outcome: OutcomeT | BaseException,
    ) -> None:
        if loop is not self._loop:
            return
        self._running = False
        errors: list[BaseException | None]
        if isinstance(outcome, BaseException):
            errors = [outcome] * len(batch)
        else:
            self._on_batch(outcome)
            errors = list(outcome.errors)
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
