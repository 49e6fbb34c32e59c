"""The committee digest on either backend, from the audit trail read through its port: exactly one
mail and one ``digest`` event per period, across a restart mid-send and with several gateways."""

from __future__ import annotations

import asyncio
import datetime
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from gateway.decision.digest import DIGEST_EVENT, last_completed
from gateway.decision.digest_schedule import DigestSchedule
from gateway.policy.engine import CompiledPolicy, compile_policy
from gateway.policy.loader import parse_policy_text
from gateway.settings import GatewaySettings
from gateway.state.opening import State, open_state
from gateway.state.postgresql.database import Database
from gateway.state.postgresql.digest_periods import PostgresqlDigestPeriods
from gateway.state.postgresql.opening import close_shared_databases
from gateway.state.spool_records import QueueState
from tests.state.conftest import BACKENDS, backend_settings
from tests.test_digest import CONDUCT, POLICY

UTC = datetime.UTC
START = datetime.datetime(2026, 12, 1, 9, tzinfo=UTC)


@pytest.fixture(params=BACKENDS)
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[GatewaySettings]:
    yield backend_settings(request, tmp_path, str(request.param))
    close_shared_databases()


def compiled() -> CompiledPolicy:
    return compile_policy(parse_policy_text(POLICY, Path("policy.yaml")), POLICY.encode())


class Gateway:
    """One gateway's digest schedule (a restart is a new one), on a clock the test moves."""

    def __init__(self, state: State, now: list[datetime.datetime], *, lease: float = 300.0) -> None:
        self.state = state
        self.schedule = DigestSchedule(
            "daily",
            audit=state.audit,
            spool=state.queue.open(),
            policy=compiled,
            hostname="gw.example.org",
            clock=lambda: now[0],
            periods=state.digests,
            lease=lease,
        )


def drain(state: State, settings: GatewaySettings) -> None:
    """The files gateway's review round: entries left for later reach the trail."""
    if settings.state.backend == "files":
        with state.audit.open() as writer:
            state.audit.drain_later(writer)


def digest_events(state: State) -> list[tuple[str, bool]]:
    return [
        (str(e.fields["end"]), bool(e.fields.get("baseline", False)))
        for e in state.audit.entries()
        if e.fields["event"] == DIGEST_EVENT
    ]


def digests_queued(state: State) -> list[str]:
    return [e.queue_id for e in state.queue.open().entries(QueueState.INCOMING)]


async def test_a_restart_mid_send_records_and_mails_the_period_once(settings: GatewaySettings) -> None:
    state = open_state(settings)
    with state.audit.open() as writer:  # what the period counts, appended through the port
        for number, verdict in enumerate(["deliver", "reject", "reject"]):
            writer.append("decision", {"queue_id": f"Q{number}", "verdict": verdict, "findings": []})
    start = datetime.datetime.now(UTC)  # the day the entries were appended in (real time)
    now = [start]
    assert await Gateway(state, now).schedule.run() == 0  # the first start: a baseline
    drain(state, settings)
    now[0] += datetime.timedelta(days=1)
    window = last_completed("daily", now[0])
    # The gateway spools the digest and dies before recording it...
    crashed = Gateway(state, now)
    assert await crashed.schedule.send(window)
    # ...and the restarted one records it once without mailing it again; a second restart too.
    assert await Gateway(state, now).schedule.run() == 0
    assert await Gateway(state, now).schedule.run() == 0
    drain(state, settings)
    assert digest_events(state) == [
        (last_completed("daily", start).end.isoformat(), True),
        (window.end.isoformat(), False),
    ]
    [queue_id] = digests_queued(state)
    text = state.queue.open().load(queue_id).content.decode()
    assert queue_id == window.queue_id and "Messages by verdict:\r\n  deliver  1\r\n  reject   2\r\n" in text
    assert state.queue.open().load(queue_id).envelope.rcpt_tos == (CONDUCT,)


async def test_a_restart_after_recording_does_not_record_the_period_again(settings: GatewaySettings) -> None:
    state = open_state(settings)
    now = [START]
    assert await Gateway(state, now).schedule.run() == 0
    now[0] += datetime.timedelta(days=1)
    assert await Gateway(state, now).schedule.run() == 1
    # Restarted before the gateway's round appended what it recorded (files: still "for later").
    assert await Gateway(state, now).schedule.run() == 0
    drain(state, settings)
    assert [baseline for _end, baseline in digest_events(state)] == [True, False]
    assert len(digests_queued(state)) == 1


# -- several gateways on one database --------------------------------------------------------------------


