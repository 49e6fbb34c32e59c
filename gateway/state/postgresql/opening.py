"""The PostgreSQL stores as ``open_state`` hands them out: one connection pool per process, opened lazily.

Nothing connects until a store is opened; the first store opened connects the pool and checks that
the database's schema is the one this version ships (``SchemaMismatch`` otherwise: a gateway never
runs on an unknown schema). Every store of the process then shares that pool.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from gateway.settings import PostgresqlSettings
from gateway.state.holds_port import HoldsPort
from gateway.state.ports import QueuePort
from gateway.state.postgresql.database import Database
from gateway.state.postgresql.holds import PostgresHolds
from gateway.state.postgresql.migrate import require_current
from gateway.state.postgresql.queue import PostgresQueue


@dataclass
class SharedDatabase:
    """The process's pool for ``settings``, made (and its schema checked) on first use."""

    settings: PostgresqlSettings
    _database: Database | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def get(self) -> Database:
        with self._lock:
            if self._database is None:
                database = Database.from_settings(self.settings)
                try:
                    require_current(database)
                except BaseException:
                    database.close()
                    raise
                self._database = database
            return self._database


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
