"""The durable queue between intake and delivery: one file per message, folders are states.

Layout under the spool root (every folder 0700, every file 0600)::

    tmp/        files being written; never read; stale ones are removed by ``recover()``
    incoming/   accepted and durable, not tried yet (or sent back by ``queue retry``)
    deferred/   tried, some recipients still waiting for a retry
    done/       every recipient delivered; kept ``done_retention``, then pruned
    bounced/    at least one recipient failed for good (the sender got a DSN); pruned likewise
    corrupt/    entries that could not be read back; kept for an operator, never pruned
    status/     per-recipient delivery results (``<queue id>.json``) of messages tried before

A message is one file holding its envelope and its exact bytes, so a single ``rename`` makes both
visible at once. A state change is a ``rename`` between folders. Nothing counts as stored until the
file and the folder it was renamed into are fsynced: ``commit()`` returns only then.

Changes are applied in batches by two group committers (``spool_commit``), one for intake's commits
and one for delivery's moves and status files, so neither waits for the other's fsyncs; the file format is in
``spool_format``, the records listings show in ``spool_records`` and ``delivery_status``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import ParamSpec, TypeVar

from gateway.errors import CorruptSpoolEntry, SpoolError
from gateway.logs import log_event
from gateway.state.delivery_status import (
    STATUS_VERSION,
    DeliveryStatus,
    RecipientState,
    RecipientStatus,
    decode_status,
    encode_status,
)
from gateway.state.files import acquire_lock, fsync_directory, make_private_directory
from gateway.state.spool_commit import (
    IO_THREADS,
    BatchResult,
    Change,
    FollowUp,
    GroupCommitter,
    io_executor,
    write_and_flush,
)
from gateway.state.spool_format import (
    FORMAT_MAGIC,
    decode_entry,
    encode_entry,
    envelope_from,
    parse_header_growing,
)
from gateway.state.spool_records import (
    CORRUPT_NAME,
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

__all__ = [
    "FORMAT_MAGIC",
    "FRESH_CACHE_BYTES",
    "IO_THREADS",
    "LARGE_MESSAGE",
    "PENDING_STATES",
    "STATUS_VERSION",
    "DeliveryStatus",
    "FollowUp",
    "QueueState",
    "RecipientState",
    "RecipientStatus",
    "RecoveryReport",
    "Spool",
    "SpoolEntry",
    "SpoolEnvelope",
    "SpoolMessage",
    "SpoolStatistics",
    "decode_entry",
    "decode_status",
    "encode_entry",
    "encode_status",
    "io_executor",
]

log = logging.getLogger("gateway.state.spool")
_P = ParamSpec("_P")
_T = TypeVar("_T")

LARGE_MESSAGE = 256 * 1024
"""Messages above this many bytes are flushed on a thread of their own before joining a batch."""
FRESH_CACHE_BYTES = 64 * 1024 * 1024
"""Memory for just-committed messages, handed to the delivery worker without reading them back."""


def _write_entry(path: str, envelope: SpoolEnvelope, content: bytes) -> None:
    write_and_flush(path, (encode_entry(envelope, content), content))


class Spool:
    """The durable queue. One instance per process, shared by intake and delivery.

    Async methods are for the running service; the plain methods (``entries``, ``find``, ``load``,
    ``retry``, ``delete``, ``statistics``) are for the CLI and tests and block briefly on the disk.
    Several processes may use one spool root (a running service and ``conduct-gateway queue``), but
    only one may deliver from it at a time (``delivery_lock()``).
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._token = secrets.token_hex(6)
        self._listeners: list[Callable[[str], None]] = []
        self._commits = 0
        self._commit_failures = 0
        self._directory_syncs = 0
        self._file_syncs = 0
        self._quarantined = 0
        try:
            make_private_directory(root)
            for folder in (self.tmp_dir, self.status_dir, *(self.folder(s) for s in QueueState)):
                make_private_directory(folder)
        except OSError as exc:
            raise SpoolError(f"cannot create the spool folders under {root}: {_reason(exc)}") from exc
        self._committer = GroupCommitter(self._count_batch)
        # Delivery's moves and status files batch on their own: a submission waiting for its 250
        # never waits behind the folder fsyncs of a message delivered a moment before (at one
        # client, about one commit in four did).
        self._mover = GroupCommitter(self._count_batch)
        self._folders = {state: str(self.folder(state)) for state in QueueState}
        self._tmp = str(self.tmp_dir)
        self._status = str(self.status_dir)
        # Messages just committed, kept so the worker in this process need not read them back.
        self._fresh: dict[str, SpoolMessage] = {}
        self._fresh_bytes = 0

    # -- paths

    shared = False
    """Only the gateway owning this folder delivers from it (``delivery_lock``)."""

    @property
    def disk_path(self) -> Path:
        """The folder whose free space the intake checks before taking a message."""
        return self.root

    def describe(self) -> str:
        return f"the spool at {self.root}"

    @property
    def tmp_dir(self) -> Path:
        return self.root / "tmp"

    @property
    def status_dir(self) -> Path:
        return self.root / "status"

    def folder(self, state: QueueState) -> Path:
        return self.root / state.value

    def path(self, queue_id: str, state: QueueState) -> Path:
        return self.folder(state) / checked_id(queue_id)

    def status_path(self, queue_id: str) -> Path:
        return self.status_dir / f"{checked_id(queue_id)}.json"

    # -- intake

    @staticmethod
    def new_queue_id() -> str:
        """Unique, sortable by arrival time, safe as a file name (``spool_records.new_queue_id``)."""
        return new_queue_id()

    async def commit(
        self, envelope: SpoolEnvelope, content: bytes, follow_up: FollowUp | None = None
    ) -> None:
        """Store a new message in incoming/; return only once message and envelope are on disk.

        Raises SpoolError when it cannot. Callers shield this from cancellation: a cancelled commit may
        still have stored the message, and the client must then not be told otherwise.
        ``follow_up`` runs on the I/O thread once the message is durable, in the same batch, before
        this returns (recording the decision without another thread hand-off); not if storing failed.
        """
        queue_id = checked_id(envelope.queue_id)
        if not envelope.rcpt_tos:
            raise SpoolError(f"message {queue_id} has no recipients; nothing to spool")
        tmp = f"{self._tmp}/{queue_id}.{self._token}.tmp"
        incoming = self._folders[QueueState.INCOMING]
        target = f"{incoming}/{queue_id}"
        try:
            if len(content) > LARGE_MESSAGE:
                # A large file is checksummed, written and flushed on a thread of its own, so it neither
                # blocks the event loop nor holds up the small messages of the batch it then joins.
                await self._in_thread(_write_entry, tmp, envelope, content)
                self._file_syncs += 1
                await self._committer.apply(Change(tmp, target, (incoming,), follow_up=follow_up))
            else:
                chunks = (encode_entry(envelope, content), content)
                await self._committer.apply(Change(tmp, target, (incoming,), chunks, follow_up))
        except OSError as exc:
            self._commit_failures += 1
            log_event(log, "spool_commit_failed", logging.ERROR, queue_id=queue_id, error=_reason(exc))
            with contextlib.suppress(OSError):
                os.unlink(tmp)  # noqa: PTH108
            raise SpoolError(f"cannot store message {queue_id} in the spool: {_reason(exc)}") from exc
        self._commits += 1
        if self._fresh_bytes + len(content) <= FRESH_CACHE_BYTES:
            self._fresh[queue_id] = SpoolMessage(envelope, content, QueueState.INCOMING, None)
            self._fresh_bytes += len(content)
        for listener in tuple(self._listeners):
            listener(queue_id)

    def on_commit(self, listener: Callable[[str], None]) -> Callable[[], None]:
        """Call ``listener(queue_id)`` after each durable commit in this process; returns an unsubscribe."""
        self._listeners.append(listener)

        def unsubscribe() -> None:
            with contextlib.suppress(ValueError):
                self._listeners.remove(listener)

        return unsubscribe

    # -- delivery (async: used by the delivery worker on the event loop)

    @contextlib.contextmanager
    def delivery_lock(self) -> Iterator[None]:
        """Held by the one process delivering from this spool; raises SpoolError if another holds it."""
        path = self.root / "delivery.lock"
        try:
            fd = acquire_lock(path, blocking=False)
        except BlockingIOError:
            raise SpoolError(
                f"another conduct-gateway process is delivering from {self.root}; stop it first"
            ) from None
        except OSError as exc:
            raise SpoolError(f"cannot open {path}: {_reason(exc)}") from exc
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def recover(self) -> RecoveryReport:
        """Clean up after an unclean stop; the delivering process calls this once, under the lock.

        Removes half-written files from tmp/ (never this instance's own, which may be in progress) and
        status files whose message is gone, and moves misnamed files out of the pending folders.
        """
        removed_tmp = removed_status = 0
        for path in _listdir(self.tmp_dir):
            if f".{self._token}." not in path.name:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                    removed_tmp += 1
        quarantined = []
        for state in PENDING_STATES:
            for path in _listdir(self.folder(state)):
                if not QUEUE_ID.match(path.name):
                    self.quarantine_file(path, "unexpected file name in the spool")
                    quarantined.append(path.name)
        present = {
            p.name for s in QueueState if s is not QueueState.CORRUPT for p in _listdir(self.folder(s))
        }
        for path in _listdir(self.status_dir):
            stale_tmp = path.name.endswith(".tmp") and f".{self._token}." not in path.name
            orphan = path.name.endswith(".json") and path.name.removesuffix(".json") not in present
            if stale_tmp or orphan:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                    removed_status += 1
        if removed_tmp or removed_status or quarantined:
            fsync_directory(self.tmp_dir)
            fsync_directory(self.status_dir)
        report = RecoveryReport(removed_tmp, removed_status, tuple(quarantined))
        if report != RecoveryReport():
            log_event(
                log,
                "spool_recovered",
                removed_tmp_files=removed_tmp,
                removed_status_files=removed_status,
                quarantined=len(quarantined),
            )
        return report

    def pending_ids(self, state: QueueState) -> list[str]:
        """Queue ids in a pending folder, oldest first (ids sort by arrival time)."""
        return sorted(p.name for p in _listdir(self.folder(state)) if QUEUE_ID.match(p.name))

    def locate(self, queue_id: str) -> QueueState | None:
        """The state a message is in, or None if no folder holds it."""
        for state in QueueState:
            if self.path(queue_id, state).exists():
                return state
        return None

    async def read(self, queue_id: str, state: QueueState) -> SpoolMessage:
        """Read a message and its status. Raises CorruptSpoolEntry, FileNotFoundError if it is gone."""
        fresh = self._fresh.pop(queue_id, None)
        if fresh is not None:
            self._fresh_bytes -= len(fresh.content)
            if state is QueueState.INCOMING:
                return fresh
        return await self._in_thread(self._load_from, queue_id, state)

    async def write_status(self, queue_id: str, status: DeliveryStatus) -> None:
        """Durably replace the per-recipient status of a message."""
        queue_id = checked_id(queue_id)
        tmp = f"{self._status}/{queue_id}.{self._token}.{secrets.token_hex(3)}.tmp"
        target = f"{self._status}/{queue_id}.json"
        await self._mover.apply(Change(tmp, target, (self._status,), (encode_status(status),)))

    async def move(self, queue_id: str, source: QueueState, target: QueueState) -> None:
        """Durably move a message to another state. Raises FileNotFoundError if it is not in ``source``."""
        queue_id = checked_id(queue_id)
        source_folder, target_folder = self._folders[source], self._folders[target]
        await self._mover.apply(
            Change(
                f"{source_folder}/{queue_id}",
                f"{target_folder}/{queue_id}",
                (source_folder, target_folder),
            )
        )

    async def quarantine(self, queue_id: str, state: QueueState, reason: str) -> None:
        """Move an unreadable entry (and its status) to corrupt/ with a log line."""
        await self._in_thread(self.quarantine_file, self.path(queue_id, state), reason)

    def quarantine_file(self, path: Path, reason: str) -> Path | None:
        """Move ``path`` (and a status file of the same id) to corrupt/; None if it had vanished."""
        target = _free_name(self.folder(QueueState.CORRUPT), path.name)
        try:
            path.rename(target)
        except FileNotFoundError:
            return None
        status = self.status_dir / f"{path.name}.json"
        with contextlib.suppress(FileNotFoundError):
            status.rename(_free_name(self.folder(QueueState.CORRUPT), f"{target.name}.status.json"))
        fsync_directory(self.folder(QueueState.CORRUPT))
        fsync_directory(path.parent)
        self._quarantined += 1
        log_event(
            log, "spool_corrupt", logging.ERROR, queue_id=path.name, state=path.parent.name, reason=reason
        )
        return target

    async def prune(self, *, now: float, done_retention: float, bounced_retention: float) -> int:
        """Delete finished messages older than their retention; returns how many went."""
        return await self._in_thread(self.prune_now, now, done_retention, bounced_retention)

    def prune_now(self, now: float, done_retention: float, bounced_retention: float) -> int:
        removed = 0
        for state, retention in ((QueueState.DONE, done_retention), (QueueState.BOUNCED, bounced_retention)):
            for path in _listdir(self.folder(state)):
                try:
                    # rename() sets the inode's change time: ctime is when the message was finished.
                    finished_at = path.stat().st_ctime
                except FileNotFoundError:
                    continue
                if now - finished_at >= retention:
                    self._remove(path.name, state)
                    removed += 1
        if removed:
            log_event(log, "spool_pruned", removed=removed)
        return removed

    def _remove(self, queue_id: str, state: QueueState) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.folder(state) / queue_id).unlink()
        with contextlib.suppress(FileNotFoundError):
            (self.status_dir / f"{queue_id}.json").unlink()

    async def run_with_next_batch(self, task: Callable[[], None]) -> None:
        """Run blocking ``task`` on the spool's I/O thread, with its next batch of changes (after them).

        For work that would otherwise take a thread hand-off of its own right after a commit (making
        the audit entries of the messages just stored durable): the two then share one. Raises what
        ``task`` raised.
        """
        await self._committer.apply(task)

    async def _in_thread(self, function: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
        call = functools.partial(function, *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(io_executor(), call)

    def _count_batch(self, result: BatchResult) -> None:
        self._file_syncs += result.file_syncs
        self._directory_syncs += result.directory_syncs

    # -- operators (plain methods: the CLI and tests)

    def entries(self, state: QueueState | None = None) -> list[SpoolEntry]:
        """Messages in one state (or all), oldest first; envelopes and status only, no content."""
        states = (state,) if state is not None else tuple(QueueState)
        found: list[SpoolEntry] = []
        for current in states:
            for path in sorted(_listdir(self.folder(current))):
                entry = self._entry_at(path, current)
                if entry is not None:
                    found.append(entry)
        return found

    def find(self, queue_id: str) -> SpoolEntry:
        """The entry with this queue id, in whatever state; SpoolError if there is none."""
        for state in QueueState:
            pattern = CORRUPT_NAME if state is QueueState.CORRUPT else QUEUE_ID
            if pattern.match(queue_id):
                entry = self._entry_at(self.folder(state) / queue_id, state)
                if entry is not None:
                    return entry
        raise SpoolError(f"no message {queue_id!r} in the spool (see: conduct-gateway queue list)")

    def load(self, queue_id: str) -> SpoolMessage:
        """The message with its content (``queue show``); CorruptSpoolEntry if it cannot be read."""
        entry = self.find(queue_id)
        if entry.state is QueueState.CORRUPT:
            raise CorruptSpoolEntry(f"message {queue_id} is in corrupt/: {entry.problem}")
        try:
            return self._load_from(queue_id, entry.state)
        except FileNotFoundError:
            raise SpoolError(f"message {queue_id} changed state while being read; try again") from None

    def retry(self, queue_id: str) -> None:
        """Send a deferred message back to incoming/ so it is tried at once."""
        entry = self.find(queue_id)
        if entry.state is QueueState.INCOMING:
            return
        if entry.state is not QueueState.DEFERRED:
            raise SpoolError(f"message {queue_id} is {entry.state.value}; only deferred mail can be retried")
        try:
            self.path(queue_id, QueueState.DEFERRED).rename(self.path(queue_id, QueueState.INCOMING))
        except FileNotFoundError:
            raise SpoolError(f"message {queue_id} changed state meanwhile; look again") from None
        fsync_directory(self.folder(QueueState.INCOMING))
        fsync_directory(self.folder(QueueState.DEFERRED))
        log_event(log, "spool_retry", queue_id=queue_id)

    def retry_all(self) -> int:
        """Send every deferred message back to incoming/; returns how many."""
        moved = 0
        for queue_id in self.pending_ids(QueueState.DEFERRED):
            with contextlib.suppress(SpoolError):
                self.retry(queue_id)
                moved += 1
        return moved

    def delete(self, queue_id: str) -> QueueState:
        """Remove a message (any state) and its status; returns the state it was in.

        A message being delivered at this moment may still reach its recipients.
        """
        entry = self.find(queue_id)
        path = self.folder(entry.state) / queue_id
        try:
            path.unlink()
        except FileNotFoundError:
            raise SpoolError(f"message {queue_id} changed state meanwhile; look again") from None
        for status in (
            self.status_path(queue_id),
            self.folder(QueueState.CORRUPT) / f"{queue_id}.status.json",
        ):
            with contextlib.suppress(FileNotFoundError):
                status.unlink()
        fsync_directory(self.folder(entry.state))
        log_event(log, "spool_deleted", queue_id=queue_id, state=entry.state.value)
        return entry.state

    def statistics(self) -> SpoolStatistics:
        return SpoolStatistics(
            messages={s.value: _count_messages(self.folder(s), s) for s in QueueState},
            commits_total=self._commits,
            commit_failures_total=self._commit_failures,
            directory_syncs_total=self._directory_syncs,
            file_syncs_total=self._file_syncs,
            quarantined_total=self._quarantined,
            oldest_age_seconds={s.value: _oldest_age(self.folder(s), time.time()) for s in PENDING_STATES},
        )

    def recent_statistics(self) -> SpoolStatistics:
        """``statistics``: counting the local folders is quick enough for every scrape."""
        return self.statistics()

    # -- reading

    def _load_from(self, queue_id: str, state: QueueState) -> SpoolMessage:
        envelope, content = decode_entry(self.path(queue_id, state).read_bytes(), queue_id)
        return SpoolMessage(envelope, content, state, self._read_status(queue_id))

    def _read_status(self, queue_id: str) -> DeliveryStatus | None:
        path = self.status_path(queue_id)
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            return decode_status(raw, queue_id)
        except CorruptSpoolEntry as exc:
            # The message itself is intact: deliver it again to everyone rather than lose it.
            self.quarantine_status(path, str(exc))
            return None

    def quarantine_status(self, path: Path, reason: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            path.rename(_free_name(self.folder(QueueState.CORRUPT), f"{path.stem}.status.json"))
            self._quarantined += 1
            log_event(log, "spool_status_corrupt", logging.ERROR, queue_id=path.stem, reason=reason)

    def _entry_at(self, path: Path, state: QueueState) -> SpoolEntry | None:
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            return None
        if state is QueueState.CORRUPT:
            return SpoolEntry(path.name, state, size, None, None, problem="moved aside as unreadable")
        try:
            with path.open("rb") as file:
                head = file.read(64 * 1024)
                header, _ = parse_header_growing(file, head, path.name)
            envelope, content_size, _ = envelope_from(header, path.name)
        except FileNotFoundError:
            return None
        except CorruptSpoolEntry as exc:
            return SpoolEntry(path.name, state, size, None, None, problem=str(exc))
        status = None
        with contextlib.suppress(FileNotFoundError, CorruptSpoolEntry):
            status = decode_status(self.status_path(path.name).read_bytes(), path.name)
        return SpoolEntry(path.name, state, content_size, envelope, status)


def _listdir(path: Path) -> list[Path]:
    try:
        with os.scandir(path) as entries:
            return [Path(entry.path) for entry in entries if entry.is_file(follow_symlinks=False)]
    except (FileNotFoundError, NotADirectoryError):
        return []


def _count_messages(path: Path, state: QueueState) -> int:
    if state is QueueState.CORRUPT:
        return sum(1 for p in _listdir(path) if not p.name.endswith(".status.json"))
    return sum(1 for p in _listdir(path) if QUEUE_ID.match(p.name))


def _oldest_age(path: Path, now: float) -> float:
    """Age of the oldest message file in ``path`` (its mtime is when it was committed; moves keep it)."""
    oldest = now
    with contextlib.suppress(FileNotFoundError, NotADirectoryError), os.scandir(path) as entries:
        for entry in entries:
            if QUEUE_ID.match(entry.name):
                with contextlib.suppress(FileNotFoundError):
                    oldest = min(oldest, entry.stat(follow_symlinks=False).st_mtime)
    return max(0.0, now - oldest)


def _free_name(folder: Path, name: str) -> Path:
    candidate = folder / name
    number = 1
    while candidate.exists():
        candidate = folder / f"{name}.{number}"
        number += 1
    return candidate


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)
