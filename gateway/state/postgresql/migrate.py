"""The schema's versions: ``migrations/NNNN_name.sql`` applied in order, each in its own transaction.

``schema_migrations`` records each applied version with the SHA-256 of its file. ``schema_status``
compares it with the files this version ships: ``current`` (a gateway may run), ``pending`` (run
``conduct-gateway state migrate``) or ``unknown`` (a newer gateway migrated the database, or an
applied file was changed: this version must not run on it). Concurrent ``migrate`` calls (two
gateways upgraded at once) are serialised by an advisory lock; each applies only what is missing.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources
from typing import Literal

from gateway.errors import SchemaMismatch
from gateway.state.postgresql.database import Connection, Database

_FILE_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
# pg_advisory_xact_lock key for migrations: any constant no other application uses ("cgmigrat").
MIGRATION_LOCK = 0x63676D6967726174

_BOOTSTRAP = b"""
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    checksum   text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


@dataclass(frozen=True)
class Migration:
    """One file of ``migrations/``."""

    version: int
    name: str
    sql: bytes

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql).hexdigest()

    @property
    def label(self) -> str:
        return f"{self.version:04d}_{self.name}"


def available() -> tuple[Migration, ...]:
    """The migrations this version ships, in order of their numbers (unique; a gap is allowed, so
    branches can reserve numbers: 0002 is the queue's and holds')."""
    found: list[Migration] = []
    for item in resources.files(__package__).joinpath("migrations").iterdir():
        match = _FILE_NAME.match(item.name)
        if match:
            found.append(Migration(int(match.group(1)), match.group(2), item.read_bytes()))
    found.sort(key=lambda migration: migration.version)
    versions = [migration.version for migration in found]
    if len(set(versions)) != len(versions) or (versions and versions[0] != 1):
        raise RuntimeError(f"migrations must be numbered uniquely from 1, found {versions}")
    return tuple(found)


@dataclass(frozen=True)
class SchemaStatus:
    """How the database's schema compares with the migrations this version ships."""

    state: Literal["current", "pending", "unknown"]
    applied: tuple[int, ...]
    pending: tuple[Migration, ...]
    unknown: tuple[int, ...]  # applied versions this version does not ship (a newer gateway's)
    changed: tuple[int, ...]  # applied versions whose file differs from the one applied

    @property
    def version(self) -> int:
        return max(self.applied, default=0)

    def explain(self, where: str) -> str:
        """One paragraph for admins: what the state is, and what to do."""
        if self.state == "current":
            return f"{where}: schema version {self.version}, current"
        if self.state == "pending":
            names = ", ".join(migration.label for migration in self.pending)
            return (
                f"{where}: schema version {self.version}, {len(self.pending)} migration(s) to apply "
                f"({names}); run: conduct-gateway state migrate"
            )
        problems = []
        if self.unknown:
            problems.append(
                f"version(s) {', '.join(map(str, self.unknown))} applied by a newer conduct-gateway; "
                "run that version (or newer) here"
            )
        if self.changed:
            problems.append(
                f"version(s) {', '.join(map(str, self.changed))} applied from a different file than "
                "this version ships"
            )
        return f"{where}: unknown schema: {'; '.join(problems)}. This gateway will not run on it."


def _applied(connection: Connection) -> dict[int, str]:
    row = connection.execute("SELECT to_regclass('schema_migrations')").fetchone()
    if row is None or row[0] is None:
        return {}
    return dict(connection.execute("SELECT version, checksum FROM schema_migrations").fetchall())


def _status(applied: dict[int, str]) -> SchemaStatus:
    shipped = {migration.version: migration for migration in available()}
    unknown = tuple(sorted(version for version in applied if version not in shipped))
    changed = tuple(
        sorted(
            version
            for version, checksum in applied.items()
            if version in shipped and shipped[version].checksum != checksum
        )
    )
    pending = tuple(shipped[version] for version in sorted(shipped) if version not in applied)
    state: Literal["current", "pending", "unknown"]
    state = "unknown" if unknown or changed else "pending" if pending else "current"
    return SchemaStatus(state, tuple(sorted(applied)), pending, unknown, changed)


def schema_status(database: Database) -> SchemaStatus:
    """Compare the database with the shipped migrations (read only)."""
    with database.connection() as connection:
        return _status(_applied(connection))


def require_current(database: Database) -> None:
    """``SchemaMismatch`` unless the schema is exactly the one this version ships."""
    status = schema_status(database)
    if status.state != "current":
        raise SchemaMismatch(status.explain(database.where))


def migrate(database: Database) -> tuple[Migration, ...]:
    """Apply every pending migration, in order, each in its own transaction; what was applied.

    Refuses (``SchemaMismatch``) a database with an unknown schema, changing nothing.
    """
    done: list[Migration] = []
    while True:
        with database.connection() as connection:
            connection.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            connection.execute(_BOOTSTRAP)
            status = _status(_applied(connection))
            if status.state == "unknown":
                raise SchemaMismatch(status.explain(database.where))
            if not status.pending:
                return tuple(done)
            migration = status.pending[0]
            connection.execute(migration.sql)
            connection.execute(
                "INSERT INTO schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                (migration.version, migration.name, migration.checksum),
            )
            done.append(migration)
