"""The override store: one-time tokens given with refusals, and the overrides made with them.

SQLite in ``state_dir`` (0600). A token is stored only as its SHA-256 (the refusal is the only
place it appears), bound to the sender it was given to and the rules it may lift, and expires.
Redeeming one is a single transaction that checks it, counts the sender's overrides of each rule
against the rule's quota, and records the override under a new reference id with the sender's
justification: the justification is kept here (like a held message), never in the audit trail,
which names the override by its reference only. A token serves one message: the client's retry
of that same message (same Message-ID) is the same override, not a second one.

Each override is linked to the message it let through (its queue id) and the case of its thread, so
``forget`` can remove it when that case is expunged; ``prune`` removes expired tokens (used or not)
and overrides older than the retention. The store also keeps the idempotency keys of "false
positive" reports (``note_report``): a digest of the reply's Message-ID and the refused message's
reference, so a reply retried after a 451 is counted once. The PostgreSQL backend implements the
same port (``gateway.state.postgresql.overrides``), shared by every gateway.
"""

from __future__ import annotations

import hashlib
import secrets
import sqlite3
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from types import TracebackType
from typing import Any

from gateway.errors import OverrideError
from gateway.state.files import private_directory, touch_private

BUSY_TIMEOUT_MS = 2000
TOKEN_LIFETIME = 24 * 3600.0  # seconds a refusal's token can be used
DEFAULT_RETENTION = 90 * 86400.0  # seconds an override (with its justification) is kept
SCHEMA_VERSION = 2
_SCHEMA = """
CREATE TABLE IF NOT EXISTS tokens (
    digest TEXT PRIMARY KEY,
    sender TEXT NOT NULL,
    rules TEXT NOT NULL,
    expires REAL NOT NULL,
    message TEXT,
    reference TEXT
);
CREATE TABLE IF NOT EXISTS overrides (
    reference TEXT PRIMARY KEY,
    sender TEXT NOT NULL,
    rules TEXT NOT NULL,
    at REAL NOT NULL,
    justification TEXT NOT NULL,
    queue_id TEXT,
    case_name TEXT
);
CREATE INDEX IF NOT EXISTS overrides_by_sender ON overrides (sender, at);
CREATE TABLE IF NOT EXISTS reports (
    digest TEXT PRIMARY KEY,
    reference TEXT NOT NULL,
    at REAL NOT NULL
);
"""
_COLUMNS_ADDED_IN_2 = ("queue_id", "case_name")


class Redeemed(StrEnum):
    """What redeeming a token came to."""

    ACCEPTED = "accepted"  # recorded under ``reference`` (or already was: a retry)
    UNKNOWN = "unknown"  # no such token for this sender, or expired
    USED = "used"  # the token served another message already
    OTHER_RULES = "other-rules"  # the message now breaks a rule the token was not given for
    QUOTA = "quota"  # the sender used up a rule's quota (``rule`` says which)


@dataclass(frozen=True)
class Redemption:
    outcome: Redeemed
    reference: str | None = None
    rule: str | None = None
    repeated: bool = False  # a retry of a message already overridden: counted once


@dataclass(frozen=True)
class OverrideRecord:
    """One override as kept: never shown in logs or the audit trail (the justification is free text)."""

    reference: str
    sender: str
    rules: tuple[str, ...]
    at: float
    justification: str
    queue_id: str | None = None  # the message it let through (the first attempt's, on a retry)
    case: str | None = None  # the case of the message's thread, if any


