"""The audit trail in PostgreSQL: one hash chain that every gateway appends to, never forked.

Entries are the files backend's lines, byte for byte (``audit_format``), one row each; salts and
the checkpoint are rows of ``audit_salts``. An append locks the single ``audit_head`` row, builds
the next entry from it and moves it, all in one transaction: appends from every instance are
serialised by that lock, so two gateways can never chain two entries to the same predecessor.

"Append later" has no use here: no process holds the trail alone, so every gateway and every CLI
command appends directly, and ``append_later`` appends at once (the entry is in the shared trail
when it returns). ``waiting`` is always empty and ``drain_later`` does nothing. Each append is its
own committed transaction (``synchronous_commit`` on), so ``flush`` has nothing left to do.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import TracebackType

from gateway.errors import AuditError, StateError
from gateway.state.audit import AuditEntry, DecisionRecord, chain_entry, decision_fields, salt_and_digests
from gateway.state.audit_format import Digestible, JsonValue, utc_now
from gateway.state.audit_reading import StoredEntry, Verification, select_about, verify_lines
from gateway.state.ports import AuditWriterPort
from gateway.state.postgresql.database import Connection, Database

_BATCH = 1000  # rows fetched at a time when reading the whole trail


def append_in(
    connection: Connection,
    event: str,
    fields: Mapping[str, JsonValue],
    private: Mapping[str, Digestible] | None = None,
    clock: Callable[[], datetime] = utc_now,
) -> AuditEntry:
    """Append one entry inside the caller's transaction (committed, or rolled back, with it): so a
    store can make a row and its audit entry one change (the digest periods do)."""
    salt, digests = salt_and_digests(fields, private)
    row = connection.execute("SELECT seq, hash FROM audit_head FOR UPDATE").fetchone()
    if row is None:
        raise AuditError("the audit chain's head row is missing")
    entry, line = chain_entry(row[0] + 1, row[1], clock(), event, fields, digests)
    connection.execute(
        "INSERT INTO audit_entries (seq, line) VALUES (%s, %s)", (entry["seq"], line.decode("ascii"))
    )
    connection.execute(
        "INSERT INTO audit_salts (seq, hash, salt) VALUES (%s, %s, %s)", (entry["seq"], entry["hash"], salt)
    )
    connection.execute("UPDATE audit_head SET seq = %s, hash = %s", (entry["seq"], entry["hash"]))
    return AuditEntry(seq=entry["seq"], hash=entry["hash"], fields=entry)


class PostgresqlAuditWriter:
    """Appends to the shared chain. Any number may be open at once, in any number of processes."""

    deferred: bool

    def __init__(
        self, database: Database, *, deferred: bool = False, clock: Callable[[], datetime] = utc_now
    ) -> None:
        self._database = database
        self.deferred = deferred
        self._clock = clock
        self._last_seq = 0
        self._closed = False

    @property
    def last_seq(self) -> int:
        """The seq of the last entry this writer appended (0 before its first)."""
        return self._last_seq

    @property
    def unflushed(self) -> bool:
        return False  # every append is committed before it returns

    def append(
        self, event: str, fields: Mapping[str, JsonValue], private: Mapping[str, Digestible] | None = None
    ) -> AuditEntry:
        """Append one entry, committed before it returns; ``AuditError`` if it could not be."""
        if self._closed:
            raise AuditError(f"{self._database.where}: the audit trail is closed")
        try:
            with self._database.connection() as connection:
                entry = append_in(connection, event, fields, private, self._clock)
        except StateError as exc:
            raise AuditError(f"cannot append to the audit trail: {exc}") from exc
        self._last_seq = entry.seq
        return entry

    def record_decision(self, record: DecisionRecord) -> AuditEntry:
        return self.append("decision", *decision_fields(record))

    def forget_salts(self, seqs: Iterable[int]) -> int:
        """Forget these entries' salts (expunge); the chain and checkpoint stay, so verify passes."""
        wanted = sorted(set(seqs))
        if not wanted:
            return 0
        try:
            with self._database.connection() as connection:
                cursor = connection.execute(
                    "UPDATE audit_salts SET salt = NULL WHERE seq = ANY(%s) AND salt IS NOT NULL", (wanted,)
                )
                return cursor.rowcount
        except StateError as exc:
            raise AuditError(f"cannot forget audit salts: {exc}") from exc

    def flush(self) -> None:
        """Nothing to do: each append was committed (and flushed by PostgreSQL) before it returned."""

    def close(self) -> None:
        self._closed = True

    def __enter__(self) -> PostgresqlAuditWriter:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


