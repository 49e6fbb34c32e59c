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

Group commit: every file is written and fsynced on a thread of its own (so the kernel's journal can
merge concurrent flushes), and the fsync of a folder is shared by every rename made before it began.
Callers waiting for the same folder fsync are released together.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import functools
import hashlib
import json
import logging
import os
import random
import re
import secrets
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, ParamSpec, TypeVar

from gateway.errors import CorruptSpoolEntry, SpoolError
from gateway.logs import log_event
from gateway.state.files import (
    acquire_lock,
    create_and_write,
    fsync_directory,
    make_private_directory,
)

log = logging.getLogger("gateway.state.spool")
_P = ParamSpec("_P")
_T = TypeVar("_T")

FORMAT_MAGIC = b"CGSPOOL/1"
STATUS_VERSION = 1
IO_THREADS = 16
"""Threads for blocking spool and maildir I/O (batches, large messages, reads, listings)."""
LARGE_MESSAGE = 256 * 1024
"""Messages above this many bytes are flushed on a thread of their own before joining a batch."""
FRESH_CACHE_BYTES = 64 * 1024 * 1024
"""Memory for just-committed messages, handed to the delivery worker without reading them back."""

# Queue ids name files: letters, digits, '-' and '_' only, so no id can climb out of its folder.
_QUEUE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")
_CORRUPT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,200}$")
_MAX_HEADER = 16 * 1024 * 1024


class QueueState(enum.StrEnum):
    """The folder a message is in. The folder is the state."""

    INCOMING = "incoming"
    DEFERRED = "deferred"
    DONE = "done"
    BOUNCED = "bounced"
    CORRUPT = "corrupt"


PENDING_STATES = (QueueState.INCOMING, QueueState.DEFERRED)
"""States whose messages the delivery worker still has to deliver."""


@dataclass(frozen=True)
class SpoolEnvelope:
    """Who a spooled message is from and for, as the SMTP transaction said."""

    queue_id: str
    mail_from: str  # "" = null sender (DSNs)
    rcpt_tos: tuple[str, ...]
    authenticated_as: str  # "" for gateway-generated mail
    received_at: float  # unix time
    client_address: str = ""


RecipientState = Literal["pending", "delivered", "deferred", "failed"]


@dataclass(frozen=True)
class RecipientStatus:
    """What happened to one recipient so far."""

    address: str
    state: RecipientState = "pending"
    reply: str = ""  # the last reply about this recipient: "250 2.0.0 Ok", "550 5.1.1 ...", or our text
    updated_at: float = 0.0
    remote: str = ""  # the upstream host that gave the reply; "" for local delivery or no connection
    expired: bool = False  # failed because retry_lifetime ran out, not because of a 5xx
    reported: bool = False  # the sender has been sent a DSN about this failure


@dataclass(frozen=True)
class DeliveryStatus:
    """Per-recipient results of the attempts made on one message (``status/<queue id>.json``)."""

    recipients: tuple[RecipientStatus, ...]
    attempts: int = 0
    last_attempt_at: float = 0.0
    next_attempt_at: float = 0.0
    dsn_count: int = 0

    @classmethod
    def initial(cls, envelope: SpoolEnvelope) -> DeliveryStatus:
        """Every envelope recipient pending, duplicates folded (one RCPT TO per address)."""
        unique = dict.fromkeys(envelope.rcpt_tos)
        return cls(recipients=tuple(RecipientStatus(address) for address in unique))

    def pending(self) -> tuple[str, ...]:
        """Recipients still to be tried."""
        return tuple(r.address for r in self.recipients if r.state in ("pending", "deferred"))

    def unreported_failures(self) -> tuple[RecipientStatus, ...]:
        return tuple(r for r in self.recipients if r.state == "failed" and not r.reported)

    def count(self, state: RecipientState) -> int:
        return sum(1 for r in self.recipients if r.state == state)

    def updated(self, changes: Mapping[str, RecipientStatus]) -> DeliveryStatus:
        """A copy with the recipients named in ``changes`` replaced."""
        return replace(self, recipients=tuple(changes.get(r.address, r) for r in self.recipients))


