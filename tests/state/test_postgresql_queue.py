"""The PostgreSQL queue shared by several instances: claims, leases, take-over, idempotent commits."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from gateway.errors import SpoolError, StateUnavailable
from gateway.state.postgresql.database import Database
from gateway.state.postgresql.queue import PostgresQueue
from gateway.state.postgresql.queue_changes import QueueTakenOver
from gateway.state.spool import DeliveryStatus, QueueState

from .test_queue_contract import envelope, message


def expire(connect: Any, instance: PostgresQueue) -> None:
    """As if the instance had died ``lease`` seconds ago: its claims have run out."""
    with connect() as connection:
        connection.execute(
            "UPDATE queue_messages SET lease_until = lease_until - 3600 WHERE claimed_by = %s",
            (instance.instance,),
        )


def claimed_by(connect: Any, queue_id: str) -> str | None:
    with connect() as connection:
        row = connection.execute(
            "SELECT claimed_by FROM queue_messages WHERE queue_id = %s", (queue_id,)
        ).fetchone()
    assert row is not None
    return row[0]  # type: ignore[no-any-return]


async def test_a_message_claimed_by_one_instance_is_invisible_and_untouchable_to_another(
    pg_db: Database,
) -> None:
    a, b = PostgresQueue(pg_db.connection, name="a"), PostgresQueue(pg_db.connection, name="b")
    sent = envelope()
    await a.commit(sent, message())
    await a.read(sent.queue_id, QueueState.INCOMING)
    assert claimed_by(pg_db.connection, sent.queue_id) == "a"
    assert b.pending_ids(QueueState.INCOMING) == []
    assert a.pending_ids(QueueState.INCOMING) == [sent.queue_id]
    with pytest.raises(FileNotFoundError):
        await b.read(sent.queue_id, QueueState.INCOMING)
    with pytest.raises(QueueTakenOver):
        await b.write_status(sent.queue_id, DeliveryStatus.initial(sent))
    with pytest.raises(QueueTakenOver):
        await b.move(sent.queue_id, QueueState.INCOMING, QueueState.DONE)
    assert b.locate(sent.queue_id) is QueueState.INCOMING  # listings still show it


async def test_an_expired_claim_is_taken_over_and_the_old_owner_may_no_longer_record(pg_db: Database) -> None:
    a, b = PostgresQueue(pg_db.connection, name="a"), PostgresQueue(pg_db.connection, name="b")
    sent = envelope()
    await a.commit(sent, message())
    await a.read(sent.queue_id, QueueState.INCOMING)
    expire(pg_db.connection, a)
    assert b.pending_ids(QueueState.INCOMING) == [sent.queue_id]
    taken = await b.read(sent.queue_id, QueueState.INCOMING)
    assert taken.content == message() and claimed_by(pg_db.connection, sent.queue_id) == "b"
    with pytest.raises(QueueTakenOver, match="taken over by b"):
        await a.write_status(sent.queue_id, DeliveryStatus.initial(sent))
    await b.move(sent.queue_id, QueueState.INCOMING, QueueState.DONE)
    assert claimed_by(pg_db.connection, sent.queue_id) is None  # finished mail is nobody's
    with pytest.raises(FileNotFoundError):
        await a.read(sent.queue_id, QueueState.INCOMING)


async def test_a_deferred_message_stays_with_its_instance_until_it_stops(pg_db: Database) -> None:
    a, b = PostgresQueue(pg_db.connection, name="a"), PostgresQueue(pg_db.connection, name="b")
    sent = envelope()
    await a.commit(sent, message())
    with a.delivery_lock():
        await a.read(sent.queue_id, QueueState.INCOMING)
        await a.write_status(sent.queue_id, DeliveryStatus.initial(sent))
        await a.move(sent.queue_id, QueueState.INCOMING, QueueState.DEFERRED)
        assert b.pending_ids(QueueState.DEFERRED) == []
        with pytest.raises(SpoolError, match="delivering"), a.delivery_lock():
            pass
    # A clean stop gives the claims up at once: nobody waits for a lease.
    assert claimed_by(pg_db.connection, sent.queue_id) is None
    assert b.pending_ids(QueueState.DEFERRED) == [sent.queue_id]


async def test_the_heartbeat_renews_every_claim_of_its_instance(pg_db: Database) -> None:
    a, b = PostgresQueue(pg_db.connection, name="a"), PostgresQueue(pg_db.connection, name="b")
    sent = [envelope() for _ in range(3)]
    for e in sent:
        await a.commit(e, message())
        await a.read(e.queue_id, QueueState.INCOMING)
    expire(pg_db.connection, a)
    assert a.renew() == 3
    assert b.pending_ids(QueueState.INCOMING) == []


async def test_the_heartbeat_never_waits_for_a_row_its_own_batch_is_changing(pg_db: Database) -> None:
    # Renewing every claim in one statement while a batch of the same instance held some of them in
    # another order made PostgreSQL fail one of the two as a deadlock (seen under load): the renewal
    # skips a row that is locked now and renews it at the next beat.
    a = PostgresQueue(pg_db.connection, name="a")
    sent = [envelope() for _ in range(3)]
    for e in sent:
        await a.commit(e, message())
        await a.read(e.queue_id, QueueState.INCOMING)
    expire(pg_db.connection, a)
    with pg_db.connection() as batch:
        batch.execute("SELECT 1 FROM queue_messages WHERE queue_id = %s FOR UPDATE", (sent[0].queue_id,))
        renewed = await asyncio.wait_for(asyncio.to_thread(a.renew), 10)
    assert renewed == 2
    assert a.renew() == 3


def test_a_deadlock_is_a_rolled_back_operation_to_try_again_not_a_lost_server(pg_db: Database) -> None:
    with pytest.raises(StateUnavailable, match="rolled the operation back") as caught, pg_db.connection():
        raise psycopg.errors.DeadlockDetected()
    assert "cannot be reached" not in str(caught.value)


async def test_committing_the_same_message_twice_stores_it_once_and_another_under_its_id_is_refused(
    pg_db: Database,
) -> None:
    queue = PostgresQueue(pg_db.connection)
    sent = envelope()
    await queue.commit(sent, message())
    await queue.commit(sent, message())  # a release recovered after a crash: already there
    assert [e.queue_id for e in queue.entries()] == [sent.queue_id]
    with pytest.raises(SpoolError, match="taken by another message"):
        await queue.commit(sent, message("something else"))
    assert queue.load(sent.queue_id).content == message()


async def test_one_failing_change_does_not_fail_the_others_of_its_batch(pg_db: Database) -> None:
    queue = PostgresQueue(pg_db.connection)
    taken = envelope()
    await queue.commit(taken, message())
    fresh = [envelope() for _ in range(10)]
    outcomes = await asyncio.gather(
        queue.commit(taken, message("other bytes")),
        *(queue.commit(e, message()) for e in fresh),
        return_exceptions=True,
    )
    assert isinstance(outcomes[0], SpoolError)
    assert outcomes[1:] == [None] * 10
    assert len(queue.entries()) == 11


async def test_a_corrupted_row_is_reported_as_corrupt_not_delivered(pg_db: Database) -> None:
    queue = PostgresQueue(pg_db.connection)
    sent = envelope()
    await queue.commit(sent, message())
    with pg_db.connection() as connection:
        connection.execute("UPDATE queue_messages SET content = 'tampered'::bytea")
    other = PostgresQueue(pg_db.connection)  # no copy of the message in memory
    with pytest.raises(Exception, match="checksum"):
        await other.read(sent.queue_id, QueueState.INCOMING)


def test_two_instances_claiming_at_once_never_get_the_same_message(pg_db: Database) -> None:
    seed = PostgresQueue(pg_db.connection)

    async def fill() -> list[str]:
        sent = [envelope() for _ in range(120)]
        await asyncio.gather(*(seed.commit(e, message()) for e in sent))
        return [e.queue_id for e in sent]

    ids = asyncio.run(fill())
    got: dict[str, list[str]] = {"a": [], "b": [], "c": []}
    start = threading.Barrier(len(got))

    def claim_all(name: str) -> None:
        queue = PostgresQueue(pg_db.connection, name=name)
        start.wait()

        async def claim() -> None:
            for queue_id in ids:
                try:
                    await queue.read(queue_id, QueueState.INCOMING)
                except FileNotFoundError:
                    continue
                got[name].append(queue_id)

        asyncio.run(claim())

    threads = [threading.Thread(target=claim_all, args=(name,)) for name in got]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    claimed = [queue_id for names in got.values() for queue_id in names]
    assert sorted(claimed) == sorted(ids)  # every message claimed, none twice


class Instances(RuleBasedStateMachine):
    """Any interleaving of claims, results, stops and deaths of two instances over a few messages."""

    def __init__(self, connect: Any) -> None:
        super().__init__()
        self.connect = connect
        with connect() as connection:
            connection.execute("TRUNCATE queue_messages")
        self.queues = {name: PostgresQueue(connect, name=name) for name in ("a", "b")}
        self.loop = asyncio.new_event_loop()
        self.ids: list[str] = []
        self.state: dict[str, QueueState] = {}
        self.owner: dict[str, str | None] = {}
        self.delivered: dict[str, int] = {}
        self.sent = 0
        for _ in range(3):
            sent = envelope()
            self.loop.run_until_complete(self.queues["a"].commit(sent, message()))
            self.ids.append(sent.queue_id)
            self.state[sent.queue_id] = QueueState.INCOMING
            self.owner[sent.queue_id] = None
            self.delivered[sent.queue_id] = 0

    def teardown(self) -> None:
        self.loop.close()

    def run(self, step: Any) -> Any:
        return self.loop.run_until_complete(step)

    @rule(name=st.sampled_from(["a", "b"]), index=st.integers(0, 2))
    def claim(self, name: str, index: int) -> None:
        queue_id = self.ids[index]
        state = self.state[queue_id]
        pending = state in (QueueState.INCOMING, QueueState.DEFERRED)
        free = self.owner[queue_id] in (None, name)
        try:
            self.run(self.queues[name].read(queue_id, state))
        except FileNotFoundError:
            assert pending and not free
            return
        assert free or not pending
        if pending:
            self.owner[queue_id] = name

    @rule(name=st.sampled_from(["a", "b"]), index=st.integers(0, 2), done=st.booleans())
    def attempt(self, name: str, index: int, done: bool) -> None:
        """The owner sends, then records the result (done, or deferred for another try)."""
        queue_id = self.ids[index]
        if self.owner[queue_id] != name or self.state[queue_id] not in (
            QueueState.INCOMING,
            QueueState.DEFERRED,
        ):
            return
        self.sent += 1
        target = QueueState.DONE if done else QueueState.DEFERRED
        source = self.state[queue_id]
        if source is target:
            return
        self.run(self.queues[name].move(queue_id, source, target))
        self.state[queue_id] = target
        if done:
            self.delivered[queue_id] += 1
            self.owner[queue_id] = None

    @rule(name=st.sampled_from(["a", "b"]))
    def dies(self, name: str) -> None:
        expire(self.connect, self.queues[name])
        for queue_id, owner in self.owner.items():
            if owner == name:
                self.owner[queue_id] = None

    @rule(name=st.sampled_from(["a", "b"]), index=st.integers(0, 2))
    def stale_owner_records(self, name: str, index: int) -> None:
        """An instance that lost its claim tries to record a result: refused unless nobody took it."""
        queue_id = self.ids[index]
        owner = self.owner[queue_id]
        if owner in (None, name) or self.state[queue_id] not in (QueueState.INCOMING, QueueState.DEFERRED):
            return
        with pytest.raises(QueueTakenOver):
            self.run(self.queues[name].move(queue_id, self.state[queue_id], QueueState.DONE))

    @invariant()
    def each_message_is_in_one_state_claimed_by_at_most_its_owner(self) -> None:
        with self.connect() as connection:
            rows = connection.execute("SELECT queue_id, state, claimed_by FROM queue_messages").fetchall()
        assert {queue_id: QueueState(state) for queue_id, state, _ in rows} == self.state
        assert all(count <= 1 for count in self.delivered.values())
        claims = {queue_id: owner for queue_id, _, owner in rows}
        for queue_id in self.ids:
            actual = claims[queue_id]
            if self.owner[queue_id] is not None:
                assert actual == self.owner[queue_id]
            elif self.state[queue_id] in (QueueState.DONE, QueueState.BOUNCED):
                assert actual is None


def test_any_interleaving_keeps_each_message_in_one_state_with_one_owner(pg_db: Database) -> None:
    run_state_machine_as_test(
        lambda: Instances(pg_db.connection),
        settings=settings(
            max_examples=20,
            stateful_step_count=15,
            deadline=None,
            suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
        ),
    )


def test_the_database_clock_decides_leases(pg_db: Database) -> None:
    queue = PostgresQueue(pg_db.connection, lease_seconds=3600)

    async def claim() -> None:
        sent = envelope()
        await queue.commit(sent, message())
        await queue.read(sent.queue_id, QueueState.INCOMING)

    asyncio.run(claim())
    with pg_db.connection() as connection:
        row = connection.execute(
            "SELECT lease_until - extract(epoch FROM now()) FROM queue_messages"
        ).fetchone()
    assert row is not None and 3500 < row[0] <= 3600


async def test_concurrent_commits_share_transactions(pg_db: Database) -> None:
    queue = PostgresQueue(pg_db.connection)
    await asyncio.gather(*(queue.commit(envelope(), message()) for _ in range(50)))
    statistics = queue.statistics()
    assert statistics.commits_total == 50 and statistics.messages["incoming"] == 50
    assert 0 < statistics.transactions_total < 50  # one WAL flush each: fewer than commits


async def test_an_unreachable_database_fails_a_whole_batch_at_once_not_change_by_change(
    pg_db: Database,
) -> None:
    attempts: list[int] = []

    def connect() -> Any:
        attempts.append(1)
        return pg_db.connection()

    queue = PostgresQueue(connect)
    pg_db.close()
    outcomes = await asyncio.gather(
        *(queue.commit(envelope(), message()) for _ in range(12)), return_exceptions=True
    )
    assert all(isinstance(outcome, SpoolError) for outcome in outcomes)
    assert "cannot be reached" in str(outcomes[0])
    assert len(attempts) <= 2  # one per batch (the first commit's, then everyone else's)


async def test_statistics_for_metrics_never_wait_for_the_database(pg_db: Database) -> None:
    reachable = threading.Event()
    reachable.set()

    @contextlib.contextmanager
    def connect() -> Iterator[Any]:
        # A database that hangs (a network partition) until the test lets it answer.
        assert reachable.wait(timeout=30)
        with pg_db.connection() as connection:
            yield connection

    queue = PostgresQueue(connect)
    await queue.commit(envelope(), message())
    reachable.clear()
    waiting = queue.recent_statistics()  # returns at once: the count runs on an I/O thread
    assert waiting.messages["incoming"] == 0 and waiting.commits_total == 1
    reachable.set()
    async with asyncio.timeout(10):
        while queue.recent_statistics().messages["incoming"] != 1:
            await asyncio.sleep(0.01)