@dataclass(frozen=True)
class PostgresqlAudit:
    """The ``AuditPort`` of the PostgreSQL backend (see the module docstring)."""

    database: Callable[[], Database]
    clock: Callable[[], datetime] = field(default=utc_now)

    def open(self, *, deferred: bool = False) -> AuditWriterPort:
        return PostgresqlAuditWriter(self.database(), deferred=deferred, clock=self.clock)

    def record(self, event: str, fields: Mapping[str, JsonValue]) -> None:
        with self.open() as writer:
            writer.append(event, fields)

    def append_later(self, event: str, fields: Mapping[str, JsonValue]) -> None:
        self.record(event, fields)  # nobody holds the shared trail alone: append now

    def forget(
        self, case: str, queue_ids: Iterable[str], writer: AuditWriterPort | None = None
    ) -> int | None:
        seqs = self.entries_about(case, queue_ids)
        if writer is not None:
            return writer.forget_salts(seqs)
        with self.open() as own:
            return own.forget_salts(seqs)

    def waiting(self) -> list[str]:
        return []

    def drain_later(self, writer: AuditWriterPort) -> int:
        return 0

    def _lines(self) -> Iterator[tuple[int, bytes]]:
        """(seq, line) in seq order, read in batches (a long trail never sits in memory whole)."""
        after = 0
        while True:
            try:
                with self.database().connection() as connection:
                    rows = connection.execute(
                        "SELECT seq, line FROM audit_entries WHERE seq > %s ORDER BY seq LIMIT %s",
                        (after, _BATCH),
                    ).fetchall()
            except StateError as exc:
                raise AuditError(f"cannot read the audit trail: {exc}") from exc
            for seq, line in rows:
                yield seq, line.encode("utf-8")
            if len(rows) < _BATCH:
                return
            after = rows[-1][0]

    def entries(self) -> Iterator[StoredEntry]:
        for number, raw in self._lines():
            try:
                fields = json.loads(raw)
            except ValueError:
                continue
            if isinstance(fields, dict):
                yield StoredEntry(line=number, fields=fields)

    def salts(self) -> dict[int, bytes | None]:
        with self.database().connection() as connection:
            rows = connection.execute("SELECT seq, salt FROM audit_salts").fetchall()
        return {seq: bytes(salt) if salt is not None else None for seq, salt in rows}

    def head(self) -> tuple[int, str]:
        """The chain's head (seq, hash): (0, 64 zeros) while the trail is empty."""
        with self.database().connection() as connection:
            row = connection.execute("SELECT seq, hash FROM audit_head").fetchone()
        if row is None:
            raise AuditError("the audit chain's head row is missing")
        return int(row[0]), str(row[1])

    def verify(self) -> Verification:
        """The files backend's checks, over the rows: edited, deleted, cut or re-hashed entries."""
        # The checkpoint is read before the entries, as the files backend does: an append between
        # the two reads adds an entry, never a checkpoint without its entry.
        with self.database().connection() as connection:
            pairs = [
                (int(seq), str(digest))
                for seq, digest in connection.execute("SELECT seq, hash FROM audit_salts ORDER BY seq")
            ]
        checkpoint: tuple[list[tuple[int, str]], list[str]] | None = (pairs, []) if pairs else None
        return verify_lines(self._lines(), checkpoint)

    def entries_about(self, case: str, queue_ids: Iterable[str] = ()) -> list[int]:
        return select_about(self.entries(), case, queue_ids)
