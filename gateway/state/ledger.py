"""The thread ledger: who took part in each relayed message, so a reply can be compared with its parent.

One SQLite file (``<state_dir>/ledger.sqlite3``, mode 0600, WAL) with one row per message: its
Message-ID, In-Reply-To and References ids, participants (From, To, Cc: display names and
addresses), the case code name when known, and when it was recorded. Metadata only: no bodies and
no subjects; and the mailing list addresses journalled list mail showed (``mailing_lists``).
Participant addresses of committee threads are personal data; the file stays 0600 in
the state folder and is never printed by any command.

Calls are short single statements (well under a millisecond on a warm page cache), so the
screener may call them from the event loop.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType

from gateway.errors import LedgerError
from gateway.state.files import private_directory, touch_private
from gateway.state.layout import StateLayout
from gateway.state.thread_ledger import Participants, ThreadLedger
from gateway.state.thread_ledger import normalise_message_id as normalise_message_id

SCHEMA_VERSION = 1
BUSY_TIMEOUT_MS = 2000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    message_id   TEXT PRIMARY KEY,
    in_reply_to  TEXT NOT NULL,     -- JSON list of ids
    refs         TEXT NOT NULL,     -- JSON list of ids
    participants TEXT NOT NULL,     -- JSON list of [field, display name, address]
    case_name    TEXT,
    recorded_at  TEXT NOT NULL      -- ISO 8601, UTC
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS messages_case ON messages (case_name) WHERE case_name IS NOT NULL;
CREATE TABLE IF NOT EXISTS mailing_lists (
    address      TEXT PRIMARY KEY,  -- lower-cased; seen distributing journalled mail (List-Post, List-Id)
    seen_at      TEXT NOT NULL      -- ISO 8601, UTC, last seen
) WITHOUT ROWID;
"""


def _utc_now() -> datetime:
    return datetime.now(UTC)