@dataclass(frozen=True)
class SpoolEntry:
    """One message in the spool as listings show it: envelope and status, never the content."""

    queue_id: str
    state: QueueState
    size: int  # bytes of the message content (the file's size for an unreadable entry)
    envelope: SpoolEnvelope | None  # None when the entry cannot be read
    status: DeliveryStatus | None  # None until the first attempt that left something to remember
    problem: str = ""  # why the entry cannot be read, for corrupt ones


@dataclass(frozen=True)
class SpoolMessage:
    """A readable spooled message with its exact bytes."""

    envelope: SpoolEnvelope
    content: bytes
    state: QueueState
    status: DeliveryStatus | None


@dataclass(frozen=True)
class SpoolStatistics:
    """A snapshot for metrics and the CLI (``messages`` is counted on disk at call time)."""

    messages: Mapping[str, int]
    commits_total: int
    commit_failures_total: int
    directory_syncs_total: int
    file_syncs_total: int
    quarantined_total: int
    # Seconds since the oldest message waiting in incoming/ and deferred/ was accepted (0: none waits).
    oldest_age_seconds: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class RecoveryReport:
    """What ``recover()`` cleaned up after an unclean stop."""

    removed_tmp_files: int = 0
    removed_orphan_status_files: int = 0
    quarantined: tuple[str, ...] = field(default=())


# --- the on-disk format -----------------------------------------------------------------------------


