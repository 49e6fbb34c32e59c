"""The audit trail: an append-only, hash-chained JSON-lines record of every decision the gateway makes.

Layout, in ``<state_dir>/audit/`` (folder 0700, files 0600):

``audit.jsonl``
    One JSON object per line. Every entry has ``seq`` (1, 2, 3, ...), ``time`` (UTC), ``prev`` (the
    previous entry's hash; 64 zeros for the first) and ``hash``: the SHA-256 of the canonical JSON
    (sorted keys, no spaces, ASCII) of every other field. The line is that canonical JSON with
    ``hash`` added as its last key. Editing, deleting or reordering an entry breaks the chain at
    that entry, which ``verify`` names.
``salts.jsonl``
    One line per entry: ``{"seq", "hash", "salt"}``. Identifying values (Message-ID, recipients,
    message digests) are stored in the entry only as HMAC-SHA-256 digests keyed with that entry's
    own random salt, under ``digests``. The chain covers the digests, never the plain values, so
    deleting a salt (``forget_salts``: expunging) makes that entry's digests unlinkable while
    ``verify`` still passes. The ``seq``/``hash`` pairs double as a checkpoint: a log that ends
    before the last checkpointed entry was cut at the tail.

Never written here: bodies, subjects, matched identities, finding locations (an attachment name can
be an identity), or any plain recipient address. Appends are fsynced before ``append`` returns, so an
entry is on disk before the SMTP reply that it records goes out.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import json
import logging
import os
import secrets
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, TypeAlias

from gateway.errors import AuditError
from gateway.logs import log_event

log = logging.getLogger("gateway.state.audit")

AUDIT_DIRNAME = "audit"
LOG_NAME = "audit.jsonl"
SALTS_NAME = "salts.jsonl"
LOCK_NAME = ".lock"
GENESIS = "0" * 64
SALT_BYTES = 16
DIGEST_HEX_CHARS = 32  # 128 bits of HMAC-SHA-256: unforgeable and unguessable without the salt
EXPUNGED = "expunged"
_TAIL_CHUNK = 65536

JsonValue: TypeAlias = "str | int | bool | list[JsonValue] | dict[str, JsonValue] | None"
Digestible: TypeAlias = "str | bytes | Sequence[str]"


def _utc_now() -> datetime:
    return datetime.now(UTC)


def format_time(moment: datetime) -> str:
    """UTC, millisecond precision, ``Z`` suffix: sortable as text."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_time(text: str) -> datetime:
    """Inverse of ``format_time`` (also accepts any ISO 8601 time with an offset)."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


# Made once: json.dumps with any option builds a new encoder per call, a cost paid twice per entry.
_CANONICAL_ENCODER = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
)


def canonical_json(value: Mapping[str, Any]) -> bytes:
    """The bytes an entry's hash is computed over: sorted keys, no whitespace, ASCII only."""
    return _CANONICAL_ENCODER.encode(value).encode("ascii")


def entry_hash(entry: Mapping[str, Any]) -> str:
    """SHA-256 over the canonical JSON of every field except ``hash`` itself."""
    body = {key: value for key, value in entry.items() if key != "hash"}
    return hashlib.sha256(canonical_json(body)).hexdigest()


def salted_digest(salt: bytes, value: str | bytes) -> str:
    """HMAC-SHA-256 of ``value`` keyed with an entry's salt (text as UTF-8)."""
    data = value.encode("utf-8") if isinstance(value, str) else value
    return hmac.new(salt, data, hashlib.sha256).hexdigest()[:DIGEST_HEX_CHARS]


def normalise_address(address: str) -> str:
    """Recipients are digested lower-cased, so ``audit show --recipient`` ignores case."""
    return address.strip().strip("<>").lower()


def normalise_message_id(value: str) -> str:
    """Message-IDs are digested without angle brackets and folding whitespace."""
    return "".join(value.split()).strip("<>")


