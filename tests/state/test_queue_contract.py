"""The queue port's contract, every backend: commit, follow-ups, states, listings, retry, prune, delete."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.errors import CorruptSpoolEntry, SpoolError
from gateway.state.ports import QueuePort
from gateway.state.postgresql.database import Database
from gateway.state.postgresql.queue import PostgresQueue
from gateway.state.spool import DeliveryStatus, FollowUp, QueueState, RecipientStatus, Spool, SpoolEnvelope

SENDER = "ada@example.org"


def envelope(rcpt_tos: tuple[str, ...] = ("bob@example.net",), queue_id: str | None = None) -> SpoolEnvelope:
    return SpoolEnvelope(
        queue_id=queue_id or Spool.new_queue_id(),
        mail_from=SENDER,
        rcpt_tos=rcpt_tos,
        authenticated_as=SENDER,
        received_at=time.time(),
        client_address="192.0.2.7",
    )


def message(body: str = "Hello there.") -> bytes:
    return (f"From: Ada <{SENDER}>\r\nTo: bob@example.net\r\nSubject: hello\r\n\r\n{body}\r\n").encode()


@pytest.fixture(params=["files", "postgresql"])
def queue(request: pytest.FixtureRequest, tmp_path: Path) -> QueuePort:
    if request.param == "files":
        return Spool(tmp_path / "spool")
    database: Database = request.getfixturevalue("pg_db")
    return PostgresQueue(database.connection)


async def test_a_committed_message_is_stored_with_its_envelope_and_exact_bytes(queue: QueuePort) -> None:
    content = message("caf\u00e9 \u2014 line\r\n.leading dot\r\n") + b"\x00\xff\r\n"
    sent = envelope(("bob@example.net", "carol@example.net"))
    await queue.commit(sent, content)
    loaded = queue.load(sent.queue_id)
    assert (loaded.envelope, loaded.content, loaded.state, loaded.status) == (
        sent,
        content,
        QueueState.INCOMING,
        None,
    )
    entry = queue.find(sent.queue_id)
    assert (entry.state, entry.size, entry.envelope, entry.status) == (
        QueueState.INCOMING,
        len(content),
        sent,
        None,
    )
    assert queue.locate(sent.queue_id) is QueueState.INCOMING
    assert queue.pending_ids(QueueState.INCOMING) == [sent.queue_id]


async def test_a_message_without_recipients_is_refused_and_its_follow_up_never_runs(queue: QueuePort) -> None:
    ran: list[str] = []
    with pytest.raises(SpoolError, match="no recipients"):
        await queue.commit(envelope(()), message(), FollowUp(lambda: ran.append("record")))
    assert ran == []
    assert queue.entries() == []


async def test_concurrent_commits_are_all_stored_and_each_follow_up_runs_before_its_commit_returns(
    queue: QueuePort,
) -> None:
    recorded: list[str] = []
    flushes: list[int] = []

    def flush() -> None:
        flushes.append(len(recorded))

    async def commit(sent: SpoolEnvelope) -> None:
        await queue.commit(
            sent, message(sent.queue_id), FollowUp(lambda: recorded.append(sent.queue_id), flush)
        )
        assert sent.queue_id in recorded  # recorded before the caller hears of it
        assert flushes and flushes[-1] >= recorded.index(sent.queue_id) + 1  # and flushed after

    sent = [envelope() for _ in range(40)]
    await asyncio.gather(*(commit(e) for e in sent))
    assert sorted(recorded) == sorted(e.queue_id for e in sent)
    assert len(flushes) < len(sent)  # batches share one flush
    for e in sent:
        assert queue.load(e.queue_id).content == message(e.queue_id)
    assert queue.statistics().messages["incoming"] == 40
    assert queue.statistics().commits_total == 40


async def test_a_task_rides_with_the_next_batch_and_its_error_reaches_its_caller(queue: QueuePort) -> None:
    seen: list[int] = []
    await queue.commit(envelope(), message())
    await queue.run_with_next_batch(lambda: seen.append(len(queue.entries())))
    assert seen == [1]

    def broken() -> None:
        raise ValueError("flush failed")

    with pytest.raises(ValueError, match="flush failed"):
        await queue.run_with_next_batch(broken)


async def test_commit_listeners_hear_of_each_commit_until_they_unsubscribe(queue: QueuePort) -> None:
    heard: list[str] = []
    unsubscribe = queue.on_commit(heard.append)
    first, second = envelope(), envelope()
    await queue.commit(first, message())
    unsubscribe()
    await queue.commit(second, message())
    assert heard == [first.queue_id]


async def test_delivery_moves_a_message_through_its_states_with_its_status(queue: QueuePort) -> None:
    sent = envelope(("bob@example.net", "carol@example.net"))
    await queue.commit(sent, message())
    with queue.delivery_lock():
        read = await queue.read(sent.queue_id, QueueState.INCOMING)
        assert read.content == message() and read.status is None
        status = DeliveryStatus.initial(sent)
        status = status.updated(
            {"bob@example.net": RecipientStatus("bob@example.net", "delivered", "250 2.0.0 Ok", 5.0)}
        )
        status = DeliveryStatus(status.recipients, attempts=1, last_attempt_at=5.0, next_attempt_at=65.0)
        await queue.write_status(sent.queue_id, status)
        await queue.move(sent.queue_id, QueueState.INCOMING, QueueState.DEFERRED)
        assert queue.pending_ids(QueueState.DEFERRED) == [sent.queue_id]
        assert queue.pending_ids(QueueState.INCOMING) == []
        again = await queue.read(sent.queue_id, QueueState.DEFERRED)
        assert again.status == status and again.state is QueueState.DEFERRED
        assert queue.find(sent.queue_id).status == status
        with pytest.raises(FileNotFoundError):
            await queue.move(sent.queue_id, QueueState.INCOMING, QueueState.DONE)
        await queue.move(sent.queue_id, QueueState.DEFERRED, QueueState.DONE)
    assert queue.locate(sent.queue_id) is QueueState.DONE
    assert [e.queue_id for e in queue.entries(QueueState.DONE)] == [sent.queue_id]


async def test_a_message_not_in_the_state_asked_for_cannot_be_read(queue: QueuePort) -> None:
    sent = envelope()
    await queue.commit(sent, message())
    with pytest.raises(FileNotFoundError):
        await queue.read(sent.queue_id, QueueState.DEFERRED)
    assert queue.locate(Spool.new_queue_id()) is None


async def test_retry_sends_deferred_mail_back_and_refuses_finished_mail(queue: QueuePort) -> None:
    deferred, other, done = envelope(), envelope(), envelope()
    for e in (deferred, other, done):
        await queue.commit(e, message())
    await queue.move(deferred.queue_id, QueueState.INCOMING, QueueState.DEFERRED)
    await queue.move(other.queue_id, QueueState.INCOMING, QueueState.DEFERRED)
    await queue.move(done.queue_id, QueueState.INCOMING, QueueState.DONE)
    queue.retry(deferred.queue_id)
    assert queue.locate(deferred.queue_id) is QueueState.INCOMING
    queue.retry(deferred.queue_id)  # already incoming: nothing to do
    with pytest.raises(SpoolError, match="only deferred mail can be retried"):
        queue.retry(done.queue_id)
    assert queue.retry_all() == 1
    assert queue.pending_ids(QueueState.INCOMING) == sorted([deferred.queue_id, other.queue_id])


async def test_prune_removes_finished_mail_after_its_retention_only(queue: QueuePort) -> None:
    done, bounced, waiting = envelope(), envelope(), envelope()
    for e in (done, bounced, waiting):
        await queue.commit(e, message())
    await queue.move(done.queue_id, QueueState.INCOMING, QueueState.DONE)
    await queue.move(bounced.queue_id, QueueState.INCOMING, QueueState.BOUNCED)
    now = time.time()
    assert await queue.prune(now=now, done_retention=3600, bounced_retention=3600) == 0
    assert await queue.prune(now=now + 7200, done_retention=3600, bounced_retention=86400) == 1
    assert queue.locate(done.queue_id) is None and queue.locate(bounced.queue_id) is QueueState.BOUNCED
    assert queue.prune_now(now + 7200 * 24, 3600, 86400) == 1
    assert [e.queue_id for e in queue.entries()] == [waiting.queue_id]


async def test_a_quarantined_message_is_kept_aside_unreadable_and_never_pruned(queue: QueuePort) -> None:
    sent = envelope()
    await queue.commit(sent, message())
    await queue.quarantine(sent.queue_id, QueueState.INCOMING, "checksum mismatch")
    [entry] = queue.entries(QueueState.CORRUPT)
    assert entry.queue_id == sent.queue_id and entry.envelope is None and entry.problem
    with pytest.raises(CorruptSpoolEntry):
        queue.load(sent.queue_id)
    assert queue.pending_ids(QueueState.INCOMING) == []
    assert await queue.prune(now=time.time() + 10**9, done_retention=0, bounced_retention=0) == 0
    assert queue.statistics().messages["corrupt"] == 1
    assert queue.statistics().quarantined_total == 1
    assert queue.delete(sent.queue_id) is QueueState.CORRUPT
    assert queue.entries() == []


async def test_delete_removes_a_message_in_any_state_and_unknown_ids_point_to_the_list(
    queue: QueuePort,
) -> None:
    sent = envelope()
    await queue.commit(sent, message())
    await queue.write_status(sent.queue_id, DeliveryStatus.initial(sent))
    assert queue.delete(sent.queue_id) is QueueState.INCOMING
    for unknown in (sent.queue_id, "../etc", ""):
        with pytest.raises(SpoolError, match="queue list"):
            queue.find(unknown)


async def test_statistics_count_messages_per_state_and_the_age_of_the_oldest_waiting(
    queue: QueuePort,
) -> None:
    first, second = envelope(), envelope()
    await queue.commit(first, message())
    await queue.commit(second, message())
    await queue.move(second.queue_id, QueueState.INCOMING, QueueState.DEFERRED)
    statistics = queue.statistics()
    assert statistics.messages == {"incoming": 1, "deferred": 1, "done": 0, "bounced": 0, "corrupt": 0}
    assert set(statistics.oldest_age_seconds) == {"incoming", "deferred"}
    assert all(0 <= age < 60 for age in statistics.oldest_age_seconds.values())


async def test_listings_are_in_state_order_then_arrival_order(queue: QueuePort) -> None:
    sent = [envelope() for _ in range(4)]
    for e in sent:
        await queue.commit(e, message())
    await queue.move(sent[0].queue_id, QueueState.INCOMING, QueueState.DONE)
    await queue.move(sent[2].queue_id, QueueState.INCOMING, QueueState.DEFERRED)
    listed = [(e.state, e.queue_id) for e in queue.entries()]
    assert listed == [
        (QueueState.INCOMING, sent[1].queue_id),
        (QueueState.INCOMING, sent[3].queue_id),
        (QueueState.DEFERRED, sent[2].queue_id),
        (QueueState.DONE, sent[0].queue_id),
    ]


def test_the_free_space_check_applies_to_the_files_queue_only(queue: QueuePort, tmp_path: Path) -> None:
    if isinstance(queue, Spool):
        assert queue.disk_path == tmp_path / "spool"
    else:
        assert queue.disk_path is None
    assert queue.describe()


Check = Callable[[], bool]