def refusal(
    token: tuple[str, str | None, str | None] | None,
    *,
    message: str,
    rules: tuple[str, ...],
    quotas: Mapping[str, tuple[int, float]],
    made_since: Callable[[float], Iterable[str]],
) -> Redemption | None:
    """Why ``token`` (its allowed rules, the message it served, its reference; None when unknown or
    expired) cannot be redeemed for ``message``, or the redemption it repeats; None: it can.
    ``made_since(seconds)`` gives the rules of the sender's overrides in that many seconds back."""
    if token is None:
        return Redemption(Redeemed.UNKNOWN)
    allowed, used_by, reference = token
    if used_by is not None:
        if used_by == message:
            return Redemption(Redeemed.ACCEPTED, reference, repeated=True)
        return Redemption(Redeemed.USED)
    if not set(rules) <= set(allowed.split()):
        return Redemption(Redeemed.OTHER_RULES)
    for rule in rules:
        count, seconds = quotas[rule]
        if sum(rule in made.split() for made in made_since(seconds)) >= count:
            return Redemption(Redeemed.QUOTA, rule=rule)
    return None


def token_digest(token: str) -> str:
    return hashlib.sha256(token.upper().encode("ascii", "replace")).hexdigest()


def report_key(message_key: str, reference: str) -> str:
    """The idempotency key of a "false positive" report: never the Message-ID itself."""
    return hashlib.sha256(f"{message_key}\0{reference}".encode("utf-8", "replace")).hexdigest()


_SELECT = "SELECT reference, sender, rules, at, justification, queue_id, case_name FROM overrides"
_INSERT = (
    "INSERT INTO overrides (reference, sender, rules, at, justification, queue_id, case_name)"
    " VALUES (?, ?, ?, ?, ?, ?, ?)"
)


def _record(row: tuple[Any, ...]) -> OverrideRecord:
    reference, sender, rules, at, justification, queue_id, case = row
    return OverrideRecord(reference, sender, tuple(rules.split()), at, justification, queue_id, case)


