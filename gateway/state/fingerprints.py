"""The fingerprint store: protected documents' keyed shingle hashes on disk, and the live index.

Two files in the state folder, both 0600: ``fingerprints.sqlite3`` (one row per protected document:
case, opaque document id, the protected person's id when known, where it was learnt, when, its
sorted 64-bit shingle hashes and the scheme they were made with, and which protected people it
names as ids and identity kinds; never any text, name or address) and ``fingerprints.key`` (the
per-installation BLAKE2b key, 32 random bytes, made at first use). Lose the key and every
fingerprint is useless; back the two files up together.

The gateway, the journal intake and ``conduct-gateway case add-report`` (another process) may all
write. Each process keeps its own :class:`~gateway.policy.fingerprint.FingerprintIndex`; its own
writes go into it at once, other processes' writes are picked up on the next lookup (SQLite's
``data_version`` says whether anything changed), so a learnt report protects the very next message
without a restart.

A message has many texts to look up; :meth:`FingerprintStore.for_message` checks once and returns
a view that looks them all up in the index as it was then (the message was received before that
check, so it cannot have been missed by it).
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from gateway.errors import GatewayError
from gateway.policy.fingerprint import CURRENT_SCHEME, KEY_BYTES, ProtectedDocument
from gateway.policy.model import IdentityKind, Mention
from gateway.state.files import create_new, private_directory, touch_private
from gateway.state.fingerprint_index import (
    IndexedFingerprints,
    Learning,
    Learnt,
    Row,
    key_check,
    message_document_id,
    pack_shingles,
    unpack_shingles,
)
from gateway.state.layout import StateLayout

__all__ = [
    "FINGERPRINT_SCHEMA",
    "KEY_BYTES",
    "SCHEMA_VERSION",
    "FingerprintError",
    "FingerprintStore",
    "Learnt",
    "fingerprints_path",
    "key_path",
    "load_or_create_key",
    "message_document_id",
]

SCHEMA_VERSION = 2
BUSY_TIMEOUT_MS = 5000

FINGERPRINT_SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    case_name  TEXT NOT NULL,
    document   TEXT NOT NULL,     -- opaque id (a digest), never text of the message
    person     TEXT,              -- the protected person's id in the case, when known
    source     TEXT NOT NULL,     -- journal | add-report | ...
    learnt_at  TEXT NOT NULL,     -- ISO 8601, UTC
    shingles   BLOB NOT NULL,     -- sorted big-endian uint64 keyed shingle hashes
    scheme     INTEGER NOT NULL DEFAULT 2,  -- how the shingles were made (1: exact 8-word runs)
    mentions   TEXT NOT NULL DEFAULT '[]',  -- JSON [[case, person id, kind], ...]: never names
    UNIQUE (case_name, document)
);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
"""


class FingerprintError(GatewayError):
    """The fingerprint store or its key cannot be opened, read or written."""


def fingerprints_path(state_dir: Path) -> Path:
    return StateLayout(state_dir).fingerprints


def key_path(state_dir: Path) -> Path:
    return StateLayout(state_dir).fingerprint_key


def load_or_create_key(path: Path) -> bytes:
    """The installation's fingerprint key; made (0600, 32 random bytes) if it does not exist yet."""
    try:
        private_directory(path.parent)
        with contextlib.suppress(FileExistsError):
            create_new(path, os.urandom(KEY_BYTES))
        key = path.read_bytes()
    except OSError as exc:
        raise FingerprintError(f"{path}: cannot read or create the fingerprint key: {exc.strerror}") from None
    if len(key) != KEY_BYTES:
        raise FingerprintError(
            f"{path}: the fingerprint key must be exactly {KEY_BYTES} bytes (it is {len(key)}); restore it "
            "from the backup made with fingerprints.sqlite3"
        )
    return key


def _utc_now() -> datetime:
    return datetime.now(UTC)