@pytest.fixture
def shared(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[GatewaySettings]:
    yield backend_settings(request, tmp_path, "postgresql")
    close_shared_databases()


def gateway_with_own_pool(
    state: State, settings: GatewaySettings, now: list[datetime.datetime], lease: float = 300.0
) -> tuple[Gateway, Database]:
    """A gateway whose digest periods use a pool of its own (as another host's would)."""
    database = Database.from_settings(settings.state.postgresql)
    gateway = Gateway(state, now, lease=lease)
    gateway.schedule.periods = PostgresqlDigestPeriods(lambda: database)
    return gateway, database


async def test_gateways_sharing_the_database_send_each_period_once(shared: GatewaySettings) -> None:
    state = open_state(shared)
    now = [START]
    gateways = [gateway_with_own_pool(state, shared, now) for _ in range(3)]
    try:
        await asyncio.gather(*(g.schedule.run() for g, _db in gateways))  # all start at once: one baseline
        now[0] += datetime.timedelta(days=2)  # two periods have ended
        sent = await asyncio.gather(*(g.schedule.run() for g, _db in gateways))
        sent += await asyncio.gather(*(g.schedule.run() for g, _db in gateways))  # the next rounds
        assert sum(sent) == 2
        assert len(digests_queued(state)) == 2
        events = digest_events(state)
        assert [baseline for _end, baseline in events] == [True, False, False]
        assert len({end for end, _baseline in events}) == 3
    finally:
        for _gateway, database in gateways:
            database.close()


async def test_a_gateway_that_died_holding_a_period_hands_it_on(shared: GatewaySettings) -> None:
    state = open_state(shared)
    now = [START]
    assert await Gateway(state, now).schedule.run() == 0
    now[0] += datetime.timedelta(days=1)
    window = last_completed("daily", now[0])
    (dying, dying_db), (alive, alive_db) = (
        gateway_with_own_pool(state, shared, now, lease=0.0),
        gateway_with_own_pool(state, shared, now),
    )
    try:
        assert dying.schedule._claim(window)  # claimed, spooled, then the gateway died
        assert await dying.schedule.send(window)
        # Its lease (0 s here) has run out: the other gateway takes the period over, finds the mail
        # in the shared queue under the period's id, and records it without sending it again.
        assert await alive.schedule.run() == 0
        assert [baseline for _end, baseline in digest_events(state)] == [True, False]
        assert digests_queued(state) == [window.queue_id]
        assert await alive.schedule.run() == 0 and len(digest_events(state)) == 2
    finally:
        dying_db.close()
        alive_db.close()


async def test_a_live_claim_keeps_the_other_gateways_off_the_period(shared: GatewaySettings) -> None:
    state = open_state(shared)
    now = [START]
    assert await Gateway(state, now).schedule.run() == 0
    now[0] += datetime.timedelta(days=1)
    window = last_completed("daily", now[0])
    holder, other = Gateway(state, now), Gateway(state, now)
    assert holder.schedule._claim(window)
    assert await other.schedule.run() == 0  # the holder is alive (its lease runs): not sent twice
    assert digests_queued(state) == [] and len(digest_events(state)) == 1
    assert await holder.schedule.run() == 1  # the holder sends it
    assert await other.schedule.run() == 0
    assert len(digests_queued(state)) == 1 and len(digest_events(state)) == 2


def test_racing_gateways_one_claims_a_period_and_one_records_it(shared: GatewaySettings) -> None:
    state = open_state(shared)
    window = last_completed("daily", START)
    pools = [Database.from_settings(shared.state.postgresql) for _ in range(6)]
    try:
        stores = [PostgresqlDigestPeriods(lambda database=database: database) for database in pools]

        def race(attempt: Callable[[int, PostgresqlDigestPeriods], bool]) -> list[bool]:
            start = threading.Barrier(len(stores))
            results: list[bool] = [False] * len(stores)

            def one(number: int) -> None:
                start.wait()
                results[number] = attempt(number, stores[number])

            threads = [threading.Thread(target=one, args=(n,)) for n in range(len(stores))]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            return results

        claims = race(lambda n, store: store.claim("daily", window.start, window.end, f"gateway-{n}", 300.0))
        assert sum(claims) == 1
        fields = {"period": "daily", "start": window.start.isoformat(), "end": window.end.isoformat()}
        records = race(lambda n, store: store.record("daily", window.end, fields))
        assert sum(records) == 1
        assert digest_events(state) == [(window.end.isoformat(), False)]
        assert stores[0].recorded("daily") == window.end
        # Recorded: nobody claims it any more, not even after the lease.
        assert not stores[1].claim("daily", window.start, window.end, "gateway-late", 0.0)
    finally:
        for database in pools:
            database.close()
