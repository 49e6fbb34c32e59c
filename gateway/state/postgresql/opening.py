"""The PostgreSQL stores as ``open_state`` hands them out: one connection pool per process, opened lazily.

Nothing connects until a store is opened; the first store opened connects the pool and checks that
the database's schema is the one this version ships (``SchemaMismatch`` otherwise: a gateway never
runs on an unknown schema). Every store of the process then shares that pool, however many times
``open_state`` is called; it is closed when the process exits.
"""

from __future__ import annotations

import atexit
import threading
from dataclasses import dataclass

from gateway.settings import PostgresqlSettings
from gateway.state.holds_port import HoldsPort
from gateway.state.ports import QueuePort
from gateway.state.postgresql.database import Database
from gateway.state.postgresql.holds import PostgresHolds
from gateway.state.postgresql.migrate import require_current
from gateway.state.postgresql.queue import PostgresQueue

_databases: dict[str, Database] = {}
_databases_lock = threading.Lock()


def _close_at_exit() -> None:
    close_databases()


@dataclass(frozen=True)
class SharedDatabase:
    """The process's pool for ``settings``: made (and its schema checked) on first use, then shared
    by every store and every ``open_state`` of the process that names the same database."""

    settings: PostgresqlSettings

    def get(self) -> Database:
        key = self.settings.model_dump_json()
        with _databases_lock:
            database = _databases.get(key)
            if database is None:
                database = Database.from_settings(self.settings)
                try:
                    require_current(database)
                except BaseException:
                    database.close()
                    raise
                if not _databases:
                    atexit.register(_close_at_exit)
                _databases[key] = database
            return database


def close_databases() -> None:
    """Close every pool this process opened (at exit; tests, between two databases)."""
    with _databases_lock:
        databases = list(_databases.values())
        _databases.clear()
    for database in databases:
        database.close()


@dataclass(frozen=True)
class QueueOpener:
    """``state.queue`` on PostgreSQL."""

    database: SharedDatabase

    def exists(self) -> bool:
        return True  # a table of the migrated schema (opening checks the schema)

    def open(self) -> QueuePort:
        return PostgresQueue(self.database.get().connection, name="")


@dataclass(frozen=True)
class HoldsOpener:
    """``state.holds`` on PostgreSQL."""

    database: SharedDatabase

    def exists(self) -> bool:
        return True

    def open(self) -> HoldsPort:
        return PostgresHolds(self.database.get().connection)