def audit_dir(state_dir: Path) -> Path:
    """Where the audit trail lives inside the state folder."""
    return state_dir / AUDIT_DIRNAME


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


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


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
        cls, directory: Path, *, clock: Callable[[], datetime] = _utc_now, deferred: bool = False
    ) -> AuditTrail:
        """Open (creating) the trail in ``directory`` for appending (``deferred``: see ``flush``)."""
        fds: list[int] = []
        try:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            lock_fd = os.open(directory / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
            fds.append(lock_fd)
            try:
                fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise AuditError(
                    f"{directory}: the audit trail is in use by another gateway process"
                ) from None
            created = not (directory / LOG_NAME).exists()
            log_fd = os.open(directory / LOG_NAME, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
            fds.append(log_fd)
            salts_fd = os.open(directory / SALTS_NAME, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
            fds.append(salts_fd)
            if created:
                _fsync_dir(directory)
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
        with self._mutex:
            if self._closed:
                raise AuditError(f"{self.directory}: the audit trail is closed")
            entry: dict[str, Any] = {
                "seq": self._last_seq + 1,
                "time": format_time(self._clock()),
                "prev": self._last_hash,
                "event": event,
                **fields,
                "digests": digests,
            }
            # The line is the canonical JSON the hash covers, with the hash added last: one encoding
            # instead of two (verify parses lines, so their key order is free).
            canonical = canonical_json(entry)
            entry["hash"] = hashlib.sha256(canonical).hexdigest()
            line = b'%s,"hash":"%s"}\n' % (canonical[:-1], entry["hash"].encode("ascii"))
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
            _write_all(fd, data)
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
        return self.append("decision", fields, secret_values)

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
            temporary = path.with_name(SALTS_NAME + ".new")
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                _write_all(fd, b"".join(lines))
                os.fsync(fd)
            finally:
                os.close(fd)
            temporary.replace(path)
            _fsync_dir(self.directory)
            os.close(self._salts_fd)
            self._salts_fd = os.open(path, os.O_RDWR | os.O_APPEND, 0o600)
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


# -- reading ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StoredEntry:
    """An entry read back from the log, with its line number."""

    line: int
    fields: Mapping[str, Any]

    @property
    def seq(self) -> int:
        value = self.fields.get("seq")
        return value if isinstance(value, int) else -1

    @property
    def time(self) -> datetime | None:
        value = self.fields.get("time")
        if not isinstance(value, str):
            return None
        try:
            return parse_time(value)
        except ValueError:
            return None


def read_entries(directory: Path) -> Iterator[StoredEntry]:
    """Every readable entry in file order (unreadable lines are skipped; ``verify`` reports them)."""
    path = directory / LOG_NAME
    if not path.exists():
        return
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                fields = json.loads(raw)
            except ValueError:
                continue
            if isinstance(fields, dict):
                yield StoredEntry(line=number, fields=fields)


def read_salts(directory: Path) -> dict[int, bytes | None]:
    """seq -> salt (None once forgotten). Unreadable lines are skipped; ``verify`` reports them."""
    salts: dict[int, bytes | None] = {}
    path = directory / SALTS_NAME
    if not path.exists():
        return salts
    with path.open("rb") as handle:
        for raw in handle:
            try:
                record = json.loads(raw)
                salt = record["salt"]
                salts[int(record["seq"])] = bytes.fromhex(salt) if salt is not None else None
            except (ValueError, KeyError, TypeError):
                continue
    return salts


def entries_about(directory: Path, case: str, queue_ids: Iterable[str] = ()) -> list[int]:
    """The seqs of every entry that refers to ``case`` (in ``cases`` or a finding) or to one of
    ``queue_ids`` (as ``queue_id`` or ``release_queue_id``): what expunging a case forgets."""
    wanted = set(queue_ids)
    found = []
    for entry in read_entries(directory):
        fields = entry.fields
        cases = fields.get("cases")
        findings = fields.get("findings")
        if (
            (isinstance(cases, list) and case in cases)
            or (
                isinstance(findings, list)
                and any(isinstance(f, dict) and f.get("case") == case for f in findings)
            )
            or fields.get("queue_id") in wanted
            or fields.get("release_queue_id") in wanted
        ):
            found.append(entry.seq)
    return found


def digest_matches(entry: StoredEntry, salt: bytes | None, name: str, value: str) -> bool:
    """Does the entry's digest ``name`` (or one of a list of them) correspond to ``value``?"""
    if salt is None:
        return False
    digests = entry.fields.get("digests")
    if not isinstance(digests, dict):
        return False
    stored = digests.get(name)
    wanted = salted_digest(salt, value)
    if isinstance(stored, list):
        return wanted in stored
    return stored == wanted


@dataclass(frozen=True)
class Verification:
    """What ``verify`` found: how many entries, and every problem (each names the entry)."""

    entries: int
    last_seq: int
    last_hash: str
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.problems


def _ranges(numbers: Iterable[int]) -> list[str]:
    out: list[str] = []
    ordered = sorted(numbers)
    start = previous = None
    for number in ordered:
        if start is None or previous is None:
            start = previous = number
        elif number == previous + 1:
            previous = number
        else:
            out.append(f"{start}" if start == previous else f"{start}-{previous}")
            start = previous = number
    if start is not None and previous is not None:
        out.append(f"{start}" if start == previous else f"{start}-{previous}")
    return out


def verify(directory: Path) -> Verification:
    """Check the chain and the checkpoint; name every edited, reordered, deleted or cut entry."""
    checkpoint = _read_checkpoint(directory)
    problems: list[str] = []
    log_path = directory / LOG_NAME
    stored_hash: dict[int, str] = {}
    prev_of: dict[int, str] = {}
    line_of: dict[int, int] = {}
    order: list[int] = []
    count = 0
    if log_path.exists():
        with log_path.open("rb") as handle:
            for number, raw in enumerate(handle, start=1):
                if not raw.endswith(b"\n"):
                    problems.append(f"line {number}: incomplete last line (the file was cut mid-entry)")
                    continue
                try:
                    fields = json.loads(raw)
                except ValueError:
                    problems.append(f"line {number}: not a readable entry (edited)")
                    continue
                seq = fields.get("seq") if isinstance(fields, dict) else None
                if not isinstance(seq, int) or not isinstance(fields.get("hash"), str):
                    problems.append(f"line {number}: entry without seq or hash (edited)")
                    continue
                count += 1
                if seq in line_of:
                    problems.append(
                        f"entry {seq} (line {number}): appears twice (also line {line_of[seq]}): duplicated"
                    )
                    continue
                if entry_hash(fields) != fields["hash"]:
                    problems.append(f"entry {seq} (line {number}): content does not match its hash (edited)")
                line_of[seq] = number
                stored_hash[seq] = fields["hash"]
                prev_of[seq] = str(fields.get("prev"))
                order.append(seq)
    highest = max(order, default=0)
    for position in range(1, len(order)):
        if order[position] < max(order[:position]):
            earlier = max(order[:position])
            problems.append(
                f"entry {order[position]} (line {line_of[order[position]]}): comes after entry {earlier}: "
                "entries were reordered"
            )
    missing = set(range(1, highest + 1)) - set(order)
    if missing:
        problems.append(f"entries {', '.join(_ranges(missing))}: missing (deleted)")
    for seq in sorted(order):
        expected_prev = GENESIS if seq == 1 else stored_hash.get(seq - 1)
        if expected_prev is not None and prev_of[seq] != expected_prev:
            problems.append(
                f"entry {seq} (line {line_of[seq]}): does not chain to entry {seq - 1} "
                f"(entry {seq - 1} was replaced or re-hashed)"
                if seq > 1
                else f"entry 1 (line {line_of[seq]}): does not start the chain (earlier entries were removed)"
            )
    problems.extend(_check_checkpoint(checkpoint, stored_hash, highest))
    last_hash = stored_hash.get(highest, GENESIS)
    return Verification(entries=count, last_seq=highest, last_hash=last_hash, problems=tuple(problems))


def _read_checkpoint(directory: Path) -> tuple[list[tuple[int, str]], list[str]] | None:
    """The (seq, hash) pairs of the salts file, and unreadable lines; None if there is no file.

    Read before the log: the gateway writes the log first, so a log read afterwards holds at least
    every checkpointed entry even while the gateway is appending.
    """
    path = directory / SALTS_NAME
    if not path.exists():
        return None
    pairs: list[tuple[int, str]] = []
    problems: list[str] = []
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                record = json.loads(raw)
                seq, digest = record["seq"], record["hash"]
            except (ValueError, KeyError, TypeError):
                seq, digest = None, None
            if not isinstance(seq, int) or not isinstance(digest, str):
                problems.append(f"{SALTS_NAME} line {number}: unreadable")
                continue
            pairs.append((seq, digest))
    return pairs, problems


def _check_checkpoint(
    checkpoint: tuple[list[tuple[int, str]], list[str]] | None, stored_hash: Mapping[int, str], highest: int
) -> list[str]:
    if checkpoint is None:
        return [f"{SALTS_NAME}: missing (the checkpoint and salts were deleted)"] if highest else []
    pairs, problems = checkpoint
    problems = list(problems)
    beyond: list[int] = []
    for seq, digest in pairs:
        if seq > highest:
            beyond.append(seq)
        elif seq in stored_hash and stored_hash[seq] != digest:
            problems.append(
                f"entry {seq}: differs from the hash checkpointed when it was written (edited and re-hashed)"
            )
    if beyond:
        problems.append(
            f"entries {', '.join(_ranges(beyond))}: missing at the end of the log, which stops at entry "
            f"{highest} (the log was truncated)"
        )
    return problems
