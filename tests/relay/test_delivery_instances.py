"""Several gateways delivering from one PostgreSQL queue: each message once, a dead one's work taken over."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from gateway.state.postgresql.database import Database
from gateway.state.postgresql.queue import PostgresQueue
from gateway.state.spool import DeliveryStatus, QueueState, RecipientStatus
from gateway.testing import CaptureUpstream

from .conftest import delivery_settings, envelope, eventually, message, running, upstream_settings


def expire(database: Database, queue: PostgresQueue) -> None:
    """As if ``queue``'s instance had died a lease ago: its claims have run out."""
    with database.connection() as connection:
        connection.execute(
            "UPDATE queue_messages SET lease_until = lease_until - 3600 WHERE claimed_by = %s",
            (queue.instance,),
        )


async def test_two_instances_deliver_every_message_exactly_once(
    pg_db: Database, upstream: CaptureUpstream
) -> None:
    first, second = PostgresQueue(pg_db.connection), PostgresQueue(pg_db.connection)
    settings = delivery_settings(upstream_settings(upstream), concurrency=2)
    sent = [envelope() for _ in range(40)]
    async with running(first, settings) as one, running(second, settings) as other:
        # Accepted by both, as behind a load balancer.
        await asyncio.gather(
            *(
                (first if number % 2 else second).commit(e, message(subject=e.queue_id))
                for number, e in enumerate(sent)
            )
        )
        await eventually(lambda: first.statistics().messages["done"] == 40, within=20)
    subjects = sorted(m.content for m in upstream.messages)
    assert subjects == sorted(message(subject=e.queue_id) for e in sent)  # each once, none twice
    assert one.statistics().attempts_total + other.statistics().attempts_total == 40


async def test_the_message_a_dead_instance_was_sending_is_delivered_by_the_survivor(
    pg_db: Database, upstream: CaptureUpstream
) -> None:
    dead, survivor = PostgresQueue(pg_db.connection, name="dead"), PostgresQueue(pg_db.connection)
    sent = envelope()
    await dead.commit(sent, message())
    await dead.read(sent.queue_id, QueueState.INCOMING)  # claimed, then the instance was killed
    async with running(survivor, delivery_settings(upstream_settings(upstream))):
        assert survivor.pending_ids(QueueState.INCOMING) == []  # its lease still runs
        expire(pg_db, dead)
        await upstream.wait_for(1)
        await eventually(lambda: survivor.locate(sent.queue_id) is QueueState.DONE)
    assert len(upstream.messages) == 1


async def test_deferred_mail_of_a_dead_instance_is_retried_by_the_survivor_for_its_recipients_left(
    pg_db: Database, upstream: CaptureUpstream
) -> None:
    dead, survivor = PostgresQueue(pg_db.connection, name="dead"), PostgresQueue(pg_db.connection)
    settings = delivery_settings(upstream_settings(upstream))
    sent = envelope(rcpt_tos=("ok@example.org", "later@example.org"))
    await dead.commit(sent, message())
    async with running(survivor, settings):
        # The dead instance tried once: one recipient delivered, one deferred, then it was killed
        # holding the message (a deferred message stays with the instance that tried it).
        status = DeliveryStatus.initial(sent)
        await dead.read(sent.queue_id, QueueState.INCOMING)
        [ok, later] = status.recipients
        tried = DeliveryStatus(
            (
                RecipientStatus(ok.address, "delivered", "250 2.0.0 Ok", time.time()),
                RecipientStatus(later.address, "deferred", "450 4.2.1 busy", time.time()),
            ),
            attempts=1,
            last_attempt_at=time.time(),
            next_attempt_at=time.time(),
        )
        await dead.write_status(sent.queue_id, tried)
        await dead.move(sent.queue_id, QueueState.INCOMING, QueueState.DEFERRED)
        expire(pg_db, dead)
        await upstream.wait_for(1)
        await eventually(lambda: survivor.locate(sent.queue_id) is QueueState.DONE)
    [captured] = upstream.messages
    assert captured.rcpt_tos == ("later@example.org",)  # never the recipient delivered before
    final = survivor.find(sent.queue_id).status
    assert final is not None and final.attempts == 2


async def test_a_stopped_instance_hands_its_deferred_mail_over_at_once(
    pg_db: Database, upstream: CaptureUpstream
) -> None:
    first, second = PostgresQueue(pg_db.connection), PostgresQueue(pg_db.connection)
    upstream.reply_to_data("451 4.3.0 later", times=1)
    settings = delivery_settings(upstream_settings(upstream), initial_backoff=0.05)
    sent = envelope()
    await first.commit(sent, message())
    async with running(first, settings) as worker:
        await eventually(lambda: worker.statistics().outcomes_total["deferred"] == 1)
        await eventually(lambda: first.locate(sent.queue_id) is QueueState.DEFERRED)
    # The first instance stopped cleanly: no lease to wait for.
    assert second.pending_ids(QueueState.DEFERRED) == [sent.queue_id]
    async with running(second, settings):
        await upstream.wait_for(1)
        await eventually(lambda: second.locate(sent.queue_id) is QueueState.DONE)
    assert len(upstream.messages) == 1


async def test_an_instance_whose_message_was_taken_over_lets_it_go(
    pg_db: Database, upstream: CaptureUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    slow, other = PostgresQueue(pg_db.connection, name="slow"), PostgresQueue(pg_db.connection)
    upstream.data_delay = 0.5
    sent = envelope()
    await slow.commit(sent, message())
    with caplog.at_level(logging.WARNING, logger="gateway.delivery.worker"):
        async with running(slow, delivery_settings(upstream_settings(upstream))) as worker:
            await eventually(lambda: worker.statistics().sending == 1)
            # The slow instance stalled past its lease: another takes the message over meanwhile.
            expire(pg_db, slow)
            await other.read(sent.queue_id, QueueState.INCOMING)
            await eventually(lambda: worker.statistics().in_flight == 0)
    assert worker.statistics().errors_total == 0 and worker.statistics().unrecorded == 0
    assert f"event=spool_entry_vanished queue_id={sent.queue_id}" in caplog.text
    assert other.find(sent.queue_id).status is None  # the results are the new owner's to record
