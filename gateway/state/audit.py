"""The audit trail's writer: appends entries (see ``audit_format`` for the layout), fsynced before
``append`` returns, so an entry is on disk before the SMTP reply that it records goes out.

One writer per trail: an exclusive lock keeps a second gateway out. Reading and ``verify`` are in
``audit_reading``; entries recorded while another process holds the trail, in ``audit_later``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import secrets
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from gateway.errors import AuditError
from gateway.logs import log_event
from gateway.state.audit_format import (
    GENESIS,
    LOCK_NAME,
    LOG_NAME,
    SALT_BYTES,
    SALTS_NAME,
    Digestible,
    JsonValue,
    canonical_json,
    format_time,
    normalise_address,
    normalise_message_id,
    salted_digest,
    utc_now,
)
from gateway.state.files import (
    acquire_lock,
    atomic_write,
    fsync_directory,
    open_private,
    private_directory,
    write_all,
)
from gateway.state.layout import StateLayout

log = logging.getLogger("gateway.state.audit")

_TAIL_CHUNK = 65536


def audit_dir(state_dir: Path) -> Path:
    """Where the audit trail lives inside the state folder."""
    return StateLayout(state_dir).audit


@dataclass(frozen=True)
class FindingRecord:
    """What the audit keeps of a finding: which rule, what code and kind, the action, the case."""

    rule: str
    code: str
    kind: str
    action: str
    case: str | None = None
    # For the engine's CONSENT_* findings: the consent's key and the date it was given (never its
    # reference, which may name the person).
    consent: str | None = None
    consent_date: str | None = None


def _finding_fields(finding: FindingRecord) -> dict[str, JsonValue]:
    fields: dict[str, JsonValue] = {
        "rule": finding.rule,
        "code": finding.code,
        "kind": finding.kind,
        "action": finding.action,
        "case": finding.case,
    }
    if finding.consent is not None:
        fields["consent"] = finding.consent
        fields["consent_date"] = finding.consent_date
    return fields


@dataclass(frozen=True)
class DecisionRecord:
    """One decision about one submission, as handed to ``AuditTrail.record_decision``.

    ``message_id``, ``recipients``, ``message`` and ``relayed`` are stored only as salted digests.
    """

    queue_id: str
    member: str
    verdict: str  # deliver | rewrite | reject | hold | tempfail
    reply: str  # "250", "550 5.7.1", "451 4.3.0"
    policy_version: str
    findings: tuple[FindingRecord, ...] = ()
    changes: tuple[str, ...] = ()  # relay-header labels such as "cc-added"
    error: str | None = None  # exception type name, for internal errors only
    message_id: str | None = None
    recipients: tuple[str, ...] = ()
    message: bytes = b""
    relayed: bytes | None = None  # the relayed bytes, when they differ from ``message``


@dataclass(frozen=True)
class AuditEntry:
    """An entry as written: its fields (including seq, time, prev, hash)."""

    seq: int
    hash: str
    fields: Mapping[str, Any]


def _last_line(fd: int) -> tuple[bytes | None, int]:
    """The last complete line of a file, and the offset just past it (where a torn tail starts)."""
    size = os.fstat(fd).st_size
    window_start, window = size, b""  # window holds the bytes [window_start, size)

    def widen() -> bool:
        nonlocal window_start, window
        if window_start == 0:
            return False
        start = max(0, window_start - _TAIL_CHUNK)
        window = os.pread(fd, window_start - start, start) + window
        window_start = start
        return True

    while (last_newline := window.rfind(b"\n")) < 0:
        if not widen():
            return None, 0
    end = window_start + last_newline  # absolute offset of the newline ending the last line
    while (before := window.rfind(b"\n", 0, end - window_start)) < 0:
        if not widen():
            return window[: end - window_start], end + 1
    return window[before + 1 : end - window_start], end + 1


def salt_and_digests(
    fields: Mapping[str, JsonValue], private: Mapping[str, Digestible] | None
) -> tuple[bytes, dict[str, JsonValue]]:
    """A fresh salt and ``private``'s values as digests keyed with it (``ValueError`` on a field
    name the format reserves)."""
    reserved = {"seq", "time", "prev", "hash", "event", "digests"} & fields.keys()
    if reserved:
        raise ValueError(f"reserved audit field names: {sorted(reserved)}")
    salt = secrets.token_bytes(SALT_BYTES)
    digests: dict[str, JsonValue] = {}
    for name, value in (private or {}).items():
        if isinstance(value, str | bytes):
            digests[name] = salted_digest(salt, value)
        else:
            digests[name] = [salted_digest(salt, item) for item in value]
    return salt, digests


def chain_entry(
    seq: int,
    prev: str,
    moment: datetime,
    event: str,
    fields: Mapping[str, JsonValue],
    digests: Mapping[str, JsonValue],
) -> tuple[dict[str, Any], bytes]:
    """The entry that follows ``prev`` as ``seq`` (with its hash), and its line (newline included)."""
    entry: dict[str, Any] = {
        "seq": seq,
        "time": format_time(moment),
        "prev": prev,
        "event": event,
        **fields,
        "digests": dict(digests),
    }
    # The line is the canonical JSON the hash covers, with the hash added last: one encoding
    # instead of two (verify parses lines, so their key order is free).
    canonical = canonical_json(entry)
    entry["hash"] = hashlib.sha256(canonical).hexdigest()
    line = b'%s,"hash":"%s"}\n' % (canonical[:-1], entry["hash"].encode("ascii"))
    return entry, line


def decision_fields(record: DecisionRecord) -> tuple[dict[str, JsonValue], dict[str, Digestible]]:
    """The plain fields and the values kept only as digests of one decision's entry."""
    findings: list[JsonValue] = [_finding_fields(f) for f in record.findings]
    rules: list[JsonValue] = [*sorted({f.rule for f in record.findings})]
    cases: list[JsonValue] = [*sorted({f.case for f in record.findings if f.case})]
    fields: dict[str, JsonValue] = {
        "queue_id": record.queue_id,
        "member": record.member,
        "verdict": record.verdict,
        "reply": record.reply,
        "policy": record.policy_version,
        "rules": rules,
        "cases": cases,
        "findings": findings,
        "changes": list(record.changes),
        "recipient_count": len(record.recipients),
    }
    if record.error is not None:
        fields["error"] = record.error
    secret_values: dict[str, Digestible] = {
        "recipients": [normalise_address(address) for address in record.recipients],
        "message": hashlib.sha256(record.message).hexdigest(),
    }
    if record.message_id:
        secret_values["message_id"] = normalise_message_id(record.message_id)
    if record.relayed is not None:
        secret_values["relayed"] = hashlib.sha256(record.relayed).hexdigest()
    return fields, secret_values


