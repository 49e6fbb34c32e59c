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
import hashlib
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

from psycopg.types.json import Jsonb

from gateway.errors import StateError
from gateway.policy.fingerprint import (
    CURRENT_SCHEME,
    FingerprintIndex,
    IndexStatistics,
    ProtectedDocument,
    document_shingles,
    learnable_texts,
)
from gateway.policy.model import (
    ContentFingerprints,
    ContentOverlap,
    IdentityFinder,
    IdentityKind,
    Mention,
    ParsedMessage,
)
from gateway.state.fingerprints import (
    _KEY_CHECK_INPUT,
    FingerprintError,
    Learnt,
    _pack,
    _unpack,
    message_document_id,
)
from gateway.state.postgresql.database import Connection, Database

_SELECT = "SELECT id, case_name, document, person, shingles, scheme, mentions FROM fingerprint_documents"


def _document(row: tuple[Any, ...]) -> ProtectedDocument:
    _, case, document, person, blob, scheme, mentions = row
    return ProtectedDocument(
        case,
        document,
        person,
        _unpack(bytes(blob)),
        scheme,
        frozenset(Mention(c, p, IdentityKind(kind)) for c, p, kind in mentions),
    )


class PostgresqlFingerprintStore:
    """The ``FingerprintsPort`` of the PostgreSQL backend."""

    def __init__(
        self, database: Database, key: bytes, *, clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    ) -> None:
        self._database = database
        self._key = key
        self._clock = clock
        self._lock = threading.RLock()
        self._index = FingerprintIndex(key)
        self._last_id = 0
        self._epoch = ""
        with self._connection() as connection:
            check = hashlib.blake2b(_KEY_CHECK_INPUT, key=key, digest_size=16).hexdigest()
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

    # -- writing -----------------------------------------------------------------------------------

    def learn(
        self,
        case: str,
        document: str,
        texts: str | Sequence[str],
        *,
        person: str | None = None,
        source: str = "api",
        finder: IdentityFinder | None = None,
    ) -> Learnt:
        """See the files store: only keyed hashes and (case, person id, kind) mentions are stored."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        shingles = document_shingles(texts, self._key)
        if len(shingles) < 8 - CURRENT_SCHEME.words + 1:
            return Learnt(case, document, 0)
        mentions = (
            frozenset(Mention(i.case, i.person, i.kind) for text in texts for i in finder.find(text))
            if finder is not None
            else frozenset()
        )
        with self._lock:
            with self._connection() as connection:
                # Delete and insert (not update): the row gets a new id, so every process picks it up.
                connection.execute(
                    "DELETE FROM fingerprint_documents WHERE case_name = %s AND document = %s",
                    (case, document),
                )
                connection.execute(
                    "INSERT INTO fingerprint_documents (case_name, document, person, source, learnt_at,"
                    " shingles, scheme, mentions) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                    (
                        case,
                        document,
                        person,
                        source,
                        self._clock().astimezone(UTC),
                        _pack(shingles),
                        CURRENT_SCHEME.number,
                        Jsonb(sorted([m.case, m.person, m.kind.value] for m in mentions)),
                    ),
                )
            self._catch_up()
        return Learnt(case, document, len(shingles))

    def learn_message(
        self,
        case: str,
        message: ParsedMessage,
        *,
        person: str | None = None,
        source: str = "api",
        finder: IdentityFinder | None = None,
    ) -> Learnt:
        return self.learn(
            case,
            message_document_id(message),
            learnable_texts(message),
            person=person,
            source=source,
            finder=finder,
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

    def overlaps(self, text: str) -> list[ContentOverlap]:
        with self._lock:
            self._catch_up()
            return self._index.overlaps(text)

    def named_by(self, case: str, person: str) -> frozenset[Mention]:
        with self._lock:
            self._catch_up()
            return self._index.named_by(case, person)

    def for_message(self) -> ContentFingerprints:
        with self._lock:
            self._catch_up()
            return _Snapshot(self._index, self._lock)

    def refresh(self) -> None:
        with self._lock:
            self._catch_up()

    def cases(self) -> dict[str, int]:
        with self._connection() as connection:
            rows = connection.execute(
                "SELECT case_name, count(*) FROM fingerprint_documents GROUP BY case_name ORDER BY case_name"
            ).fetchall()
        return {case: int(count) for case, count in rows}

    def statistics(self) -> IndexStatistics:
        with self._lock:
            return self._index.statistics()

    # -- keeping the index in step -----------------------------------------------------------------

    @staticmethod
    def _epoch_of(connection: Connection) -> str:
        row = connection.execute("SELECT value FROM fingerprint_meta WHERE name = 'epoch'").fetchone()
        return str(row[0]) if row else ""

    def _catch_up(self) -> None:
        with self._connection() as connection:
            if self._epoch_of(connection) != self._epoch:
                rows = None
            else:
                rows = connection.execute(f"{_SELECT} WHERE id > %s ORDER BY id", (self._last_id,)).fetchall()
        if rows is None:
            self._load_all()
            return
        for row in rows:
            self._index.add(_document(row))
            self._last_id = max(self._last_id, row[0])

    def _load_all(self) -> None:
        with self._connection() as connection:
            epoch = self._epoch_of(connection)
            rows = connection.execute(f"{_SELECT} ORDER BY id").fetchall()
        index = FingerprintIndex(self._key)
        index.add_many(_document(row) for row in rows)
        self._index, self._epoch = index, epoch
        self._last_id = max((row[0] for row in rows), default=0)

    def close(self) -> None:
        """The pool is the process's: nothing to close here."""

    def __enter__(self) -> PostgresqlFingerprintStore:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class _Snapshot:
    """One message's lookups, all against the index as it was when the message was checked."""

    def __init__(self, index: FingerprintIndex, lock: threading.RLock) -> None:
        self._index = index
        self._lock = lock

    def overlaps(self, text: str) -> list[ContentOverlap]:
        with self._lock:
            return self._index.overlaps(text)

    def named_by(self, case: str, person: str) -> frozenset[Mention]:
        with self._lock:
            return self._index.named_by(case, person)
