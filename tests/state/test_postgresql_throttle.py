"""The login throttle shared by several gateways through PostgreSQL."""

from __future__ import annotations

import pytest

from gateway.errors import StateUnavailable
from gateway.state.postgresql.database import Database
from gateway.state.postgresql.throttle import SharedLoginThrottle
from tests.postgresql import ScratchDatabase

CLIENT = "192.0.2.7"


def test_failures_on_two_gateways_add_up_after_a_sync(pg_db: Database) -> None:
    first = SharedLoginThrottle(pg_db, max_failures=5, window=900)
    second = SharedLoginThrottle(pg_db, max_failures=5, window=900)
    for _ in range(3):
        first.record_failure(CLIENT)
    for _ in range(2):
        second.record_failure(CLIENT)
    assert not first.blocked(CLIENT) and not second.blocked(CLIENT)
    first.sync()
    second.sync()
    first.sync()
    assert first.blocked(CLIENT) and second.blocked(CLIENT)
    assert not first.blocked("198.51.100.1")


def test_a_gateways_own_failures_are_not_counted_twice(pg_db: Database) -> None:
    throttle = SharedLoginThrottle(pg_db, max_failures=5, window=900)
    for _ in range(4):
        throttle.record_failure(CLIENT)
    throttle.sync()
    throttle.sync()
    assert not throttle.blocked(CLIENT)  # 4 of its own, counted once
    throttle.record_failure(CLIENT)
    assert throttle.blocked(CLIENT)  # the local limit applies at once, before any sync


def test_failures_older_than_the_window_are_forgotten_and_deleted(pg_db: Database) -> None:
    with pg_db.connection() as connection:
        for _ in range(5):
            connection.execute(
                "INSERT INTO login_failures (client, failed_at) VALUES (%s, now() - interval '1 hour')",
                (CLIENT,),
            )
    throttle = SharedLoginThrottle(pg_db, max_failures=5, window=900)
    throttle.sync()
    assert not throttle.blocked(CLIENT)
    with pg_db.connection() as connection:
        assert connection.execute("SELECT count(*) FROM login_failures").fetchone() == (0,)


def test_failures_not_sent_when_the_database_is_down_are_sent_later(pg_database: ScratchDatabase) -> None:
    with pg_database.connect(timeout=2) as database:
        throttle = SharedLoginThrottle(database, max_failures=3, window=900)
        throttle.record_failure(CLIENT)
        pg_database.cluster.stop()
        try:
            with pytest.raises(StateUnavailable):
                throttle.sync()
        finally:
            pg_database.cluster.start()
        throttle.sync()
        with database.connection() as connection:
            assert connection.execute("SELECT count(*) FROM login_failures").fetchone() == (1,)
