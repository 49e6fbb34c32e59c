"""Gateways sharing one PostgreSQL database (issue 16): their settings and the keys they must share.

Every gateway of an installation names the same database and holds the same two keys, which never go
to the database: the case registry's and ``fingerprints.key`` (docs/operations/postgresql.md).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from gateway.settings import load_settings
from gateway.state.accounts import Accounts
from gateway.state.fingerprints import load_or_create_key
from gateway.state.opening import open_state
from gateway.state.postgresql.opening import close_shared_databases
from gateway.state.registry import generate_key
from tests.e2e.clients import Account
from tests.e2e.gateway_process import GatewayProcess
from tests.postgresql import ScratchDatabase


def postgresql_state(folder: Path, database: ScratchDatabase, **postgresql: Any) -> dict[str, Any]:
    """Settings overrides putting a gateway's stores in ``database`` (password and registry key in
    files under ``folder``, written once and shared by every gateway made with them)."""
    folder.mkdir(parents=True, exist_ok=True)
    secret, registry_key = folder / "pg-password", folder / "registry.key"
    if not secret.exists():
        secret.write_text(database.password + "\n")
        secret.chmod(0o600)
        registry_key.write_text(generate_key() + "\n")
        registry_key.chmod(0o600)
    return {
        "registry": {"key_env": None, "key_file": str(registry_key)},
        "state": {
            "backend": "postgresql",
            "postgresql": {
                "dsn": database.dsn,
                "password_file": str(secret),
                "connect_timeout": "5s",
                **postgresql,
            },
        },
    }


def share_fingerprint_key(gateways: list[GatewayProcess], folder: Path) -> None:
    """Give every gateway the same ``fingerprints.key`` (made once in ``folder``) before it starts."""
    key = folder / "fingerprints.key"
    load_or_create_key(key)
    for gateway in gateways:
        gateway.state_dir.mkdir(parents=True, exist_ok=True)
        shutil.copy(key, gateway.state_dir / "fingerprints.key")
        (gateway.state_dir / "fingerprints.key").chmod(0o600)


def add_accounts(gateway: GatewayProcess, accounts: Iterable[Account]) -> None:
    """Add the accounts ``gateway``'s users file lacks. In this process (``user add`` is tested
    elsewhere): a CLI start per account costs a second, and these tests add many."""
    users = Accounts.load(gateway.users_file)
    for account in accounts:
        if account.address.lower() not in users.members():
            users.add(account.address, account.password)


def add_database_accounts(gateway: GatewayProcess, accounts: Iterable[Account]) -> None:
    """Add the accounts the shared database lacks, through ``gateway``'s settings (on PostgreSQL
    the accounts live in the database, seen by every gateway; ``user add`` is tested elsewhere)."""
    state = open_state(load_settings(gateway.config_path))
    try:
        users = state.accounts.open()
        for account in accounts:
            if account.address.lower() not in users.members():
                users.add(account.address, account.password)
    finally:
        close_shared_databases()