class Ledger(ThreadLedger):
    """Records relayed messages and answers "what do we know about this message's parent?"."""

    def __init__(self, connection: sqlite3.Connection, *, clock: Callable[[], datetime] = _utc_now) -> None:
        self._db = connection
        self._lock = threading.RLock()  # re-entered by record() inside batch()
        self._clock = clock

    @classmethod
    def open(cls, path: Path, *, clock: Callable[[], datetime] = _utc_now) -> Ledger:
        """Open (creating, 0600) the ledger for reading and writing."""
        try:
            private_directory(path.parent)
            # Create the file ourselves so it is 0600 from its first byte; SQLite gives its -wal and
            # -shm companions the same mode as the database file.
            touch_private(path)
            connection = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            connection.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            connection.execute("PRAGMA journal_mode = WAL")
            # A lost last row after a power failure only forgets one thread step; the spool and the
            # audit trail carry the durability guarantees.
            connection.execute("PRAGMA synchronous = NORMAL")
            # Deleted rows are overwritten, not left in free pages: expunging must really remove.
            connection.execute("PRAGMA secure_delete = ON")
            version = connection.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                connection.close()
                raise LedgerError(
                    f"{path}: ledger schema {version} is newer than this gateway understands "
                    f"({SCHEMA_VERSION}); upgrade conduct-gateway"
                )
            connection.executescript(_SCHEMA)
            connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except sqlite3.Error as exc:
            raise LedgerError(f"{path}: cannot open the thread ledger: {exc}") from None
        except OSError as exc:
            raise LedgerError(f"{path}: cannot open the thread ledger: {exc.strerror}") from None
        return cls(connection, clock=clock)

    @classmethod
    def open_read_only(cls, path: Path) -> Ledger | None:
        """Open an existing ledger without ever writing to it (``check``); None if there is none yet."""
        if not path.exists():
            return None
        try:
            connection = sqlite3.connect(
                f"{path.resolve().as_uri()}?mode=ro", uri=True, check_same_thread=False
            )
            connection.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            connection.execute("PRAGMA query_only = ON")
            connection.execute("SELECT 1 FROM messages LIMIT 1").fetchall()
        except sqlite3.Error as exc:
            raise LedgerError(f"{path}: cannot read the thread ledger: {exc}") from None
        return cls(connection)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _store(
        self,
        key: str,
        in_reply_to: list[str],
        references: list[str],
        participants: Participants,
        case: str | None,
        when: datetime | None,
    ) -> None:
        recorded_at = (when or self._clock()).astimezone(UTC).isoformat(timespec="seconds")
        row = (
            key,
            json.dumps(in_reply_to),
            json.dumps(references),
            _PARTICIPANTS_JSON.encode(participants),
            case,
            recorded_at,
        )
        with self._lock:
            self._db.execute(
                "INSERT INTO messages"
                " (message_id, in_reply_to, refs, participants, case_name, recorded_at)"
                " VALUES (?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (message_id) DO UPDATE SET"
                "  in_reply_to = excluded.in_reply_to, refs = excluded.refs,"
                "  participants = excluded.participants,"
                "  case_name = COALESCE(excluded.case_name, messages.case_name),"
                "  recorded_at = excluded.recorded_at",
                row,
            )

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Several ``record`` calls in one SQLite transaction (one commit instead of one each).

        A record that fails inside raises as usual and leaves the others in the batch; an exception
        that leaves the block rolls the whole batch back.
        """
        with self._lock:
            self._db.execute("BEGIN")
            try:
                yield
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _fetch(self, candidates: list[str]) -> dict[str, tuple[Participants, str | None]]:
        marks = ",".join("?" * len(candidates))
        with self._lock:
            rows = self._db.execute(
                f"SELECT message_id, participants, case_name FROM messages WHERE message_id IN ({marks})",  # noqa: S608 - only placeholders are interpolated
                candidates,
            ).fetchall()
        return {key: (json.loads(participants), case) for key, participants, case in rows}

    def record_lists(self, addresses: Iterable[str]) -> int:
        """Remember ``addresses`` as mailing lists (seen in journalled list mail); how many."""
        seen_at = self._clock().astimezone(UTC).isoformat(timespec="seconds")
        rows = [(address.strip().lower(), seen_at) for address in addresses if address.strip()]
        if rows:
            with self._lock:
                self._db.executemany(
                    "INSERT INTO mailing_lists (address, seen_at) VALUES (?, ?)"
                    " ON CONFLICT (address) DO UPDATE SET seen_at = excluded.seen_at",
                    rows,
                )
        return len(rows)

    def lists_among(self, addresses: Iterable[str]) -> frozenset[str]:
        """Which of ``addresses`` (lower-cased in the answer) are known mailing lists."""
        wanted = sorted({address.strip().lower() for address in addresses})
        if not wanted:
            return frozenset()
        marks = ",".join("?" * len(wanted))
        with self._lock:
            try:
                rows = self._db.execute(
                    f"SELECT address FROM mailing_lists WHERE address IN ({marks})",  # noqa: S608 - only placeholders are interpolated
                    wanted,
                ).fetchall()
            except sqlite3.OperationalError:  # a read-only ledger written before lists were learnt
                return frozenset()
        return frozenset(row[0] for row in rows)

    def forget_case(self, case: str) -> int:
        """Delete every message recorded under ``case`` (expunging); returns how many."""
        with self._lock:
            cursor = self._db.execute("DELETE FROM messages WHERE case_name = ?", (case,))
            return cursor.rowcount

    def forget_participants(self, matches: Callable[[str, str], bool]) -> int:
        """Delete every message with a participant for whom ``matches(display_name, address)``
        holds (expunging a case's people from threads not labelled with the case); how many."""
        with self._lock:
            rows = self._db.execute("SELECT message_id, participants FROM messages").fetchall()
            doomed = [
                (message_id,)
                for message_id, participants in rows
                if any(matches(name, address) for _field, name, address in json.loads(participants))
            ]
            if doomed:
                self._db.executemany("DELETE FROM messages WHERE message_id = ?", doomed)
            return len(doomed)

    def scrub(self) -> None:
        """Rewrite the file without free pages and empty the write-ahead log, so nothing deleted
        (e.g. rows written before ``secure_delete``, or old versions of updated rows) stays on disk."""
        with self._lock:
            try:
                self._db.execute("VACUUM")
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error as exc:
                raise LedgerError(f"cannot compact the thread ledger: {exc}") from None

    def count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM messages").fetchone()[0])


# json.dumps with any option builds an encoder per call; this is the one it would build.
_PARTICIPANTS_JSON = json.JSONEncoder(ensure_ascii=False)


def ledger_path(state_dir: Path) -> Path:
    """Where the ledger lives inside the state folder."""
    return StateLayout(state_dir).ledger
