"""The digest periods' contract, on every backend; then the pruning only the PostgreSQL rows need."""

from __future__ import annotations

import datetime
import uuid

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.state.audit_format import JsonValue
from gateway.state.opening import State
from gateway.state.postgresql.database import Database
from gateway.state.postgresql.digest_periods import KEEP_PERIODS, PostgresqlDigestPeriods

START = datetime.datetime(2026, 3, 2, tzinfo=datetime.UTC)
DAY = datetime.timedelta(days=1)
PERIODS = KEEP_PERIODS + 8  # more than the PostgreSQL rows keep


def day(number: int) -> tuple[datetime.datetime, dict[str, JsonValue]]:
    """The end of daily period ``number`` and its ``digest`` event's fields."""
    start, end = START + number * DAY, START + (number + 1) * DAY
    return end, {
        "period": "daily",
        "start": start.isoformat(),
        "end": end.isoformat(),
        "queue_id": f"D{number}",
    }


def digest_ends(state: State) -> list[str]:
    with state.audit.open() as writer:
        state.audit.drain_later(writer)  # the files backend appends at the next review round
    return [str(e.fields["end"]) for e in state.audit.entries() if e.fields.get("event") == "digest"]


def test_each_period_is_recorded_once_and_none_older_than_the_newest_ever_again(state: State) -> None:
    periods = state.digests
    assert periods.recorded("daily") is None
    for number in range(PERIODS):
        end, fields = day(number)
        assert periods.record("daily", end, fields)
        assert not periods.record("daily", end, fields)  # recorded already
    newest, _ = day(PERIODS - 1)
    assert periods.recorded("daily") == newest
    # However long ago, an earlier period is recorded already: the oldest, long pruned on PostgreSQL,
    # one just inside what PostgreSQL keeps, and the one before the newest.
    for number in (0, PERIODS - KEEP_PERIODS, PERIODS - 2):
        end, fields = day(number)
        assert not periods.record("daily", end, fields)
        assert not periods.claim("daily", end - DAY, end, "late-gateway", 300.0)
    assert periods.recorded("daily") == newest
    assert periods.recorded("weekly") is None  # kinds are apart
    assert digest_ends(state) == [day(number)[0].isoformat() for number in range(PERIODS)]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(numbers=st.lists(st.integers(min_value=0, max_value=3 * KEEP_PERIODS), min_size=1, max_size=60))
def test_a_period_is_recorded_exactly_when_it_is_newer_than_every_recorded_one(
    state: State, numbers: list[int]
) -> None:
    kind = f"daily-{uuid.uuid4().hex[:8]}"  # the state is shared by the examples; kinds are apart
    newest: int | None = None
    for number in numbers:
        end, fields = day(number)
        expected = newest is None or number > newest
        assert state.digests.record(kind, end, {**fields, "period": kind}) == expected
        newest = number if expected else newest
        assert state.digests.recorded(kind) == day(newest)[0]


def test_the_postgresql_rows_keep_the_last_periods_and_the_claims_in_flight(pg_db: Database) -> None:
    periods = PostgresqlDigestPeriods(lambda: pg_db)
    for number in range(PERIODS):
        assert periods.record("daily", *day(number))
    week = datetime.timedelta(weeks=1)
    for number in range(3):
        end = START + (number + 1) * week
        assert periods.record("weekly", end, {"period": "weekly", "start": (end - week).isoformat()})
    following, _ = day(PERIODS)
    assert periods.claim("daily", following - DAY, following, "gateway-1", 300.0)  # being sent now

    with pg_db.connection() as connection:
        rows = connection.execute(
            "SELECT kind, period_end, recorded_seq IS NOT NULL FROM digest_periods ORDER BY kind, period_end"
        ).fetchall()
    daily = [(end, recorded) for kind, end, recorded in rows if kind == "daily"]
    kept = [(day(number)[0], True) for number in range(PERIODS - KEEP_PERIODS, PERIODS)]
    assert daily == [*kept, (following, False)]
    assert len([kind for kind, _, _ in rows if kind == "weekly"]) == 3  # fewer than kept: all there
    assert periods.recorded("daily") == day(PERIODS - 1)[0]