class OverrideStore:
    """Tokens and overrides (thread-safe: the gateway redeems on its event loop, tools read)."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._db = connection
        self._lock = threading.Lock()

    @classmethod
    def open(cls, path: Path) -> OverrideStore:
        """Open (creating, 0600) the store."""
        try:
            private_directory(path.parent)
            touch_private(path)
            connection = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            connection.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            connection.execute("PRAGMA journal_mode = WAL")
            connection.execute("PRAGMA secure_delete = ON")
            version = connection.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                connection.close()
                raise OverrideError(f"{path}: override store schema {version} is newer than this gateway")
            connection.executescript(_SCHEMA)
            columns = {row[1] for row in connection.execute("PRAGMA table_info(overrides)")}
            for column in _COLUMNS_ADDED_IN_2:  # a version 1 store gains the links to message and case
                if column not in columns:
                    connection.execute(f"ALTER TABLE overrides ADD COLUMN {column} TEXT")
            connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except sqlite3.Error as exc:
            raise OverrideError(f"{path}: cannot open the override store: {exc}") from None
        except OSError as exc:
            raise OverrideError(f"{path}: cannot open the override store: {exc.strerror}") from None
        return cls(connection)

    def issue(self, token: str, sender: str, rules: tuple[str, ...], now: float) -> None:
        """Remember ``token`` (made by the caller) for ``sender`` and ``rules``; expired ones go."""
        with self._lock, self._transaction() as db:
            db.execute("DELETE FROM tokens WHERE expires < ?", (now,))
            db.execute(
                "INSERT OR REPLACE INTO tokens (digest, sender, rules, expires) VALUES (?, ?, ?, ?)",
                (token_digest(token), sender.lower(), " ".join(rules), now + TOKEN_LIFETIME),
            )

    def redeem(
        self,
        token: str,
        *,
        sender: str,
        message: str,
        rules: tuple[str, ...],
        justification: str,
        quotas: Mapping[str, tuple[int, float]],
        now: float,
        queue_id: str | None = None,
        case: str | None = None,
    ) -> Redemption:
        """Check ``token`` for this sender and message; within every rule's quota (count, seconds),
        record the override (linked to ``queue_id`` and ``case``) and return its reference."""
        sender = sender.lower()
        with self._lock, self._transaction() as db:
            row = db.execute(
                "SELECT rules, expires, message, reference FROM tokens WHERE digest = ? AND sender = ?",
                (token_digest(token), sender),
            ).fetchone()

            def made_since(seconds: float) -> list[str]:
                found = db.execute(
                    "SELECT rules FROM overrides WHERE sender = ? AND at >= ?", (sender, now - seconds)
                ).fetchall()
                return [made_rules for (made_rules,) in found]

            token_row = None if row is None or row[1] < now else (row[0], row[2], row[3])
            refused = refusal(token_row, message=message, rules=rules, quotas=quotas, made_since=made_since)
            if refused is not None:
                return refused
            reference = "ovr-" + secrets.token_hex(6)
            db.execute(
                _INSERT,
                (reference, sender, " ".join(rules), now, justification, queue_id, case),
            )
            db.execute(
                "UPDATE tokens SET message = ?, reference = ? WHERE digest = ?",
                (message, reference, token_digest(token)),
            )
            return Redemption(Redeemed.ACCEPTED, reference)

    def find(self, reference: str) -> OverrideRecord | None:
        """The override recorded under ``reference``."""
        with self._lock:
            row = self._db.execute(_SELECT + " WHERE reference = ?", (reference,)).fetchone()
        return None if row is None else _record(row)

    def since(self, when: float) -> list[OverrideRecord]:
        """The overrides made from ``when`` (unix time) on, oldest first."""
        with self._lock:
            rows = self._db.execute(_SELECT + " WHERE at >= ? ORDER BY at", (when,)).fetchall()
        return [_record(row) for row in rows]

    def prune(self, *, now: float, retention: float) -> int:
        """Delete expired tokens (used or not: an expired token redeems nothing), and overrides and
        report keys older than ``retention`` seconds; how many overrides went."""
        with self._lock, self._transaction() as db:
            db.execute("DELETE FROM tokens WHERE expires < ?", (now,))
            db.execute("DELETE FROM reports WHERE at < ?", (now - retention,))
            return db.execute("DELETE FROM overrides WHERE at < ?", (now - retention,)).rowcount

    def forget(self, case: str, queue_ids: Iterable[str], names: Callable[[str], bool]) -> int:
        """Delete the overrides of ``case``, of the messages ``queue_ids``, and those whose
        justification ``names`` one of its people (``case expunge``), with their tokens; how many."""
        wanted = set(queue_ids)
        with self._lock, self._transaction() as db:
            rows = db.execute(
                "SELECT reference, queue_id, case_name, justification FROM overrides"
            ).fetchall()
            doomed = [
                (reference,)
                for reference, queue_id, case_name, justification in rows
                if case_name == case or queue_id in wanted or names(justification)
            ]
            db.executemany("DELETE FROM overrides WHERE reference = ?", doomed)
            db.executemany("DELETE FROM tokens WHERE reference = ?", doomed)
        if doomed:  # secure_delete zeroes the rows; the write-ahead log must not keep them either
            with self._lock:
                try:
                    self._db.execute("VACUUM")
                    self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                except sqlite3.Error as exc:
                    raise OverrideError(f"cannot compact the override store: {exc}") from None
        return len(doomed)

    def note_report(self, key: str, reference: str, now: float) -> bool:
        """Remember a "false positive" report's key: True the first time, False for a repeat."""
        with self._lock, self._transaction() as db:
            cursor = db.execute(
                "INSERT OR IGNORE INTO reports (digest, reference, at) VALUES (?, ?, ?)",
                (key, reference, now),
            )
            return cursor.rowcount == 1

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> OverrideStore:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class _Transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on an exception); SQLite errors as OverrideError."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> sqlite3.Connection:
        try:
            self.db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise OverrideError(f"cannot use the override store: {exc}") from None
        return self.db

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            self.db.execute("ROLLBACK" if kind is not None else "COMMIT")
        except sqlite3.Error as error:
            raise OverrideError(f"cannot use the override store: {error}") from None
