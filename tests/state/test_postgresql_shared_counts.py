"""Rate limits counted by several gateways through PostgreSQL: failed logins and notices."""

from __future__ import annotations

import pytest

from gateway.errors import StateUnavailable
from gateway.login_throttle import LoginThrottle
from gateway.mail.notices import LimitDecision, NoticeLimiter
from gateway.state.postgresql.database import Database
from gateway.state.postgresql.shared_counts import LOGIN_FAILURES, NOTICES_SENT, SharedWindowCounts
from tests.postgresql import ScratchDatabase

CLIENT = "192.0.2.7"
SENDER = "maya@example.org"


def _throttle(database: Database, max_failures: int = 5) -> tuple[LoginThrottle, SharedWindowCounts]:
    counts = SharedWindowCounts(database, LOGIN_FAILURES, 900)
    return LoginThrottle(max_failures, 900, shared=counts), counts


def test_failures_on_two_gateways_add_up_after_a_sync(pg_db: Database) -> None:
    (first, first_counts), (second, second_counts) = _throttle(pg_db), _throttle(pg_db)
    for _ in range(3):
        first.record_failure(CLIENT)
    for _ in range(2):
        second.record_failure(CLIENT)
    assert not first.blocked(CLIENT) and not second.blocked(CLIENT)
    first_counts.sync()
    second_counts.sync()
    first_counts.sync()
    assert first.blocked(CLIENT) and second.blocked(CLIENT)
    assert not first.blocked("198.51.100.1")


def test_a_gateways_own_failures_are_not_counted_twice(pg_db: Database) -> None:
    throttle, counts = _throttle(pg_db)
    for _ in range(4):
        throttle.record_failure(CLIENT)
    counts.sync()
    counts.sync()
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
    throttle, counts = _throttle(pg_db)
    counts.sync()
    assert not throttle.blocked(CLIENT)
    with pg_db.connection() as connection:
        assert connection.execute("SELECT count(*) FROM login_failures").fetchone() == (0,)


def test_failures_not_sent_when_the_database_is_down_are_sent_later(pg_database: ScratchDatabase) -> None:
    with pg_database.connect(timeout=2) as database:
        throttle, counts = _throttle(database, max_failures=3)
        throttle.record_failure(CLIENT)
        pg_database.cluster.stop()
        try:
            with pytest.raises(StateUnavailable):
                counts.sync()
            throttle.record_failure(CLIENT)  # the database away: counted here all the same
            assert throttle.failures(CLIENT) == 2
        finally:
            pg_database.cluster.start()
        counts.sync()
        with database.connection() as connection:
            assert connection.execute("SELECT count(*) FROM login_failures").fetchone() == (2,)


def test_a_senders_notice_budget_is_spent_across_gateways(pg_db: Database) -> None:
    first_counts = SharedWindowCounts(pg_db, NOTICES_SENT, 3600)
    second_counts = SharedWindowCounts(pg_db, NOTICES_SENT, 3600)
    first = NoticeLimiter(3, shared=first_counts)
    second = NoticeLimiter(3, shared=second_counts)
    assert [first.check(SENDER) for _ in range(2)] == [LimitDecision.SEND] * 2
    first_counts.sync()
    second_counts.sync()
    assert second.check("Maya@Example.org") is LimitDecision.SEND  # the third of the hour
    assert second.check(SENDER) is LimitDecision.COLLAPSE  # two elsewhere and one here
    assert second.resumes_in(SENDER) > 3000
    second_counts.sync()
    first_counts.sync()
    assert first.check(SENDER) is LimitDecision.COLLAPSE  # one summary per gateway, then none
    assert first.check(SENDER) is LimitDecision.DROP
    assert first.check("sam@example.org") is LimitDecision.SEND
