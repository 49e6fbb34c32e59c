"""Committee members' accounts in PostgreSQL: the users file's lines as rows, shared by every gateway.

The same checks as the users file (``Accounts``: address syntax, aliases owned once, argon2 hashes,
minimum password length); a change is read-modify-write under an advisory lock in one transaction,
so two ``user`` commands on different hosts never lose each other's change, and it moves
``accounts_version``, which ``reload_if_changed`` polls (one small query) so every gateway sees a
new account without a restart. Accounts are "in use" (the policy's committee follows them) once
the version has moved: a database where no account was ever added is like a missing users file.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

from argon2 import PasswordHasher

from gateway.errors import AccountError, StateError
from gateway.logs import log_event
from gateway.policy.committee import Roster
from gateway.state.accounts import Accounts, Member
from gateway.state.postgresql.database import Connection, Database

log = logging.getLogger("gateway.state.postgresql.accounts")

WHERE = Path("PostgreSQL table accounts")
# pg_advisory_xact_lock key serialising account changes ("cgaccoun").
ACCOUNTS_LOCK = 0x636761636F756E


class PostgresqlAccounts(Accounts):
    """The ``AccountsPort`` of the PostgreSQL backend (the users file's rules, rows for lines)."""

    def __init__(self, database: Database, hasher: PasswordHasher | None = None) -> None:
        self._database = database
        self._change = threading.local()  # the connection of a change in progress on this thread
        version, members = self._fetch()
        super().__init__(WHERE, members, hasher)
        self._version = version

    @classmethod
    def open(cls, database: Database) -> PostgresqlAccounts:
        return cls(database)

    @contextlib.contextmanager
    def _connection(self) -> Iterator[Connection]:
        current: Connection | None = getattr(self._change, "connection", None)
        if current is not None:
            yield current
            return
        try:
            with self._database.connection() as connection:
                yield connection
        except StateError as exc:
            raise AccountError(f"the accounts cannot be used: {exc}") from exc

    def _fetch(self) -> tuple[int, dict[str, Member]]:
        with self._connection() as connection:
            row = connection.execute("SELECT version FROM accounts_version").fetchone()
            rows = connection.execute("SELECT address, password_hash, aliases FROM accounts").fetchall()
        members = {
            address: Member(address, password_hash, tuple(aliases))
            for address, password_hash, aliases in rows
        }
        return (int(row[0]) if row else 0), members

    def _read(self, path: Path) -> dict[str, Member]:  # type: ignore[override]
        return self._fetch()[1]

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        try:
            with self._database.connection() as connection:
                connection.execute("SELECT pg_advisory_xact_lock(%s)", (ACCOUNTS_LOCK,))
                self._change.connection = connection
                try:
                    yield
                finally:
                    self._change.connection = None
        except StateError as exc:
            raise AccountError(f"the accounts cannot be changed: {exc}") from exc

    def _save(self, members: dict[str, Member]) -> None:
        with self._connection() as connection:
            connection.execute("DELETE FROM accounts")
            with connection.cursor() as cursor:
                cursor.executemany(
                    "INSERT INTO accounts (address, password_hash, aliases) VALUES (%s, %s, %s)",
                    [(m.address, m.password_hash, list(m.aliases)) for m in members.values()],
                )
            row = connection.execute(
                "UPDATE accounts_version SET version = version + 1 RETURNING version"
            ).fetchone()
        self._members = members
        self._version = int(row[0]) if row else self._version

    def reload_if_changed(self) -> None:
        """Re-read the accounts if another process changed them (one small query when not).

        On an event loop it returns at once: the query would stall every session while the
        database is slow or away. The gateway polls on a thread (every two seconds), and the
        intake reloads on the thread that checks a password."""
        if _on_event_loop():
            return
        try:
            with self._connection() as connection:
                row = connection.execute("SELECT version FROM accounts_version").fetchone()
            if row is None or int(row[0]) == self._version:
                return
            self._version, self._members = self._fetch()
        except AccountError as exc:  # unreachable: the members in force are kept
            log_event(log, "accounts.reload_failed", logging.ERROR, error=str(exc))
            return
        log_event(log, "accounts.reloaded", members=len(self._members))

    def roster(self) -> Roster:
        """Who holds an account, for the policy (``gateway.policy.committee``)."""
        return _roster(self._members.values())


def _roster(members: Iterable[Member]) -> Roster:
    return Roster.of(((m.address, m.aliases) for m in members), origin=str(WHERE))


def _on_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def accounts_version(database: Database) -> int:
    """How many times the accounts were changed (0: never, the accounts are not in use)."""
    try:
        with database.connection() as connection:
            row = connection.execute("SELECT version FROM accounts_version").fetchone()
    except StateError as exc:
        raise AccountError(f"the accounts cannot be used: {exc}") from exc
    return int(row[0]) if row else 0


def read_roster(database: Database) -> Roster | None:
    """Who holds an account now, in one transaction; None while no account was ever added."""
    try:
        with database.connection() as connection:
            row = connection.execute("SELECT version FROM accounts_version").fetchone()
            rows = connection.execute("SELECT address, aliases FROM accounts").fetchall()
    except StateError as exc:
        raise AccountError(f"the accounts cannot be read: {exc}") from exc
    if not row or int(row[0]) == 0:
        return None
    return Roster.of(((address, tuple(aliases)) for address, aliases in rows), origin=str(WHERE))
