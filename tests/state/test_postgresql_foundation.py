"""The PostgreSQL foundation against a real private cluster: connections, errors, migrations."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import psycopg
import pytest

from gateway.errors import ConfigError, SchemaMismatch, StateError, StateUnavailable
from gateway.settings import PostgresqlSettings
from gateway.state.postgresql.database import IDLE_CHECK_AFTER, Database, describe, read_password
from gateway.state.postgresql.migrate import available, migrate, require_current, schema_status
from tests.postgresql import PostgresCluster, ScratchDatabase, free_port


def test_a_transaction_commits_when_the_block_ends(pg_db: Database) -> None:
    with pg_db.connection() as connection:
        connection.execute("CREATE TABLE t (x int)")
        connection.execute("INSERT INTO t VALUES (1)")
    with pg_db.connection() as connection:
        assert connection.execute("SELECT count(*) FROM t").fetchone() == (1,)


def test_a_block_that_raises_is_rolled_back(pg_db: Database) -> None:
    with pg_db.connection() as connection:
        connection.execute("CREATE TABLE t (x int)")
    with pytest.raises(RuntimeError), pg_db.connection() as connection:
        connection.execute("INSERT INTO t VALUES (1)")
        raise RuntimeError("abandon")
    with pg_db.connection() as connection:
        assert connection.execute("SELECT count(*) FROM t").fetchone() == (0,)


def test_a_database_error_escapes_as_state_error_without_the_values(pg_db: Database) -> None:
    with pg_db.connection() as connection:
        connection.execute("CREATE TABLE t (x text PRIMARY KEY)")
        connection.execute("INSERT INTO t VALUES ('maya@example.org')")
    with pytest.raises(StateError) as caught, pg_db.connection() as connection:
        connection.execute("INSERT INTO t VALUES ('maya@example.org')")
    assert not isinstance(caught.value, StateUnavailable)
    assert "23505" in str(caught.value)
    assert "maya" not in str(caught.value)


def test_a_server_that_cannot_be_reached_is_state_unavailable() -> None:
    dsn = f"host=127.0.0.1 port={free_port()} dbname=x user=x"
    with (
        Database.connect(dsn, timeout=1) as database,
        pytest.raises(StateUnavailable, match="cannot be reached"),
    ):
        database.ping()


def test_commits_wait_for_the_disk_even_where_the_server_says_off(pg_database: ScratchDatabase) -> None:
    with pg_database.cluster.admin() as admin:
        admin.execute(f'ALTER DATABASE "{pg_database.name}" SET synchronous_commit = off'.encode())
    with pg_database.connect() as database, database.connection() as connection:
        assert connection.execute("SHOW synchronous_commit").fetchone() == ("on",)
        assert connection.execute("SHOW TimeZone").fetchone() == ("UTC",)


def test_a_wrong_password_is_state_unavailable_naming_the_database(pg_database: ScratchDatabase) -> None:
    with (
        Database.connect(pg_database.dsn, password="wrong", timeout=2) as database,
        pytest.raises(StateUnavailable) as caught,
    ):
        database.ping()
    assert pg_database.name in str(caught.value)
    assert "wrong" not in str(caught.value)


def test_the_password_comes_from_the_variable_then_the_file(tmp_path: Path) -> None:
    secret = tmp_path / "pg-password"
    secret.write_text("from-file\n")
    both = PostgresqlSettings(dsn="host=db.example.org", password_env="PG_SECRET", password_file=secret)
    assert read_password(both, {"PG_SECRET": "from-env"}) == "from-env"
    with pytest.raises(ConfigError, match="PG_SECRET, which is not set"):
        read_password(both, {})
    assert read_password(PostgresqlSettings(dsn="host=x", password_file=secret), {}) == "from-file"
    assert read_password(PostgresqlSettings(dsn="host=x"), {}) is None  # libpq's own sources
    with pytest.raises(ConfigError, match="cannot read"):
        read_password(PostgresqlSettings(dsn="host=x", password_file=tmp_path / "missing"), {})


def test_the_database_is_described_without_secrets() -> None:
    assert describe("host=db.example.org port=5433 user=gw dbname=conduct") == (
        "postgresql://gw@db.example.org:5433/conduct"
    )


def test_the_shipped_migrations_are_numbered_uniquely_from_one() -> None:
    versions = [migration.version for migration in available()]
    assert versions == sorted(set(versions))
    assert versions[0] == 1


def test_an_empty_database_is_pending_then_current_after_migrate(pg_empty_database: ScratchDatabase) -> None:
    with pg_empty_database.connect() as database:
        status = schema_status(database)
        assert status.state == "pending"
        assert len(status.pending) == len(available())
        with pytest.raises(SchemaMismatch, match="state migrate"):
            require_current(database)
        applied = migrate(database)
        assert [m.version for m in applied] == [m.version for m in available()]
        assert schema_status(database).state == "current"
        require_current(database)
        assert migrate(database) == ()  # nothing left to do


def test_two_gateways_migrating_at_once_apply_each_migration_once(pg_empty_database: ScratchDatabase) -> None:
    results: list[int] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            with pg_empty_database.connect() as database:
                results.append(len(migrate(database)))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    # Between them they applied each migration once (they may take turns, one file each).
    assert sum(results) == len(available())
    with pg_empty_database.connect() as database:
        assert schema_status(database).state == "current"


def test_a_schema_from_a_newer_gateway_is_unknown_and_never_migrated(pg_db: Database) -> None:
    newer = max(m.version for m in available()) + 1
    with pg_db.connection() as connection:
        connection.execute(
            "INSERT INTO schema_migrations (version, name, checksum) VALUES (%s, 'later', 'x')", (newer,)
        )
    status = schema_status(pg_db)
    assert status.state == "unknown"
    assert status.unknown == (newer,)
    with pytest.raises(SchemaMismatch, match="newer conduct-gateway"):
        require_current(pg_db)
    with pytest.raises(SchemaMismatch):
        migrate(pg_db)


def test_an_applied_migration_changed_since_is_unknown(pg_db: Database) -> None:
    with pg_db.connection() as connection:
        connection.execute("UPDATE schema_migrations SET checksum = 'edited' WHERE version = 1")
    status = schema_status(pg_db)
    assert (status.state, status.changed) == ("unknown", (1,))
    assert "different file" in status.explain(pg_db.where)


def test_the_cluster_survives_a_stop_and_start(
    pg_cluster: PostgresCluster, pg_database: ScratchDatabase
) -> None:
    with pg_database.connect(timeout=2) as database:
        database.ping()
        pg_cluster.stop()
        try:
            with pytest.raises(StateUnavailable):
                database.ping()
        finally:
            pg_cluster.start()
        database.ping()  # the pool reconnects once the server is back


def test_the_cluster_refuses_a_connection_without_the_password(pg_database: ScratchDatabase) -> None:
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(pg_database.dsn, password="", connect_timeout=2).close()


def test_the_first_call_after_a_long_outage_finds_the_server_back(
    pg_cluster: PostgresCluster, pg_database: ScratchDatabase
) -> None:
    # The pool retries a lost server with a growing delay (1 s, 2 s, 4 s...): after an outage of
    # many seconds its next try could be far off, and calls after the server's return would still
    # fail. Retrying at least once per connect_timeout keeps that gap under one timeout.
    with pg_database.connect(timeout=1) as database:
        database.ping()
        pg_cluster.stop()
        try:
            outage_ends = time.monotonic() + 8  # past the pool's tries at 1, 3 and 7 s
            while time.monotonic() < outage_ends:
                with pytest.raises(StateUnavailable):
                    database.ping()
        finally:
            pg_cluster.start()
        time.sleep(1)  # one timeout: the pool's next try
        database.ping()


def test_a_connection_left_idle_through_a_restart_is_never_handed_out(
    pg_cluster: PostgresCluster, pg_database: ScratchDatabase
) -> None:
    # A process that made no call during the outage (a policy worker between messages) still holds
    # the connections the server closed when it stopped: its first call after the server is back
    # must get a working one, not fail as "lost the connection".
    with pg_database.connect(timeout=2) as database:
        database.ping()
        pg_cluster.stop()
        pg_cluster.start()
        time.sleep(IDLE_CHECK_AFTER)
        database.ping()
