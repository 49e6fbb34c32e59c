"""Group commit: the spool's renames (and the small files behind them) made durable in shared batches.

Every file is written and fsynced on an I/O thread (so the kernel's journal can merge concurrent
flushes), and the fsync of a folder is shared by every rename made before it began. Callers waiting
for the same folder fsync are released together.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from gateway.errors import SpoolError
from gateway.logs import log_event
from gateway.state.files import create_and_write, fsync_directory

log = logging.getLogger("gateway.state.spool")

IO_THREADS = 16
"""Threads for blocking spool and maildir I/O (batches, large messages, reads, listings)."""


@functools.cache
def io_executor() -> ThreadPoolExecutor:
    """The shared pool for blocking file I/O (spool and maildir)."""
    return ThreadPoolExecutor(max_workers=IO_THREADS, thread_name_prefix="gateway-io")


def write_and_flush(path: str | Path, chunks: Sequence[bytes]) -> None:
    """Create ``path`` (0600, must not exist), write ``chunks``, and flush them to disk."""
    fd = create_and_write(path, chunks)
    try:
        os.fdatasync(fd)
    finally:
        os.close(fd)


@dataclass(frozen=True, slots=True)
class FollowUp:
    """Blocking work that must follow a commit before its caller hears of it (see ``Spool.commit``).

    ``record`` runs on the spool's I/O thread once this message is durable; ``flush`` runs once per
    batch, after every record of the batch (callers that pass the same callable share one run). Both
    handle their own errors: anything they raise is logged and does not fail the commit.
    """

    record: Callable[[], None]
    flush: Callable[[], None] | None = None


@dataclass(eq=False, slots=True)
class Change:
    """One rename for the batch, optionally of a file the batch first creates from ``chunks``.

    Paths are plain strings: this is the per-message hot path, and pathlib costs more than the rest.
    """

    source: str
    target: str
    folders: tuple[str, ...]  # the folders whose entries change and must be fsynced
    chunks: Sequence[bytes] | None = None  # create ``source`` (0600) with these bytes first
    follow_up: FollowUp | None = None  # run once the change is durable, in the same batch


@dataclass(frozen=True)
class BatchResult:
    errors: list[BaseException | None]  # one per item of the batch, in order
    file_syncs: int
    directory_syncs: int


# A blocking call that rides along with a batch: run on its thread once the batch's changes are durable.
Task = Callable[[], None]


def _apply_batch(items: Sequence[Change | Task]) -> BatchResult:
    """Apply the batch's changes and their follow-ups, then run its tasks (each one's exception is
    its result)."""
    changes = [item for item in items if isinstance(item, Change)]
    result = _apply_changes(changes)
    _run_follow_ups(changes, result.errors)
    change_errors = iter(result.errors)
    errors: list[BaseException | None] = []
    for item in items:
        if isinstance(item, Change):
            errors.append(next(change_errors))
            continue
        try:
            item()
        except Exception as exc:  # the task's caller gets it, as from a thread of its own
            errors.append(exc)
        else:
            errors.append(None)
    return BatchResult(errors, result.file_syncs, result.directory_syncs)


def _run_follow_ups(changes: Sequence[Change], errors: Sequence[BaseException | None]) -> None:
    """Each durable change's ``record``, then each distinct ``flush`` once."""
    flushes: dict[int, Callable[[], None]] = {}
    for change, error in zip(changes, errors, strict=True):
        follow_up = change.follow_up
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


def _apply_changes(changes: Sequence[Change]) -> BatchResult:
    """Write the batch's new files, flush them, rename everything, then fsync each folder touched once."""
    errors: list[BaseException | None] = [None] * len(changes)
    descriptors: dict[int, int] = {}
    # Writing every file before flushing any lets the kernel write their data out together.
    for index, change in enumerate(changes):
        if change.chunks is not None:
            try:
                descriptors[index] = create_and_write(change.source, change.chunks)
            except OSError as exc:
                errors[index] = exc
    for index, fd in descriptors.items():
        try:
            os.fdatasync(fd)
        except OSError as exc:
            errors[index] = exc
        finally:
            os.close(fd)
    touched: dict[str, list[int]] = {}
    for index, change in enumerate(changes):
        if errors[index] is None:
            try:
                os.rename(change.source, change.target)  # noqa: PTH104
            except OSError as exc:
                errors[index] = exc
            else:
                for folder in change.folders:
                    touched.setdefault(folder, []).append(index)
        if errors[index] is not None and change.chunks is not None:
            with contextlib.suppress(OSError):
                os.unlink(change.source)  # noqa: PTH108
    for directory, indexes in touched.items():
        try:
            fsync_directory(directory)
        except OSError as exc:
            for index in indexes:
                errors[index] = exc
    return BatchResult(errors, len(descriptors), len(touched))


class GroupCommitter:
    """Applies renames (and the small files behind them) in batches, one batch at a time.

    Changes submitted while a batch runs form the next one, which starts when it ends; a change is
    durable when its batch has fsynced its folders, so one folder fsync covers every rename in the
    batch and all their callers are released together. One thread call per batch, not per message.
    A task (``Spool.run_with_next_batch``) rides along and runs after the batch's changes; the
    batch's callers are released when it has run too (a fraction of a millisecond for an audit flush).
    """

    def __init__(self, on_batch: Callable[[BatchResult], None]) -> None:
        self._on_batch = on_batch
        self._loop: asyncio.AbstractEventLoop | None = None
        self._running = False
        self._waiting: list[tuple[Change | Task, asyncio.Future[None]]] = []

    async def apply(self, change: Change | Task) -> None:
        """Return once ``change`` is durable (or the task has run); raise what it failed with."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # a new event loop (tests, a restarted service): start afresh
            self._loop, self._running, self._waiting = loop, False, []
        done = loop.create_future()
        self._waiting.append((change, done))
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
            self._finished(loop, batch, SpoolError(f"spool I/O unavailable: {exc}"))

    def _run(
        self, loop: asyncio.AbstractEventLoop, batch: list[tuple[Change | Task, asyncio.Future[None]]]
    ) -> None:
        """On the I/O thread: apply the batch, then hand the outcome straight to the event loop.

        One ``call_soon_threadsafe`` instead of ``run_in_executor``'s future chain, which takes two
        turns of the loop to reach the callback: under load each turn costs every caller milliseconds.
        """
        outcome: BatchResult | BaseException
        try:
            outcome = _apply_batch([change for change, _ in batch])
        except BaseException as exc:  # handed to the callers; the thread carries on
            outcome = exc
        with contextlib.suppress(RuntimeError):  # the loop has been closed meanwhile: nobody waits
            loop.call_soon_threadsafe(self._finished, loop, batch, outcome)

    def _finished(
        self,
        loop: asyncio.AbstractEventLoop,
        batch: list[tuple[Change | Task, asyncio.Future[None]]],
        outcome: BatchResult | BaseException,
    ) -> None:
        if loop is not self._loop:
            return
        self._running = False
        if isinstance(outcome, BatchResult):
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
