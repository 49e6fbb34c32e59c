"""The thread ledger in PostgreSQL: the same rows as the SQLite ledger, shared by every gateway.

A thread started through one gateway and answered through another is found by both. What a row
holds and how a parent is found is ``ThreadLedger``'s, as for the SQLite ledger. ``batch``
makes several ``record`` calls one transaction (on the calling thread); every other call is one
short transaction of its own.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from types import TracebackType

from psycopg.types.json import Jsonb

from gateway.errors import LedgerError, StateError
from gateway.state.postgresql.database import Connection, Database
from gateway.state.thread_ledger import Participants, ThreadLedger

_UPSERT = """
INSERT INTO ledger_messages (message_id, in_reply_to, refs, participants, case_name, recorded_at)
VALUES (%s, %s, %s, %s, %s, %s)
ON CONFLICT (message_id) DO UPDATE SET
    in_reply_to = excluded.in_reply_to, refs = excluded.refs, participants = excluded.participants,
    case_name = COALESCE(excluded.case_name, ledger_messages.case_name),
    recorded_at = excluded.recorded_at
"""


class PostgresqlLedger(ThreadLedger):
    """The ``LedgerPort`` of the PostgreSQL backend."""

    def __init__(self, database: Database, *, clock: Callable[[], datetime] | None = None) -> None:
        self._database = database
        self._clock = clock or (lambda: datetime.now(UTC))
        self._batch = threading.local()  # the connection of a batch open on this thread

    @contextlib.contextmanager
    def _connection(self) -> Iterator[Connection]:
        current: Connection | None = getattr(self._batch, "connection", None)
        if current is not None:
            yield current
            return
        try:
            with self._database.connection() as connection:
                yield connection
        except StateError as exc:
            raise LedgerError(f"the thread ledger cannot be used: {exc}") from exc

    def _store(
        self,
        key: str,
        in_reply_to: list[str],
        references: list[str],
        participants: Participants,
        case: str | None,
        when: datetime | None,
    ) -> None:
        row = (
            key,
            Jsonb(in_reply_to),
            Jsonb(references),
            Jsonb(participants),
            case,
            (when or self._clock()).astimezone(UTC),
        )
        with self._connection() as connection:
            connection.execute(_UPSERT, row)

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Several ``record`` calls in one transaction; an exception leaving the block rolls it back."""
        if getattr(self._batch, "connection", None) is not None:
            yield  # already in a batch on this thread: part of it
            return
        try:
            with self._database.connection() as connection:
                self._batch.connection = connection
                try:
                    yield
                finally:
                    self._batch.connection = None
        except StateError as exc:
            raise LedgerError(f"the thread ledger cannot be used: {exc}") from exc

    def _fetch(self, candidates: list[str]) -> dict[str, tuple[Participants, str | None]]:
        with self._connection() as connection:
            rows = connection.execute(
                "SELECT message_id, participants, case_name FROM ledger_messages WHERE message_id = ANY(%s)",
                (candidates,),
            ).fetchall()
        return {key: (participants, case) for key, participants, case in rows}

    def record_lists(self, addresses: Iterable[str]) -> int:
        """Remember ``addresses`` as mailing lists (seen in journalled list mail); how many."""
        seen_at = self._clock()
        rows = [(address.strip().lower(), seen_at) for address in addresses if address.strip()]
        if rows:
            with self._connection() as connection, connection.cursor() as cursor:
                cursor.executemany(
                    "INSERT INTO ledger_mailing_lists (address, seen_at) VALUES (%s, %s)"
                    " ON CONFLICT (address) DO UPDATE SET seen_at = excluded.seen_at",
                    rows,
                )
        return len(rows)

    def lists_among(self, addresses: Iterable[str]) -> frozenset[str]:
        """Which of ``addresses`` (lower-cased in the answer) are known mailing lists."""
        wanted = sorted({address.strip().lower() for address in addresses})
        if not wanted:
            return frozenset()
        with self._connection() as connection:
            rows = connection.execute(
                "SELECT address FROM ledger_mailing_lists WHERE address = ANY(%s)", (wanted,)
            ).fetchall()
        return frozenset(str(row[0]) for row in rows)

    def forget_case(self, case: str) -> int:
        with self._connection() as connection:
            return connection.execute("DELETE FROM ledger_messages WHERE case_name = %s", (case,)).rowcount

    def forget_participants(self, matches: Callable[[str, str], bool]) -> int:
        with self._connection() as connection:
            rows = connection.execute("SELECT message_id, participants FROM ledger_messages").fetchall()
            doomed = [
                message_id
                for message_id, participants in rows
                if any(matches(name, address) for _field, name, address in participants)
            ]
            if doomed:
                connection.execute("DELETE FROM ledger_messages WHERE message_id = ANY(%s)", (doomed,))
            return len(doomed)

    def scrub(self) -> None:
        """Deleted rows are gone from every query at once; VACUUM reclaims their space in the
        background (autovacuum). What stays on the server's disk until then is its administrators'
        to protect, as with any database."""

    def count(self) -> int:
        with self._connection() as connection:
            row = connection.execute("SELECT count(*) FROM ledger_messages").fetchone()
        return int(row[0]) if row else 0

    def close(self) -> None:
        """The pool is the process's, shared with the other stores: nothing to close here."""

    def __enter__(self) -> PostgresqlLedger:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