class FingerprintStore(IndexedFingerprints):
    """The fingerprints on disk and the in-memory index built from them (``ContentFingerprints``)."""

    def __init__(
        self, connection: sqlite3.Connection, key: bytes, *, clock: Callable[[], datetime] = _utc_now
    ) -> None:
        super().__init__(key, clock)
        self._db = connection
        self._data_version = -1
        self._load_all()

    @classmethod
    def open(cls, state_dir: Path, *, clock: Callable[[], datetime] = _utc_now) -> FingerprintStore:
        """Open (creating, 0600) the store and key in ``state_dir`` and load every fingerprint."""
        return cls.open_files(fingerprints_path(state_dir), key_path(state_dir), clock=clock)

    @classmethod
    def open_files(
        cls, path: Path, key_file: Path, *, clock: Callable[[], datetime] = _utc_now
    ) -> FingerprintStore:
        """Open (creating, 0600) the store ``path`` keyed with ``key_file`` and load every fingerprint."""
        key = load_or_create_key(key_file)
        try:
            touch_private(path)
            connection = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            connection.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            connection.execute("PRAGMA journal_mode = WAL")
            version = connection.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                connection.close()
                raise FingerprintError(
                    f"{path}: fingerprint schema {version} is newer than this gateway understands; "
                    "upgrade conduct-gateway"
                )
            connection.executescript(FINGERPRINT_SCHEMA)
            if version == 1:
                # Version 1 rows are exact 8-word fingerprints: kept, and matched as such.
                connection.execute("ALTER TABLE documents ADD COLUMN scheme INTEGER NOT NULL DEFAULT 1")
                connection.execute("ALTER TABLE documents ADD COLUMN mentions TEXT NOT NULL DEFAULT '[]'")
            connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            check = key_check(key)
            connection.execute("INSERT OR IGNORE INTO meta (name, value) VALUES ('key_check', ?)", (check,))
            stored = connection.execute("SELECT value FROM meta WHERE name = 'key_check'").fetchone()[0]
        except sqlite3.Error as exc:
            raise FingerprintError(f"{path}: cannot open the fingerprint store: {exc}") from None
        except OSError as exc:
            raise FingerprintError(f"{path}: cannot open the fingerprint store: {exc.strerror}") from None
        if stored != check:
            connection.close()
            raise FingerprintError(
                f"{key_file} is not the key {path} was made with; restore the key from the "
                "backup made together with the store"
            )
        return cls(connection, key, clock=clock)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- writing -------------------------------------------------------------------------------------

    def _write(self, learning: Learning) -> None:
        try:
            self._db.execute(
                "INSERT OR REPLACE INTO documents (case_name, document, person, source, learnt_at,"
                " shingles, scheme, mentions) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    learning.case,
                    learning.document,
                    learning.person,
                    learning.source,
                    learning.learnt_at.isoformat(timespec="seconds"),
                    pack_shingles(learning.shingles),
                    CURRENT_SCHEME.number,
                    _dump_mentions(learning.mentions),
                ),
            )
        except sqlite3.Error as exc:
            raise FingerprintError(f"cannot store fingerprints: {exc}") from None
        # Read our row back with any other process's rows before it, so none is skipped.
        self._data_version = -1

    def forget_case(self, case: str) -> int:
        """Delete every fingerprint of ``case`` (expunging a case); returns how many documents."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                cursor = self._db.execute("DELETE FROM documents WHERE case_name = ?", (case,))
                self._db.execute(
                    "INSERT OR REPLACE INTO meta (name, value) VALUES ('epoch', ?)", (os.urandom(8).hex(),)
                )
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise FingerprintError(f"cannot delete fingerprints: {exc}") from None
            self._load_all()
            return cursor.rowcount

    # -- reading -------------------------------------------------------------------------------------

    def cases(self) -> dict[str, int]:
        """Documents per case."""
        with self._lock:
            rows = self._db.execute(
                "SELECT case_name, COUNT(*) FROM documents GROUP BY case_name ORDER BY case_name"
            ).fetchall()
        return {case: int(count) for case, count in rows}

    # -- keeping the index in step -------------------------------------------------------------------

    def _read_since(self, last_id: int, epoch: str) -> list[Row] | None:
        try:
            version = self._db.execute("PRAGMA data_version").fetchone()[0]
            if version == self._data_version:
                return []
            self._data_version = version
            if self._current_epoch() != epoch:
                return None
            rows = self._db.execute(f"{_SELECT} WHERE id > ? ORDER BY id", (last_id,)).fetchall()
        except sqlite3.Error as exc:
            raise FingerprintError(f"cannot read fingerprints: {exc}") from None
        return [_row(row) for row in rows]

    def _current_epoch(self) -> str:
        row = self._db.execute("SELECT value FROM meta WHERE name = 'epoch'").fetchone()
        return str(row[0]) if row else ""

    def _read_all(self) -> tuple[str, list[Row]]:
        try:
            self._data_version = self._db.execute("PRAGMA data_version").fetchone()[0]
            epoch = self._current_epoch()
            rows = self._db.execute(f"{_SELECT} ORDER BY id").fetchall()
        except sqlite3.Error as exc:
            raise FingerprintError(f"cannot read fingerprints: {exc}") from None
        return epoch, [_row(row) for row in rows]


_SELECT = "SELECT id, case_name, document, person, shingles, scheme, mentions FROM documents"


def _row(row: tuple[int, str, str, str | None, bytes, int, str]) -> Row:
    row_id, case, document, person, blob, scheme, mentions = row
    return row_id, ProtectedDocument(
        case, document, person, unpack_shingles(blob), scheme, _load_mentions(mentions)
    )


def _dump_mentions(mentions: frozenset[Mention]) -> str:
    return json.dumps(sorted([m.case, m.person, m.kind.value] for m in mentions))


def _load_mentions(text: str) -> frozenset[Mention]:
    try:
        return frozenset(Mention(case, person, IdentityKind(kind)) for case, person, kind in json.loads(text))
    except (ValueError, TypeError) as exc:
        raise FingerprintError(f"unreadable mentions in the fingerprint store: {exc}") from None