def encode_entry(envelope: SpoolEnvelope, content: bytes) -> bytes:
    """The header of a spool file: ``CGSPOOL/1 <length>\\n<json>\\n``; the content follows as is."""
    header = {
        "queue_id": envelope.queue_id,
        "mail_from": envelope.mail_from,
        "rcpt_tos": list(envelope.rcpt_tos),
        "authenticated_as": envelope.authenticated_as,
        "received_at": envelope.received_at,
        "client_address": envelope.client_address,
        "size": len(content),
        "sha256": hashlib.sha256(content).hexdigest(),
    }
    body = json.dumps(header, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return b"%s %d\n%s\n" % (FORMAT_MAGIC, len(body), body)


def _parse_header(head: bytes, name: str) -> tuple[dict[str, Any], int]:
    """Parse the header at the start of ``head``; return it and the offset where content starts."""
    line_end = head.find(b"\n", 0, 64)
    if line_end < 0:
        raise CorruptSpoolEntry(f"{name}: not a spool file (no header line)")
    magic, _, length_text = head[:line_end].partition(b" ")
    if magic != FORMAT_MAGIC or not length_text.isdigit():
        raise CorruptSpoolEntry(f"{name}: not a spool file (bad header line)")
    length = int(length_text)
    start = line_end + 1
    end = start + length
    if length > _MAX_HEADER or len(head) < end + 1:
        raise CorruptSpoolEntry(f"{name}: truncated envelope")
    if head[end : end + 1] != b"\n":
        raise CorruptSpoolEntry(f"{name}: envelope not terminated")
    try:
        data = json.loads(head[start:end].decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise CorruptSpoolEntry(f"{name}: unreadable envelope ({exc})") from None
    if not isinstance(data, dict):
        raise CorruptSpoolEntry(f"{name}: envelope is not an object")
    return data, end + 1


def _envelope_from(data: Mapping[str, Any], name: str) -> tuple[SpoolEnvelope, int, str]:
    try:
        rcpt_tos = data["rcpt_tos"]
        envelope = SpoolEnvelope(
            queue_id=_text(data["queue_id"]),
            mail_from=_text(data["mail_from"]),
            rcpt_tos=tuple(_text(r) for r in rcpt_tos) if isinstance(rcpt_tos, list) else _bad(),
            authenticated_as=_text(data["authenticated_as"]),
            received_at=_number(data["received_at"]),
            client_address=_text(data.get("client_address", "")),
        )
        size = data["size"]
        digest = _text(data["sha256"])
        if not isinstance(size, int) or size < 0:
            _bad()
    except (KeyError, TypeError, ValueError):
        raise CorruptSpoolEntry(f"{name}: envelope misses or mistypes a field") from None
    if envelope.queue_id != name:
        raise CorruptSpoolEntry(f"{name}: envelope names another queue id ({envelope.queue_id})")
    if not envelope.rcpt_tos:
        raise CorruptSpoolEntry(f"{name}: envelope has no recipients")
    return envelope, size, digest


def decode_entry(data: bytes, name: str) -> tuple[SpoolEnvelope, bytes]:
    """Read a whole spool file back, checking its length and checksum."""
    header, offset = _parse_header(data, name)
    envelope, size, digest = _envelope_from(header, name)
    content = data[offset:]
    if len(content) != size:
        raise CorruptSpoolEntry(f"{name}: content is {len(content)} bytes, the envelope says {size}")
    if hashlib.sha256(content).hexdigest() != digest:
        raise CorruptSpoolEntry(f"{name}: content checksum mismatch")
    return envelope, content


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError("not a string")
    return value


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError("not a number")
    return float(value)


def _bad() -> Any:
    raise TypeError("bad value")


def encode_status(status: DeliveryStatus) -> bytes:
    data = {
        "version": STATUS_VERSION,
        "attempts": status.attempts,
        "last_attempt_at": status.last_attempt_at,
        "next_attempt_at": status.next_attempt_at,
        "dsn_count": status.dsn_count,
        "recipients": [
            {
                "address": r.address,
                "state": r.state,
                "reply": r.reply,
                "updated_at": r.updated_at,
                "remote": r.remote,
                "expired": r.expired,
                "reported": r.reported,
            }
            for r in status.recipients
        ],
    }
    return json.dumps(data, ensure_ascii=False, indent=1).encode("utf-8")


def decode_status(raw: bytes, name: str) -> DeliveryStatus:
    try:
        data = json.loads(raw.decode("utf-8"))
        if data["version"] != STATUS_VERSION:
            raise ValueError(f"unknown version {data['version']!r}")
        recipients = []
        for item in data["recipients"]:
            state = item["state"]
            if state not in ("pending", "delivered", "deferred", "failed"):
                raise ValueError(f"unknown recipient state {state!r}")
            recipients.append(
                RecipientStatus(
                    address=_text(item["address"]),
                    state=state,
                    reply=_text(item["reply"]),
                    updated_at=_number(item["updated_at"]),
                    remote=_text(item["remote"]),
                    expired=bool(item["expired"]),
                    reported=bool(item["reported"]),
                )
            )
        return DeliveryStatus(
            recipients=tuple(recipients),
            attempts=int(data["attempts"]),
            last_attempt_at=_number(data["last_attempt_at"]),
            next_attempt_at=_number(data["next_attempt_at"]),
            dsn_count=int(data["dsn_count"]),
        )
    except (UnicodeDecodeError, KeyError, TypeError, ValueError) as exc:
        raise CorruptSpoolEntry(f"status of {name} is unreadable ({exc})") from None


# --- blocking helpers, run on the I/O threads ---------------------------------------------------------


@functools.cache
def io_executor() -> ThreadPoolExecutor:
    """The shared pool for blocking file I/O (spool and maildir)."""
    return ThreadPoolExecutor(max_workers=IO_THREADS, thread_name_prefix="gateway-io")


def _write_and_flush(path: str | Path, chunks: Sequence[bytes]) -> None:
    """Create ``path`` (0600, must not exist), write ``chunks``, and flush them to disk."""
    fd = create_and_write(path, chunks)
    try:
        os.fdatasync(fd)
    finally:
        os.close(fd)


def _write_entry(path: str, envelope: SpoolEnvelope, content: bytes) -> None:
    _write_and_flush(path, (encode_entry(envelope, content), content))


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
class _Change:
    """One rename for the batch, optionally of a file the batch first creates from ``chunks``.

    Paths are plain strings: this is the per-message hot path, and pathlib costs more than the rest.
    """

    source: str
    target: str
    folders: tuple[str, ...]  # the folders whose entries change and must be fsynced
    chunks: Sequence[bytes] | None = None  # create ``source`` (0600) with these bytes first
    follow_up: FollowUp | None = None  # run once the change is durable, in the same batch


@dataclass(frozen=True)
class _BatchResult:
    errors: list[BaseException | None]  # one per item of the batch, in order
    file_syncs: int
    directory_syncs: int


# A blocking call that rides along with a batch: run on its thread once the batch's changes are durable.
_Task = Callable[[], None]


def _apply_batch(items: Sequence[_Change | _Task]) -> _BatchResult:
    """Apply the batch's changes and their follow-ups, then run its tasks (each one's exception is
    its result)."""
    changes = [item for item in items if isinstance(item, _Change)]
    result = _apply_changes(changes)
    _run_follow_ups(changes, result.errors)
    change_errors = iter(result.errors)
    errors: list[BaseException | None] = []
    for item in items:
        if isinstance(item, _Change):
            errors.append(next(change_errors))
            continue
        try:
            item()
        except Exception as exc:  # the task's caller gets it, as from a thread of its own
            errors.append(exc)
        else:
            errors.append(None)
    return _BatchResult(errors, result.file_syncs, result.directory_syncs)


def _run_follow_ups(changes: Sequence[_Change], errors: Sequence[BaseException | None]) -> None:
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


def _apply_changes(changes: Sequence[_Change]) -> _BatchResult:
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
    return _BatchResult(errors, len(descriptors), len(touched))


class _GroupCommitter:
    """Applies renames (and the small files behind them) in batches, one batch at a time.

    Changes submitted while a batch runs form the next one, which starts when it ends; a change is
    durable when its batch has fsynced its folders, so one folder fsync covers every rename in the
    batch and all their callers are released together. One thread call per batch, not per message.
    A task (``Spool.run_with_next_batch``) rides along and runs after the batch's changes; the
    batch's callers are released when it has run too (a fraction of a millisecond for an audit flush).
    """

    def __init__(self, on_batch: Callable[[_BatchResult], None]) -> None:
        self._on_batch = on_batch
        self._loop: asyncio.AbstractEventLoop | None = None
        self._running = False
        self._waiting: list[tuple[_Change | _Task, asyncio.Future[None]]] = []

    async def apply(self, change: _Change | _Task) -> None:
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
        self, loop: asyncio.AbstractEventLoop, batch: list[tuple[_Change | _Task, asyncio.Future[None]]]
    ) -> None:
        """On the I/O thread: apply the batch, then hand the outcome straight to the event loop.

        One ``call_soon_threadsafe`` instead of ``run_in_executor``'s future chain, which takes two
        turns of the loop to reach the callback: under load each turn costs every caller milliseconds.
        """
        outcome: _BatchResult | BaseException
        try:
            outcome = _apply_batch([change for change, _ in batch])
        except BaseException as exc:  # handed to the callers; the thread carries on
            outcome = exc
        with contextlib.suppress(RuntimeError):  # the loop has been closed meanwhile: nobody waits
            loop.call_soon_threadsafe(self._finished, loop, batch, outcome)

    def _finished(
        self,
        loop: asyncio.AbstractEventLoop,
        batch: list[tuple[_Change | _Task, asyncio.Future[None]]],
        outcome: _BatchResult | BaseException,
    ) -> None:
        if loop is not self._loop:
            return
        self._running = False
        if isinstance(outcome, _BatchResult):
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


# --- the spool --------------------------------------------------------------------------------------


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
        self._committer = _GroupCommitter(self._count_batch)
        self._folders = {state: str(self.folder(state)) for state in QueueState}
        self._tmp = str(self.tmp_dir)
        self._status = str(self.status_dir)
        # Messages just committed, kept so the worker in this process need not read them back.
        self._fresh: dict[str, SpoolMessage] = {}
        self._fresh_bytes = 0

    # -- paths

    @property
    def tmp_dir(self) -> Path:
        return self.root / "tmp"

    @property
    def status_dir(self) -> Path:
        return self.root / "status"

    def folder(self, state: QueueState) -> Path:
        return self.root / state.value

    def path(self, queue_id: str, state: QueueState) -> Path:
        return self.folder(state) / _checked_id(queue_id)

    def status_path(self, queue_id: str) -> Path:
        return self.status_dir / f"{_checked_id(queue_id)}.json"

    # -- intake

    @staticmethod
    def new_queue_id() -> str:
        """Unique, sortable by arrival time, safe as a file name: 14 hex digits of microseconds, 8 random."""
        # Not a secret, only unique: the random module is reseeded in forked children, and cheaper
        # than a getrandom() system call per message.
        return f"{time.time_ns() // 1000:014X}{random.getrandbits(32):08X}"

    async def commit(
        self, envelope: SpoolEnvelope, content: bytes, follow_up: FollowUp | None = None
    ) -> None:
        """Store a new message in incoming/; return only once message and envelope are on disk.

        Raises SpoolError when it cannot. Callers shield this from cancellation: a cancelled commit may
        still have stored the message, and the client must then not be told otherwise.
        ``follow_up`` runs on the I/O thread once the message is durable, in the same batch, before
        this returns (recording the decision without another thread hand-off); not if storing failed.
        """
        queue_id = _checked_id(envelope.queue_id)
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
                await self._committer.apply(_Change(tmp, target, (incoming,), follow_up=follow_up))
            else:
                chunks = (encode_entry(envelope, content), content)
                await self._committer.apply(_Change(tmp, target, (incoming,), chunks, follow_up))
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
                if not _QUEUE_ID.match(path.name):
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
        return sorted(p.name for p in _listdir(self.folder(state)) if _QUEUE_ID.match(p.name))

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
        queue_id = _checked_id(queue_id)
        tmp = f"{self._status}/{queue_id}.{self._token}.{secrets.token_hex(3)}.tmp"
        target = f"{self._status}/{queue_id}.json"
        await self._committer.apply(_Change(tmp, target, (self._status,), (encode_status(status),)))

    async def move(self, queue_id: str, source: QueueState, target: QueueState) -> None:
        """Durably move a message to another state. Raises FileNotFoundError if it is not in ``source``."""
        queue_id = _checked_id(queue_id)
        source_folder, target_folder = self._folders[source], self._folders[target]
        await self._committer.apply(
            _Change(
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

    def _count_batch(self, result: _BatchResult) -> None:
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
            pattern = _CORRUPT_NAME if state is QueueState.CORRUPT else _QUEUE_ID
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
                header, _ = _parse_header_growing(file, head, path.name)
            envelope, content_size, _ = _envelope_from(header, path.name)
        except FileNotFoundError:
            return None
        except CorruptSpoolEntry as exc:
            return SpoolEntry(path.name, state, size, None, None, problem=str(exc))
        status = None
        with contextlib.suppress(FileNotFoundError, CorruptSpoolEntry):
            status = decode_status(self.status_path(path.name).read_bytes(), path.name)
        return SpoolEntry(path.name, state, content_size, envelope, status)


def _parse_header_growing(file: Any, head: bytes, name: str) -> tuple[dict[str, Any], int]:
    # Most envelopes fit in the first read; a very long recipient list needs the rest of the header.
    line_end = head.find(b"\n", 0, 64)
    if line_end > 0:
        _, _, length_text = head[:line_end].partition(b" ")
        if length_text.isdigit():
            needed = line_end + 2 + int(length_text)
            if len(head) < needed <= _MAX_HEADER:
                head += file.read(needed - len(head))
    return _parse_header(head, name)


def _checked_id(queue_id: str) -> str:
    if not _QUEUE_ID.match(queue_id):
        raise SpoolError(f"{queue_id!r} is not a valid queue id")
    return queue_id


def _listdir(path: Path) -> list[Path]:
    try:
        with os.scandir(path) as entries:
            return [Path(entry.path) for entry in entries if entry.is_file(follow_symlinks=False)]
    except (FileNotFoundError, NotADirectoryError):
        return []


def _count_messages(path: Path, state: QueueState) -> int:
    if state is QueueState.CORRUPT:
        return sum(1 for p in _listdir(path) if not p.name.endswith(".status.json"))
    return sum(1 for p in _listdir(path) if _QUEUE_ID.match(p.name))


def _oldest_age(path: Path, now: float) -> float:
    """Age of the oldest message file in ``path`` (its mtime is when it was committed; moves keep it)."""
    oldest = now
    with contextlib.suppress(FileNotFoundError, NotADirectoryError), os.scandir(path) as entries:
        for entry in entries:
            if _QUEUE_ID.match(entry.name):
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
