"""Fingerprints in PostgreSQL: the files backend's keyed shingle hashes, shared by every gateway.

Rows hold what the SQLite store holds (case, opaque document id, person id, source, time, sorted
keyed 64-bit shingle hashes, scheme, and which protected people a document names as ids and kinds):
never text, a name or an address. The BLAKE2b key is not in the database: every gateway keeps the
same ``fingerprints.key`` in its state folder (copy it from the first), and a gateway whose key is
not the one the database was made with is refused (``fingerprint_meta.key_check``).

Each process keeps its own in-memory index. It picks up other gateways' writes on the next lookup
(rows with a higher id); ``forget_case`` changes the epoch, which makes every process reload.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

from psycopg.types.json import Jsonb

from gateway.errors import StateError
from gateway.policy.fingerprint import CURRENT_SCHEME, ProtectedDocument
from gateway.policy.model import IdentityKind, Mention
from gateway.state.fingerprint_index import (
    IndexedFingerprints,
    Learning,
    Row,
    key_check,
    pack_shingles,
    unpack_shingles,
)
from gateway.state.fingerprints import FingerprintError
from gateway.state.postgresql.database import Connection, Database

_SELECT = "SELECT id, case_name, document, person, shingles, scheme, mentions FROM fingerprint_documents"


def _row(row: tuple[Any, ...]) -> Row:
    row_id, case, document, person, blob, scheme, mentions = row
    return row_id, ProtectedDocument(
        case,
        document,
        person,
        unpack_shingles(bytes(blob)),
        scheme,
        frozenset(Mention(c, p, IdentityKind(kind)) for c, p, kind in mentions),
    )


class PostgresqlFingerprintStore(IndexedFingerprints):
    """The ``FingerprintsPort`` of the PostgreSQL backend."""

    def __init__(
        self, database: Database, key: bytes, *, clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    ) -> None:
        super().__init__(key, clock)
        self._database = database
        with self._connection() as connection:
            check = key_check(key)
            connection.execute(
                "INSERT INTO fingerprint_meta (name, value) VALUES ('key_check', %s) ON CONFLICT DO NOTHING",
                (check,),
            )
            row = connection.execute("SELECT value FROM fingerprint_meta WHERE name = 'key_check'").fetchone()
        if row is None or row[0] != check:
            raise FingerprintError(
                f"this gateway's fingerprints.key is not the key the fingerprints in {database.where} were "
                "made with: every gateway sharing the database needs the same key file (copy it from the "
                "first gateway's state folder)"
            )
        self._load_all()

    @contextlib.contextmanager
    def _connection(self) -> Iterator[Connection]:
        """One transaction; the backend's errors become ``FingerprintError`` (what callers catch)."""
        try:
            with self._database.connection() as connection:
                yield connection
        except StateError as exc:
            raise FingerprintError(f"the fingerprint store cannot be used: {exc}") from exc

    def close(self) -> None:
        """The pool is the process's: nothing to close here."""

    # -- writing -----------------------------------------------------------------------------------

    def _write(self, learning: Learning) -> None:
        with self._connection() as connection:
            # Delete and insert (not update): the row gets a new id, so every process picks it up.
            connection.execute(
                "DELETE FROM fingerprint_documents WHERE case_name = %s AND document = %s",
                (learning.case, learning.document),
            )
            connection.execute(
                "INSERT INTO fingerprint_documents (case_name, document, person, source, learnt_at,"
                " shingles, scheme, mentions) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                (
                    learning.case,
                    learning.document,
                    learning.person,
                    learning.source,
                    learning.learnt_at,
                    pack_shingles(learning.shingles),
                    CURRENT_SCHEME.number,
                    Jsonb(sorted([m.case, m.person, m.kind.value] for m in learning.mentions)),
                ),
            )

    def forget_case(self, case: str) -> int:
        with self._lock:
            with self._connection() as connection:
                cursor = connection.execute("DELETE FROM fingerprint_documents WHERE case_name = %s", (case,))
                connection.execute(
                    "INSERT INTO fingerprint_meta (name, value) VALUES ('epoch', %s)"
                    " ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                    (os.urandom(8).hex(),),
                )
                forgotten = int(cursor.rowcount)
            self._load_all()
            return forgotten

    # -- reading -----------------------------------------------------------------------------------

    def cases(self) -> dict[str, int]:
        with self._connection() as connection:
            rows = connection.execute(
                "SELECT case_name, count(*) FROM fingerprint_documents GROUP BY case_name ORDER BY case_name"
            ).fetchall()
        return {case: int(count) for case, count in rows}

    # -- keeping the index in step -----------------------------------------------------------------

    @staticmethod
    def _epoch_of(connection: Connection) -> str:
        row = connection.execute("SELECT value FROM fingerprint_meta WHERE name = 'epoch'").fetchone()
        return str(row[0]) if row else ""

    def _read_since(self, last_id: int, epoch: str) -> list[Row] | None:
        with self._connection() as connection:
            if self._epoch_of(connection) != epoch:
                return None
            rows = connection.execute(f"{_SELECT} WHERE id > %s ORDER BY id", (last_id,)).fetchall()
        return [_row(row) for row in rows]

    def _read_all(self) -> tuple[str, list[Row]]:
        with self._connection() as connection:
            epoch = self._epoch_of(connection)
            rows = connection.execute(f"{_SELECT} ORDER BY id").fetchall()
        return epoch, [_row(row) for row in rows]
