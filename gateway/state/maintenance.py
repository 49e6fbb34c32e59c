"""The state backend's upkeep for the CLI: ``state migrate``, ``check``, ``import`` and ``export``.

The CLI reaches the PostgreSQL backend only through here and ``open_state``. The files backend has
no schema: migrating it does nothing and checking it reports its folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from gateway.settings import GatewaySettings

if TYPE_CHECKING:
    from gateway.state.postgresql.exporting import Exported
    from gateway.state.postgresql.importing import Imported


@dataclass(frozen=True)
class Migrated:
    """What ``state migrate`` did."""

    where: str
    applied: tuple[str, ...]  # migration labels (0001_foundation...), empty when already current
    version: int


@dataclass(frozen=True)
class StateReport:
    """What ``state check`` found."""

    backend: str
    where: str
    reachable: bool
    schema: str  # "current", "pending", "unknown", or "-" for the files backend
    explanation: str  # one paragraph: what is wrong and what to do, or what is fine
    version: int | None = None

    @property
    def ok(self) -> bool:
        return self.reachable and self.schema in ("current", "-")


def migrate_state(settings: GatewaySettings) -> Migrated:
    """Bring the database's schema to this version's (PostgreSQL); nothing to do for files."""
    if settings.state.backend != "postgresql":
        return Migrated(str(settings.state_dir), (), 0)
    from gateway.state.postgresql.database import Database
    from gateway.state.postgresql.migrate import migrate, schema_status

    with Database.from_settings(settings.state.postgresql) as database:
        applied = migrate(database)
        return Migrated(database.where, tuple(m.label for m in applied), schema_status(database).version)


def check_state(settings: GatewaySettings) -> StateReport:
    """Connectivity and schema (PostgreSQL), or the folder (files)."""
    if settings.state.backend != "postgresql":
        where = str(settings.state_dir)
        # Nothing to reach: the folder is made at the first start if it is missing.
        return StateReport("files", where, True, "-", f"{where}: files backend")
    from gateway.errors import StateUnavailable
    from gateway.state.postgresql.database import Database
    from gateway.state.postgresql.migrate import schema_status

    with Database.from_settings(settings.state.postgresql) as database:
        try:
            status = schema_status(database)
        except StateUnavailable as exc:
            return StateReport("postgresql", database.where, False, "?", str(exc))
        return StateReport(
            "postgresql",
            database.where,
            True,
            status.state,
            status.explain(database.where),
            status.version,
        )


def chain_head(settings: GatewaySettings) -> tuple[int, str] | None:
    """The audit trail's last entry (seq, hash), or None while it is empty."""
    from gateway.state.opening import open_state

    if settings.state.backend == "postgresql":
        from gateway.state.postgresql.audit import PostgresqlAudit
        from gateway.state.postgresql.opening import DatabaseSource

        seq, digest = PostgresqlAudit(DatabaseSource(settings.state.postgresql)).head()
        return (seq, digest) if seq else None
    last = None
    for entry in open_state(settings).audit.entries():
        last = entry
    if last is None:
        return None
    return last.seq, str(last.fields.get("hash"))


def import_files_state(settings: GatewaySettings) -> Imported:
    """Copy the files stores under ``state_dir`` into the configured PostgreSQL database."""
    if settings.state.backend != "postgresql":
        from gateway.errors import ConfigError

        raise ConfigError(
            "state import copies the files under state_dir into PostgreSQL: set state.backend to "
            "postgresql and state.postgresql.dsn first (CONDUCT_GATEWAY_STATE__BACKEND=postgresql)"
        )
    from gateway.state.postgresql.importing import import_files

    return import_files(settings)


def export_to_files(settings: GatewaySettings) -> Exported:
    """Copy the configured PostgreSQL database's stores into files under ``state_dir``."""
    if settings.state.backend != "postgresql":
        from gateway.errors import ConfigError

        raise ConfigError(
            "state export copies PostgreSQL into files under state_dir: keep state.backend postgresql "
            "and state.postgresql.dsn naming the database while exporting, then switch to files"
        )
    from gateway.state.postgresql.exporting import export_state

    return export_state(settings)
