"""Group commit: the spool's renames (and the small files behind them) made durable in shared batches.

Every file is written and fsynced on an I/O thread (so the kernel's journal can merge concurrent
flushes), and the fsync of a folder is shared by every rename made before it began. Callers waiting
for the same folder fsync are released together.

A change's follow-up (its decision's audit entry and ledger step) is written as soon as the change's
file is, and flushed on a thread of their own while the batch's files are: both are on disk before any
message of the batch is renamed into view. A message is therefore never visible (and delivered)
without its decision, and the 250 waits for two flushes in a row (data, then folder) rather than four
(data, folder, audit trail, audit salts). A change that fails after its record was written is
withdrawn (``FollowUp.withdraw``), so the trail says it was not stored.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from gateway.state.batching import (
    IO_THREADS,
    Batcher,
    FollowUp,
    distinct_flushes,
    io_executor,
    run_flushes,
    run_logged,
    run_records,
    run_tasks,
)
from gateway.state.files import create_and_write, fsync_directory

__all__ = [
    "IO_THREADS",
    "BatchResult",
    "Change",
    "FollowUp",
    "GroupCommitter",
    "Task",
    "io_executor",
    "write_and_flush",
]


def write_and_flush(path: str | Path, chunks: Sequence[bytes]) -> None:
    """Create ``path`` (0600, must not exist), write ``chunks``, and flush them to disk."""
    fd = create_and_write(path, chunks)
    try:
        os.fdatasync(fd)
    finally:
        os.close(fd)


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
    """Apply the batch's changes with their follow-ups, then run its tasks (each distinct task once;
    its exception is the result of every item that named it)."""
    changes = [item for item in items if isinstance(item, Change)]
    result = _apply_changes(changes)
    change_errors = iter(result.errors)
    task_errors = iter(run_tasks([item for item in items if not isinstance(item, Change)]))
    errors = [next(change_errors if isinstance(item, Change) else task_errors) for item in items]
    return BatchResult(errors, result.file_syncs, result.directory_syncs)


def _apply_changes(changes: Sequence[Change]) -> BatchResult:
    """Write the batch's new files and their records, flush both together, rename everything, then
    fsync each folder touched once."""
    errors: list[BaseException | None] = [None] * len(changes)
    descriptors: dict[int, int] = {}
    # Writing every file before flushing any lets the kernel write their data out together.
    for index, change in enumerate(changes):
        if change.chunks is not None:
            try:
                descriptors[index] = create_and_write(change.source, change.chunks)
            except OSError as exc:
                errors[index] = exc
    follow_ups = [change.follow_up for change in changes]
    recorded = [
        error is None and follow_up is not None for follow_up, error in zip(follow_ups, errors, strict=True)
    ]
    flushing = _flush_beside(run_records(follow_ups, errors), bool(descriptors))
    try:
        for index, fd in descriptors.items():
            try:
                os.fdatasync(fd)
            except OSError as exc:
                errors[index] = exc
            finally:
                os.close(fd)
    finally:
        # The records must be durable before a message is renamed into view (and may be delivered).
        flushing()
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
    withdrawn = zip(follow_ups, recorded, errors, strict=True)
    _withdraw([follow_up for follow_up, was, error in withdrawn if was and error is not None])
    return BatchResult(errors, len(descriptors), len(touched))


@functools.cache
def _record_flusher() -> ThreadPoolExecutor:
    """Threads of their own for the records' flushes: a batch thread of the I/O pool waits for them,
    and waiting on work queued behind it in the same pool could wait for ever once every I/O
    thread is busy."""
    return ThreadPoolExecutor(max_workers=2, thread_name_prefix="gateway-records")


def _flush_beside(flushes: Sequence[Callable[[], None]], files: bool) -> Callable[[], None]:
    """Start the records' flushes on a thread of their own while this one flushes the batch's files
    (one flush's wait instead of one after the other); returns the wait for them."""
    if not flushes:
        return lambda: None
    if files:
        with contextlib.suppress(RuntimeError):  # the pool is shutting down: flush here instead
            running = _record_flusher().submit(run_flushes, flushes)
            return lambda: running.result()  # run_flushes logs what fails; it raises nothing
    run_flushes(flushes)
    return lambda: None


def _withdraw(failed: Sequence[FollowUp | None]) -> None:
    """Changes recorded and then not stored: say so in their records, and flush that (best effort)."""
    withdrawing = [f for f in failed if f is not None and f.withdraw is not None]
    for follow_up in withdrawing:
        assert follow_up.withdraw is not None
        run_logged(follow_up.withdraw)
    run_flushes(distinct_flushes(withdrawing))


class GroupCommitter(Batcher[Change | Task, BatchResult]):
    """Applies renames (and the small files behind them) in batches, one batch at a time.

    Changes submitted while a batch runs form the next one, which starts when it ends; a change is
    durable when its batch has fsynced its folders, so one folder fsync covers every rename in the
    batch and all their callers are released together. One thread call per batch, not per message.
    A task (``Spool.run_with_next_batch``) rides along and runs after the batch's changes; the
    batch's callers are released when it has run too (a fraction of a millisecond for an audit flush).
    """

    def __init__(self, on_batch: Callable[[BatchResult], None]) -> None:
        super().__init__(_apply_named_batch, on_batch, "spool")


def _apply_named_batch(items: list[Change | Task]) -> BatchResult:
    # Looks ``_apply_batch`` up on every batch, so a fault injected in its place (tests) takes effect.
    return _apply_batch(items)
