"""Held messages in PostgreSQL: hold records, their bytes and the hashes of their reply tokens.

Tables ``holds`` (the record as JSON, the original and release bytes) and ``hold_tokens`` (token hash
→ reference, so a reply reaching any instance finds its hold at once), migration 0002. As in the
files store, only hashes of reply tokens are stored.

``locked()`` is the files store's folder lock across every instance: a transaction holding a
transaction-scoped advisory lock, in which the ``get``/``save``/``discard`` calls of the same thread
run (``get`` also locks the row). Deciding a hold is read, check, write inside it, so the first
decision wins on whichever instance it arrives and a second one finds the hold decided; if the
instance dies halfway, the transaction is rolled back and the lock is gone with its connection.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any, Literal

import psycopg
from psycopg.rows import tuple_row
from pydantic import ValidationError

from gateway.errors import StateError
from gateway.logs import log_event
from gateway.state.holds import REFERENCE, Grant, HoldRecord, ReviewError, token_hash

log = logging.getLogger("gateway.state.postgresql.holds")

Connect = Callable[[], contextlib.AbstractContextManager[psycopg.Connection[Any]]]
Cursor = psycopg.Cursor[Any]

_GET = "SELECT record::text FROM holds WHERE reference = %s"
_GET_FOR_UPDATE = "SELECT record::text FROM holds WHERE reference = %s FOR UPDATE"
_BYTES = {
    "original": "SELECT original FROM holds WHERE reference = %s",
    "release": "SELECT release FROM holds WHERE reference = %s",
}

# pg_advisory_xact_lock's key for "the holds" (any fixed number; this one spells "holds").
_HOLDS_LOCK = 0x686F6C6473


class PostgresHolds:
    """The holds in PostgreSQL (implements ``HoldsPort``); safe from several instances at once."""

    def __init__(self, connect: Connect) -> None:
        self._connect = connect
        self._local = threading.local()

    # -- the lock and the transaction it holds

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Exclusive across instances, processes and threads: the first decision wins.

        What this thread reads and writes through the store inside the block is one transaction,
        committed when the block ends (rolled back if it raises).
        """
        if getattr(self._local, "cursor", None) is not None:
            yield  # already inside this thread's locked block
            return
        try:
            with self._connect() as connection:
                cursor = connection.cursor(row_factory=tuple_row)
                cursor.execute("SELECT pg_advisory_xact_lock(%s)", (_HOLDS_LOCK,))
                self._local.cursor = cursor
                try:
                    yield
                finally:
                    self._local.cursor = None
        except (StateError, psycopg.Error) as exc:
            raise ReviewError(f"the held messages cannot be read or written: {_reason(exc)}") from None

    @contextlib.contextmanager
    def _cursor(self) -> Iterator[Cursor]:
        current: Cursor | None = getattr(self._local, "cursor", None)
        if current is not None:
            yield current
            return
        try:
            with self._connect() as connection:
                cursor = connection.cursor(row_factory=tuple_row)
                yield cursor
        except (StateError, psycopg.Error) as exc:
            raise ReviewError(f"the held messages cannot be read or written: {_reason(exc)}") from None

    def _in_lock(self) -> bool:
        return getattr(self._local, "cursor", None) is not None

    # -- the records

    def create(self, record: HoldRecord, original: bytes, release: bytes) -> None:
        """Store a new hold durably, with its bytes and token hashes, in one transaction."""
        reference = _checked(record.reference)
        with self._cursor() as cursor:
            cursor.execute(
                "INSERT INTO holds (reference, status, record, original, release) "
                "VALUES (%s, %s, %s::jsonb, %s, %s) ON CONFLICT (reference) DO NOTHING",
                (reference, record.status, record.model_dump_json(), original, release),
            )
            if cursor.rowcount != 1:
                raise ReviewError(f"cannot store held message {reference}: it exists already")
            _write_tokens(cursor, reference, record.grants)

    def save(self, record: HoldRecord) -> None:
        reference = _checked(record.reference)
        with self._cursor() as cursor:
            cursor.execute(
                "UPDATE holds SET status = %s, record = %s::jsonb, updated_at = clock_timestamp() "
                "WHERE reference = %s",
                (record.status, record.model_dump_json(), reference),
            )
            if cursor.rowcount != 1:
                raise ReviewError(f"cannot update held message {reference}: it is gone")
            _write_tokens(cursor, reference, record.grants)

    def discard(self, reference: str) -> None:
        with self._cursor() as cursor:
            cursor.execute("DELETE FROM holds WHERE reference = %s", (_checked(reference),))

    def get(self, reference: str) -> HoldRecord:
        with self._cursor() as cursor:
            # Inside ``locked`` the row is locked too, until the decision is committed.
            statement = _GET_FOR_UPDATE if self._in_lock() else _GET
            cursor.execute(statement, (_checked(reference),))
            row = cursor.fetchone()
        if row is None:
            raise ReviewError(f"no held message {reference!r} (see: conduct-gateway review list)")
        return _decode(row[0], reference)

    def original(self, reference: str) -> bytes:
        return self._bytes(reference, "original")

    def release_content(self, reference: str) -> bytes:
        return self._bytes(reference, "release")

    def _bytes(self, reference: str, column: Literal["original", "release"]) -> bytes:
        with self._cursor() as cursor:
            cursor.execute(_BYTES[column], (_checked(reference),))
            row = cursor.fetchone()
        if row is None:
            raise FileNotFoundError(f"no held message {reference!r}")
        return bytes(row[0])

    def records(self) -> list[HoldRecord]:
        """Every readable hold, oldest first (references sort by arrival time)."""
        with self._cursor() as cursor:
            cursor.execute("SELECT reference, record::text FROM holds ORDER BY reference")
            rows = cursor.fetchall()
        found = []
        for reference, text in rows:
            try:
                found.append(_decode(text, reference))
            except ReviewError as exc:
                log_event(log, "hold-unreadable", logging.ERROR, file=reference, error=str(exc))
        return found

    def find_token(self, token: str) -> tuple[HoldRecord, Grant] | None:
        digest = token_hash(token)
        with self._cursor() as cursor:
            cursor.execute(
                "SELECT h.reference, h.record::text FROM hold_tokens t JOIN holds h USING (reference) "
                "WHERE t.token_hash = %s",
                (digest,),
            )
            row = cursor.fetchone()
        if row is None:
            return None
        try:
            record = _decode(row[1], row[0])
        except ReviewError as exc:
            log_event(log, "hold-unreadable", logging.ERROR, file=row[0], error=str(exc))
            return None
        grant = record.grants.get(digest)
        return None if grant is None else (record, grant)


def _write_tokens(cursor: Cursor, reference: str, grants: dict[str, Grant]) -> None:
    # Grants only ever grow (reassignment adds reviewers), but the record is the truth: mirror it.
    cursor.execute("DELETE FROM hold_tokens WHERE reference = %s", (reference,))
    if grants:
        cursor.executemany(
            "INSERT INTO hold_tokens (token_hash, reference) VALUES (%s, %s)",
            [(digest, reference) for digest in grants],
        )


def _checked(reference: str) -> str:
    if not REFERENCE.match(reference):
        raise ReviewError(f"{reference!r} is not a hold reference (see: conduct-gateway review list)")
    return reference


def _decode(text: str, reference: str) -> HoldRecord:
    try:
        return HoldRecord.model_validate_json(text)
    except ValidationError as exc:
        raise ReviewError(
            f"hold {reference}: not a readable hold record ({exc.error_count()} problems)"
        ) from None


def _reason(exc: BaseException) -> str:
    """Ours as it is; the driver's by class and SQLSTATE only (its detail may quote a row)."""
    if isinstance(exc, psycopg.Error):
        state = exc.sqlstate
        return f"{type(exc).__name__}, SQLSTATE {state}" if state else type(exc).__name__
    return str(exc)