class AuditTrail:
    """The writer. One per state folder (an exclusive lock keeps a second gateway out)."""

    def __init__(
        self,
        directory: Path,
        *,
        lock_fd: int,
        log_fd: int,
        salts_fd: int,
        last_seq: int,
        last_hash: str,
        clock: Callable[[], datetime],
        deferred: bool = False,
    ) -> None:
        self.directory = directory
        self._lock_fd = lock_fd
        self._log_fd = log_fd
        self._salts_fd = salts_fd
        self._last_seq = last_seq
        self._last_hash = last_hash
        self._clock = clock
        self._mutex = threading.Lock()
        self._closed = False
        # Deferred mode (the running gateway): appends are written at once but flushed to disk by
        # ``flush()``, which the SMTP layer awaits before it answers, so many decisions share one
        # fdatasync and none blocks the event loop. Default: every append is flushed before it returns.
        self.deferred = deferred
        self._unflushed = False
        self._flushing = threading.Lock()

    @classmethod
    def open(
        cls, directory: Path, *, clock: Callable[[], datetime] = utc_now, deferred: bool = False
    ) -> AuditTrail:
        """Open (creating) the trail in ``directory`` for appending (``deferred``: see ``flush``)."""
        fds: list[int] = []
        try:
            private_directory(directory)
            try:
                lock_fd = acquire_lock(directory / LOCK_NAME, blocking=False)
            except BlockingIOError:
                raise AuditError(
                    f"{directory}: the audit trail is in use by another gateway process"
                ) from None
            fds.append(lock_fd)
            created = not (directory / LOG_NAME).exists()
            log_fd = open_private(directory / LOG_NAME, os.O_RDWR | os.O_CREAT | os.O_APPEND)
            fds.append(log_fd)
            salts_fd = open_private(directory / SALTS_NAME, os.O_RDWR | os.O_CREAT | os.O_APPEND)
            fds.append(salts_fd)
            if created:
                fsync_directory(directory)
            last_line = _repair_tail(log_fd, directory / LOG_NAME)
            last_seq, last_hash = 0, GENESIS
            if last_line is not None:
                last_seq, last_hash = _read_head(last_line, directory / LOG_NAME)
            salts_line = _repair_tail(salts_fd, directory / SALTS_NAME)
            if salts_line is not None:
                checkpoint_seq, _ = _read_head(salts_line, directory / SALTS_NAME)
                if checkpoint_seq > last_seq:
                    log_event(
                        log,
                        "audit-tail-missing",
                        logging.ERROR,
                        log_last_seq=last_seq,
                        checkpoint_seq=checkpoint_seq,
                        hint="run: conduct-gateway audit verify",
                    )
        except OSError as exc:
            for fd in fds:
                os.close(fd)
            raise AuditError(f"{directory}: cannot open the audit trail: {exc.strerror}") from None
        except AuditError:
            for fd in fds:
                os.close(fd)
            raise
        return cls(
            directory,
            lock_fd=lock_fd,
            log_fd=log_fd,
            salts_fd=salts_fd,
            last_seq=last_seq,
            last_hash=last_hash,
            clock=clock,
            deferred=deferred,
        )

    @property
    def last_seq(self) -> int:
        return self._last_seq

    def append(
        self, event: str, fields: Mapping[str, JsonValue], private: Mapping[str, Digestible] | None = None
    ) -> AuditEntry:
        """Append one entry and fsync it. ``private`` values are stored only as salted digests.

        Raises ``AuditError`` if the entry could not be made durable; nothing partial is left.
        """
        salt, digests = salt_and_digests(fields, private)
        with self._mutex:
            if self._closed:
                raise AuditError(f"{self.directory}: the audit trail is closed")
            entry, line = chain_entry(
                self._last_seq + 1, self._last_hash, self._clock(), event, fields, digests
            )
            self._append_line(self._log_fd, line, LOG_NAME)
            self._last_seq = entry["seq"]
            self._last_hash = entry["hash"]
            checkpoint = {"seq": entry["seq"], "hash": entry["hash"], "salt": salt.hex()}
            try:
                self._append_line(self._salts_fd, canonical_json(checkpoint) + b"\n", SALTS_NAME)
            except AuditError:
                # The entry itself is durable; without its salt its digests are simply unlinkable.
                log_event(log, "audit-salt-lost", logging.ERROR, seq=entry["seq"])
            return AuditEntry(seq=entry["seq"], hash=entry["hash"], fields=entry)

    def _append_line(self, fd: int, data: bytes, name: str) -> None:
        size = os.fstat(fd).st_size
        try:
            write_all(fd, data)
            if self.deferred:
                self._unflushed = True
            else:
                os.fdatasync(fd)
        except OSError as exc:
            # Never leave a torn line behind: the next append would be glued onto it.
            with contextlib.suppress(OSError):
                os.ftruncate(fd, size)
            raise AuditError(f"{self.directory / name}: cannot append: {exc.strerror}") from None

    def record_decision(self, record: DecisionRecord) -> AuditEntry:
        """Append one decision (see ``DecisionRecord``)."""
        return self.append("decision", *decision_fields(record))

    def forget_salts(self, seqs: Iterable[int]) -> int:
        """Delete the salts of these entries (expunge): their digests can no longer be linked to
        anything. The chain and the checkpoint are untouched, so ``verify`` still passes."""
        wanted = set(seqs)
        path = self.directory / SALTS_NAME
        with self._mutex:
            forgotten = 0
            lines = []
            for raw in path.read_bytes().splitlines():
                record = json.loads(raw)
                if record.get("seq") in wanted and record.get("salt") is not None:
                    record["salt"] = None
                    forgotten += 1
                lines.append(canonical_json(record) + b"\n")
            atomic_write(path, b"".join(lines))
            os.close(self._salts_fd)
            self._salts_fd = open_private(path, os.O_RDWR | os.O_APPEND)
            return forgotten

    @property
    def unflushed(self) -> bool:
        """Whether entries were appended (deferred mode) that ``flush()`` has not made durable yet."""
        return self._unflushed

    def flush(self) -> None:
        """Make every entry appended so far durable (deferred mode); blocking: run it off the loop.

        Concurrent callers share the work: whoever flushes covers every entry written before it began.
        Raises ``AuditError`` if the disk refuses.
        """
        with self._flushing:
            with self._mutex:
                if self._closed or not self._unflushed:
                    return
                self._unflushed = False
                fds = (self._log_fd, self._salts_fd)
            try:
                for fd in fds:
                    os.fdatasync(fd)
            except OSError as exc:
                with self._mutex:
                    self._unflushed = True
                raise AuditError(f"{self.directory}: cannot flush the audit trail: {exc.strerror}") from None

    def close(self) -> None:
        with self._flushing, self._mutex:  # never close the files under a flush in another thread
            if self._closed:
                return
            if self._unflushed:
                with contextlib.suppress(OSError):
                    os.fdatasync(self._log_fd)
                    os.fdatasync(self._salts_fd)
            self._closed = True
            os.close(self._log_fd)
            os.close(self._salts_fd)
            os.close(self._lock_fd)  # closing releases the flock

    def __enter__(self) -> AuditTrail:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _repair_tail(fd: int, path: Path) -> bytes | None:
    """Cut an incomplete last line (a crash during a write: never acknowledged); return the last line."""
    line, complete_end = _last_line(fd)
    size = os.fstat(fd).st_size
    if complete_end < size:
        log_event(log, "audit-torn-tail-removed", logging.ERROR, file=path, bytes=size - complete_end)
        os.ftruncate(fd, complete_end)
        os.fsync(fd)
    return line


def _read_head(line: bytes, path: Path) -> tuple[int, str]:
    try:
        record = json.loads(line)
        seq, digest = record["seq"], record["hash"]
        if not isinstance(seq, int) or not isinstance(digest, str):
            raise TypeError
    except (ValueError, KeyError, TypeError):
        raise AuditError(
            f"{path}: the last entry cannot be read, so the chain cannot be continued; "
            "run 'conduct-gateway audit verify' and restore the file from a backup"
        ) from None
    return seq, digest
