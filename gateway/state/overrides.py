"""The override store: one-time tokens given with refusals, and the overrides made with them.

SQLite in ``state_dir`` (0600). A token is stored only as its SHA-256 (the refusal is the only
place it appears), bound to the sender it was given to and the rules it may lift, and expires.
Redeeming one is a single transaction that checks it, counts the sender's overrides of each rule
against the rule's quota, and records the override under a new reference id with the sender's
justification: the justification is kept here (like a held message), never in the audit trail,
which names the override by its reference only. A token serves one message: the client's retry
of that same message (same Message-ID) is the same override, not a second one.
"""

from __future__ import annotations

import hashlib
import secrets
import sqlite3
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from types import TracebackType

from gateway.errors import OverrideError
from gateway.state.files import private_directory, touch_private

BUSY_TIMEOUT_MS = 2000
TOKEN_LIFETIME = 24 * 3600.0  # seconds a refusal's token can be used
SCHEMA_VERSION = 1
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
    justification TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS overrides_by_sender ON overrides (sender, at);
"""


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


def _digest(token: str) -> str:
    return hashlib.sha256(token.upper().encode("ascii", "replace")).hexdigest()


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
                (_digest(token), sender.lower(), " ".join(rules), now + TOKEN_LIFETIME),
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
    ) -> Redemption:
        """Check ``token`` for this sender and message; within every rule's quota (count, seconds),
        record the override and return its reference."""
        sender = sender.lower()
        with self._lock, self._transaction() as db:
            row = db.execute(
                "SELECT rules, expires, message, reference FROM tokens WHERE digest = ? AND sender = ?",
                (_digest(token), sender),
            ).fetchone()
            if row is None or row[1] < now:
                return Redemption(Redeemed.UNKNOWN)
            allowed, _expires, used_by, reference = row
            if used_by is not None:
                if used_by == message:
                    return Redemption(Redeemed.ACCEPTED, reference, repeated=True)
                return Redemption(Redeemed.USED)
            if not set(rules) <= set(allowed.split()):
                return Redemption(Redeemed.OTHER_RULES)
            for rule in rules:
                count, seconds = quotas[rule]
                made = db.execute(
                    "SELECT rules FROM overrides WHERE sender = ? AND at >= ?", (sender, now - seconds)
                ).fetchall()
                if sum(rule in made_rules.split() for (made_rules,) in made) >= count:
                    return Redemption(Redeemed.QUOTA, rule=rule)
            reference = "ovr-" + secrets.token_hex(6)
            db.execute(
                "INSERT INTO overrides (reference, sender, rules, at, justification) VALUES (?, ?, ?, ?, ?)",
                (reference, sender, " ".join(rules), now, justification),
            )
            db.execute(
                "UPDATE tokens SET message = ?, reference = ? WHERE digest = ?",
                (message, reference, _digest(token)),
            )
            return Redemption(Redeemed.ACCEPTED, reference)

    def find(self, reference: str) -> OverrideRecord | None:
        """The override recorded under ``reference``."""
        with self._lock:
            row = self._db.execute(
                "SELECT reference, sender, rules, at, justification FROM overrides WHERE reference = ?",
                (reference,),
            ).fetchone()
        if row is None:
            return None
        return OverrideRecord(row[0], row[1], tuple(row[2].split()), row[3], row[4])

    def since(self, when: float) -> list[OverrideRecord]:
        """The overrides made from ``when`` (unix time) on, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT reference, sender, rules, at, justification FROM overrides WHERE at >= ? ORDER BY at",
                (when,),
            ).fetchall()
        return [OverrideRecord(row[0], row[1], tuple(row[2].split()), row[3], row[4]) for row in rows]

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
