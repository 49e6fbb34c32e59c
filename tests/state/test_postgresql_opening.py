"""``open_state`` on PostgreSQL: the queue and the holds in the database, its schema checked first."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.errors import ConfigError, SchemaMismatch
from gateway.settings import GatewaySettings, load_settings
from gateway.state.holds import HoldStore
from gateway.state.opening import open_state
from gateway.state.postgresql.holds import PostgresHolds
from gateway.state.postgresql.opening import close_shared_databases
from gateway.state.postgresql.queue import LEASE_SECONDS, PostgresQueue
from gateway.state.spool import QueueState, Spool, SpoolEnvelope
from tests.cli.conftest import write_config
from tests.postgresql import ScratchDatabase

from .test_holds import record


@pytest.fixture(autouse=True)
def closing() -> Iterator[None]:
    yield
    close_shared_databases()  # the pools open_state made for this test's database


def settings_for(folder: Path, database: ScratchDatabase, more: str = "") -> GatewaySettings:
    folder.mkdir(exist_ok=True)
    secret = folder / "pg-password"
    secret.write_text(database.password + "\n")
    secret.chmod(0o600)
    extra = f"""
        state:
          backend: postgresql
          postgresql:
            dsn: "{database.dsn}"
            password_file: {secret}
            connect_timeout: 2
        """
    return load_settings(write_config(folder, extra + more))


async def test_two_gateways_on_one_database_share_the_queue_and_the_holds(
    tmp_path: Path, pg_database: ScratchDatabase
) -> None:
    first = open_state(settings_for(tmp_path / "a", pg_database))
    second = open_state(settings_for(tmp_path / "b", pg_database))
    queue = first.queue.open()
    assert isinstance(queue, PostgresQueue)
    sent = SpoolEnvelope(
        Spool.new_queue_id(), "ada@example.org", ("bob@example.net",), "ada@example.org", time.time()
    )
    await queue.commit(sent, b"Subject: hi\r\n\r\nhello\r\n")
    assert second.queue.open().locate(sent.queue_id) is QueueState.INCOMING
    holds = first.holds.open()
    assert isinstance(holds, PostgresHolds)
    holds.create(record(), b"o", b"r")
    assert second.holds.open().get("Q1") == record()
    assert not (tmp_path / "a" / "state" / "spool").exists()


def test_a_database_not_migrated_is_refused_before_any_store_is_used(
    tmp_path: Path, pg_empty_database: ScratchDatabase
) -> None:
    state = open_state(settings_for(tmp_path, pg_empty_database))
    with pytest.raises(SchemaMismatch, match="state migrate"):
        state.queue.open()


def test_the_files_backend_is_unchanged(tmp_path: Path) -> None:
    state = open_state(load_settings(write_config(tmp_path)))
    assert isinstance(state.queue.open(), Spool)
    assert isinstance(state.holds.open(), HoldStore)


def test_the_lease_comes_from_the_settings(tmp_path: Path, pg_database: ScratchDatabase) -> None:
    default = open_state(settings_for(tmp_path / "a", pg_database)).queue.open()
    assert isinstance(default, PostgresQueue) and default.lease_seconds == LEASE_SECONDS == 60
    short = open_state(settings_for(tmp_path / "b", pg_database, "    lease_seconds: 5s\n")).queue.open()
    assert isinstance(short, PostgresQueue) and short.lease_seconds == 5


@pytest.mark.parametrize("lease", ["1s", "0.5", "2h", "0"])
def test_a_lease_outside_two_seconds_to_an_hour_is_refused_naming_the_key(
    tmp_path: Path, pg_database: ScratchDatabase, lease: str
) -> None:
    with pytest.raises(ConfigError, match="lease_seconds"):
        settings_for(tmp_path, pg_database, f"    lease_seconds: {lease}\n")
