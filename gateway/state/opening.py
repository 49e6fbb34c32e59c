"""``open_state(settings) -> State``: every store of one gateway, each behind its port.

The only place that decides where the stores live (``StateLayout`` names the files under
``state_dir``). Opening the state creates nothing and takes no lock: each store is created or opened
when a caller first asks for it (``state.ledger.open()``), so a CLI command touches only the stores it
needs, and read-only commands can run beside the gateway.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Generic, TypeVar

from gateway.settings import GatewaySettings
from gateway.state.accounts import Accounts
from gateway.state.audit_later import FileAudit
from gateway.state.fingerprints import FingerprintStore
from gateway.state.holds import HoldStore
from gateway.state.holds_port import HoldsPort
from gateway.state.layout import AUDIT_LATER_DIRNAME, StateLayout
from gateway.state.ledger import Ledger
from gateway.state.overrides import OverrideStore
from gateway.state.ports import (
    AccountsPort,
    AuditPort,
    CasesPort,
    FingerprintsPort,
    LedgerOpener,
    LedgerPort,
    Opener,
    OverridesPort,
    QueuePort,
)
from gateway.state.registry import CaseRegistry
from gateway.state.spool import Spool

T = TypeVar("T")


@dataclass(frozen=True)
class State:
    """The stores of one gateway. Each field is typed with its port, so mypy checks the backends."""

    queue: Opener[QueuePort]
    holds: Opener[HoldsPort]
    audit: AuditPort
    ledger: LedgerOpener
    fingerprints: Opener[FingerprintsPort]
    cases: CasesPort
    accounts: Opener[AccountsPort]
    layout: StateLayout  # the files backend's paths (TLS material, messages naming a folder)
    overrides: Opener[OverridesPort]


@dataclass(frozen=True)
class _FileOpener(Generic[T]):
    """A store in one file or folder, made by ``factory`` when opened."""

    path: Path
    factory: Callable[[Path], T]
    companions: tuple[Path, ...] = ()  # files the store needs besides ``path`` (a key)

    def exists(self) -> bool:
        return self.path.exists() and all(path.exists() for path in self.companions)

    def open(self) -> T:
        return self.factory(self.path)


@dataclass(frozen=True)
class _FileLedger:
    path: Path

    def exists(self) -> bool:
        return self.path.exists()

    def open(self) -> LedgerPort:
        return Ledger.open(self.path)

    def open_read_only(self) -> LedgerPort | None:
        return Ledger.open_read_only(self.path)


def _override_store(path: Path) -> OverridesPort:
    return OverrideStore.open(path)


def _hold_store(path: Path) -> HoldsPort:
    return HoldStore(path)


def open_state(settings: GatewaySettings) -> State:
    """The gateway's stores, as the settings place them (nothing is created or locked yet)."""
    files = _open_files_state(settings)
    if settings.state.backend == "postgresql":
        return _open_postgresql_state(settings, files)
    return files


def _open_postgresql_state(settings: GatewaySettings, files: State) -> State:
    """The PostgreSQL backend: the queue, the holds, the audit trail, the ledger, the case registry
    and the fingerprints. Not yet in PostgreSQL (still files under ``state_dir``): accounts (the
    policy reads the roster from the users file itself, so accounts move only together with that
    read)."""
    from gateway.state.postgresql.audit import PostgresqlAudit
    from gateway.state.postgresql.opening import (
        DatabaseSource,
        HoldsOpener,
        PostgresqlFingerprintsOpener,
        PostgresqlLedgerOpener,
        QueueOpener,
    )
    from gateway.state.postgresql.registry import PostgresqlCaseRegistry

    source = DatabaseSource(settings.state.postgresql)
    return replace(
        files,
        queue=QueueOpener(source, lease_seconds=settings.state.postgresql.lease_seconds),
        holds=HoldsOpener(source),
        audit=PostgresqlAudit(source),
        ledger=PostgresqlLedgerOpener(source),
        cases=PostgresqlCaseRegistry(settings, source),
        fingerprints=PostgresqlFingerprintsOpener(source, files.layout.fingerprint_key),
    )


def _open_files_state(settings: GatewaySettings) -> State:
    layout = StateLayout(settings.state_dir)
    queue: _FileOpener[QueuePort] = _FileOpener(layout.spool, Spool)
    holds: _FileOpener[HoldsPort] = _FileOpener(layout.holds, _hold_store)

    def fingerprint_store(path: Path) -> FingerprintsPort:
        return FingerprintStore.open_files(path, layout.fingerprint_key)

    fingerprints: _FileOpener[FingerprintsPort] = _FileOpener(
        layout.fingerprints, fingerprint_store, companions=(layout.fingerprint_key,)
    )
    accounts: _FileOpener[AccountsPort] = _FileOpener(settings.auth.users_file, Accounts.load)
    return State(
        queue=queue,
        holds=holds,
        audit=FileAudit(
            layout.audit,
            later=layout.audit_later,
            holds_outbox=layout.holds_outbox,
            expunge_pending=layout.expunge_pending,
        ),
        ledger=_FileLedger(layout.ledger),
        fingerprints=fingerprints,
        cases=CaseRegistry.from_settings(settings),
        accounts=accounts,
        layout=layout,
        overrides=_FileOpener(layout.overrides, _override_store),
    )


def audit_folder(directory: Path) -> AuditPort:
    """The audit trail in ``directory``, read where it lies (``audit --audit-dir``: a backup copy too)."""
    return FileAudit(directory, later=directory.parent / AUDIT_LATER_DIRNAME)
