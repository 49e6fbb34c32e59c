"""The PostgreSQL backend's stores for ``open_state``, and the one pool each process shares.

Nothing connects until a store is first used; then the schema is checked once (a gateway never
runs on an unknown or unmigrated schema: ``SchemaMismatch`` says to run ``state migrate``). A pool
belongs to the process that made it: a forked child (a policy worker) makes its own.
"""

from __future__ import annotations

import atexit
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from gateway.login_throttle import SharedCounts
from gateway.policy.committee import Roster
from gateway.settings import PostgresqlSettings
from gateway.state.fingerprints import load_or_create_key
from gateway.state.holds_port import HoldsPort
from gateway.state.ports import (
    AccountsPort,
    CountedKind,
    FingerprintsPort,
    LedgerPort,
    OverridesPort,
    QueuePort,
)
from gateway.state.postgresql.accounts import PostgresqlAccounts, accounts_version, read_roster
from gateway.state.postgresql.database import Database
from gateway.state.postgresql.fingerprints import PostgresqlFingerprintStore
from gateway.state.postgresql.holds import PostgresHolds
from gateway.state.postgresql.ledger import PostgresqlLedger
from gateway.state.postgresql.migrate import require_current
from gateway.state.postgresql.overrides import PostgresqlOverrides
from gateway.state.postgresql.queue import LEASE_SECONDS, PostgresQueue
from gateway.state.postgresql.shared_counts import SharedCountsRegistry

_pools: dict[tuple[int, PostgresqlSettings], Database] = {}
_counts: dict[tuple[int, PostgresqlSettings], SharedCountsRegistry] = {}
_pools_lock = threading.Lock()


def shared_database(settings: PostgresqlSettings) -> Database:
    """This process's pool for ``settings``, connected and its schema checked on first use."""
    key = (os.getpid(), settings)
    with _pools_lock:
        database = _pools.get(key)
        if database is None:
            database = Database.from_settings(settings)
            try:
                require_current(database)
            except BaseException:
                database.close()
                raise
            if not _pools:
                atexit.register(close_shared_databases)
            _pools[key] = database
        return database


def close_shared_databases() -> None:
    """Close this process's pools (at exit, and in tests between databases)."""
    with _pools_lock:
        for (pid, _settings), database in list(_pools.items()):
            if pid == os.getpid():
                database.close()
        _pools.clear()
        _counts.clear()


@dataclass(frozen=True)
class DatabaseSource:
    """A way to the shared pool that connects only when first asked (``open_state`` creates nothing)."""

    settings: PostgresqlSettings

    def __call__(self) -> Database:
        return shared_database(self.settings)


@dataclass(frozen=True)
class PostgresqlLedgerOpener:
    """The ledger: always there once the schema is (``exists`` is True)."""

    source: DatabaseSource

    def exists(self) -> bool:
        return True

    def open(self) -> LedgerPort:
        return PostgresqlLedger(self.source())

    def open_read_only(self) -> LedgerPort | None:
        return PostgresqlLedger(self.source())


@dataclass(frozen=True)
class PostgresqlFingerprintsOpener:
    """The shared fingerprints, keyed with this gateway's ``fingerprints.key`` (made if missing: the
    first gateway's; the others must have a copy, or opening is refused)."""

    source: DatabaseSource
    key_file: Path

    def exists(self) -> bool:
        return self.key_file.exists()

    def open(self) -> FingerprintsPort:
        return PostgresqlFingerprintStore(self.source(), load_or_create_key(self.key_file))


@dataclass(frozen=True)
class QueueOpener:
    """The queue: accepted messages and their delivery status, shared by every instance."""

    source: DatabaseSource
    # How long a dead instance's claims outlive it (``state.postgresql.lease_seconds``).
    lease_seconds: float = LEASE_SECONDS

    def exists(self) -> bool:
        return True  # a table of the schema, checked when first used

    def open(self) -> QueuePort:
        return PostgresQueue(self.source().connection, lease_seconds=self.lease_seconds)


@dataclass(frozen=True)
class HoldsOpener:
    """The holds and their review tokens, shared by every instance."""

    source: DatabaseSource

    def exists(self) -> bool:
        return True

    def open(self) -> HoldsPort:
        return PostgresHolds(self.source().connection)


@dataclass(frozen=True)
class AccountsOpener:
    """The accounts, shared by every instance (``exists`` once any account was ever added)."""

    source: DatabaseSource

    def exists(self) -> bool:
        return accounts_version(self.source()) > 0

    def open(self) -> AccountsPort:
        return PostgresqlAccounts(self.source())

    def roster(self) -> Roster | None:
        return read_roster(self.source())

    def seen(self) -> object:
        return accounts_version(self.source())


@dataclass(frozen=True)
class SharedCountsOpener:
    """This process's rate-limit counters on the shared database (one set, whoever asks)."""

    source: DatabaseSource
    shared = True

    def _registry(self) -> SharedCountsRegistry:
        key = (os.getpid(), self.source.settings)
        database = self.source()
        with _pools_lock:
            registry = _counts.get(key)
            if registry is None:
                registry = _counts[key] = SharedCountsRegistry(database)
            return registry

    def counter(self, kind: CountedKind, window: float) -> SharedCounts | None:
        return self._registry().counter(kind, window)

    def sync(self) -> None:
        self._registry().sync()


@dataclass(frozen=True)
class OverridesOpener:
    """Override tokens, overrides and report keys, shared by every instance."""

    source: DatabaseSource

    def exists(self) -> bool:
        return True

    def open(self) -> OverridesPort:
        return PostgresqlOverrides(self.source())
