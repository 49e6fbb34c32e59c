"""The store contract fixture: ``state`` is one gateway's ``State`` on each backend in turn.

``files`` is the state folder in a temporary directory; ``postgresql`` is a fresh migrated database
of the session's private cluster (tests/postgresql.py). A test using ``state`` runs once per
backend, so both implementations of a port are held to the same assertions.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.settings import GatewaySettings
from gateway.state.opening import State, open_state
from gateway.state.postgresql.opening import close_shared_databases
from gateway.state.registry import generate_key

BACKENDS = ("files", "postgresql")


def backend_settings(request: pytest.FixtureRequest, folder: Path, backend: str) -> GatewaySettings:
    """Settings for ``backend`` with everything private to ``folder``."""
    key_file = folder / "registry.key"
    key_file.write_text(generate_key() + "\n")
    data: dict[str, object] = {
        "state_dir": str(folder / "state"),
        "auth": {"users_file": "users.passwd"},
        "registry": {"key_env": None, "key_file": str(key_file)},
    }
    if backend == "postgresql":
        database = request.getfixturevalue("pg_database")
        secret = folder / "pg-password"
        secret.write_text(database.password + "\n")
        data["state"] = {
            "backend": "postgresql",
            "postgresql": {"dsn": database.dsn, "password_file": str(secret), "connect_timeout": 5},
        }
    return GatewaySettings.model_validate(data).resolve(folder)


@pytest.fixture(params=BACKENDS)
def state_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def state_settings(
    request: pytest.FixtureRequest, tmp_path: Path, state_backend: str
) -> Iterator[GatewaySettings]:
    yield backend_settings(request, tmp_path, state_backend)
    close_shared_databases()


@pytest.fixture
def state(state_settings: GatewaySettings) -> State:
    return open_state(state_settings)


@pytest.fixture
def postgresql_settings(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[GatewaySettings]:
    """Settings on the PostgreSQL backend only (for what only that backend does)."""
    yield backend_settings(request, tmp_path, "postgresql")
    close_shared_databases()
