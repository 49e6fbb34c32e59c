"""The spool: durable commits, private files, states as folders, listings, retry, delete, corrupt entries."""

from __future__ import annotations

import asyncio
import logging
import os
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.errors import CorruptSpoolEntry, SpoolError
from gateway.state import spool_commit
from gateway.state.spool import (
    LARGE_MESSAGE,
    DeliveryStatus,
    FollowUp,
    QueueState,
    RecipientStatus,
    Spool,
    SpoolEnvelope,
    decode_entry,
    encode_entry,
)

from .conftest import envelope, message


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_commit_stores_envelope_and_exact_bytes_in_incoming(spool: Spool) -> None:
    content = message(body="caf\u00e9 \u2014 line\r\n.leading dot\r\n")
    sent = envelope(rcpt_tos=("bob@example.org", "carol@example.org"))
    await spool.commit(sent, content)

    path = spool.path(sent.queue_id, QueueState.INCOMING)
    assert path.is_file()
    assert decode_entry(path.read_bytes(), sent.queue_id) == (sent, content)
    loaded = spool.load(sent.queue_id)
    assert (loaded.envelope, loaded.content, loaded.state, loaded.status) == (
        sent,
        content,
        QueueState.INCOMING,
        None,
    )
    assert list((spool.root / "tmp").iterdir()) == []


async def test_files_are_0600_and_folders_0700_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        spool = Spool(tmp_path / "spool")
        sent = envelope()
        await spool.commit(sent, message())
        await spool.write_status(sent.queue_id, DeliveryStatus.initial(sent))
    finally:
        os.umask(old)
    folders = [spool.root, *(p for p in spool.root.iterdir() if p.is_dir())]
    assert {p.name for p in folders} >= {"spool", "tmp", "incoming", "deferred", "done", "bounced", "corrupt"}
    assert {mode(p) for p in folders} == {0o700}
    assert mode(spool.path(sent.queue_id, QueueState.INCOMING)) == 0o600
    assert mode(spool.status_path(sent.queue_id)) == 0o600


def test_existing_folders_are_made_private(tmp_path: Path) -> None:
    root = tmp_path / "spool"
    (root / "incoming").mkdir(parents=True, mode=0o755)
    (root / "incoming").chmod(0o755)
    Spool(root)
    assert mode(root / "incoming") == 0o700


async def test_concurrent_commits_share_folder_fsyncs(spool: Spool) -> None:
    # Group commit: 64 commits at once need far fewer directory fsyncs than one each.
    sent = [envelope() for _ in range(64)]
    await asyncio.gather(*(spool.commit(e, message(body=e.queue_id)) for e in sent))
    statistics = spool.statistics()
    assert statistics.commits_total == 64
    assert statistics.messages["incoming"] == 64
    assert statistics.directory_syncs_total < 32
    for e in sent:
        assert spool.load(e.queue_id).content == message(body=e.queue_id)


async def test_a_task_rides_with_the_next_batch_after_its_commits(spool: Spool) -> None:
    # A commit under way holds the batch; a commit and a task submitted meanwhile share the next one,
    # and the task runs only once that batch's message is durable (so it can record it).
    seen: list[bool] = []
    first, second = envelope(), envelope()
    running = asyncio.ensure_future(spool.commit(first, message()))
    await asyncio.sleep(0)  # the first batch is launched with the first commit alone
    later = asyncio.ensure_future(spool.commit(second, message()))
    await asyncio.sleep(0)
    await spool.run_with_next_batch(lambda: seen.append((spool.root / "incoming" / second.queue_id).exists()))
    await asyncio.gather(running, later)
    assert seen == [True]
    assert spool.statistics().directory_syncs_total == 2  # two batches, not three


async def test_a_failing_task_fails_only_its_own_caller(spool: Spool) -> None:
    def broken() -> None:
        raise ValueError("the task's own failure")

    committed = asyncio.ensure_future(spool.commit(envelope(), message()))
    with pytest.raises(ValueError, match="the task's own failure"):
        await spool.run_with_next_batch(broken)
    await committed  # the commit beside it is unaffected
    assert spool.statistics().messages["incoming"] == 1


@pytest.mark.parametrize("size", ["small", "large"])
async def test_follow_ups_are_durable_before_their_messages_become_visible(spool: Spool, size: str) -> None:
    # Each record runs once its message's bytes are written and before the message is in incoming/;
    # the shared flush runs once per batch, after every record, and also before any message of the
    # batch is renamed into view: a message is never in the queue without its decision on disk.
    events: list[str] = []
    sent = [envelope() for _ in range(3)]
    content = message(body="x" * (LARGE_MESSAGE + 1)) if size == "large" else message()

    def visible() -> list[str]:
        return [e.queue_id for e in sent if (spool.root / "incoming" / e.queue_id).exists()]

    def recorder(queue_id: str) -> Callable[[], None]:
        def record() -> None:
            assert not (spool.root / "incoming" / queue_id).exists()
            assert any(path.name.startswith(queue_id) for path in (spool.root / "tmp").iterdir())
            events.append(f"record {queue_id}")

        return record

    def flush() -> None:
        events.append(f"flush {len(visible())} visible")

    blocker = asyncio.ensure_future(spool.commit(envelope(), message()))
    await asyncio.sleep(0)  # the next commits wait for this batch, so they share the following one
    commits = [spool.commit(e, content, FollowUp(recorder(e.queue_id), flush)) for e in sent]
    await asyncio.gather(blocker, *commits)
    records = [event for event in events if event.startswith("record")]
    flushes = [event for event in events if event.startswith("flush")]
    assert sorted(records) == sorted(f"record {e.queue_id}" for e in sent)
    assert events[-1].startswith("flush")  # every record is followed by a flush of its batch
    assert all(event == "flush 0 visible" for event in flushes) or size == "large"
    assert sorted(visible()) == sorted(e.queue_id for e in sent)  # and all stored once they return
    if size == "small":  # small messages submitted together share one batch: one flush in all
        assert len(flushes) == 1
    else:  # a large one is written on a thread of its own first, and may reach a later batch
        assert len(flushes) <= len(sent)


async def test_a_change_that_fails_after_its_record_is_withdrawn_and_flushed(spool: Spool) -> None:
    # The record is written before the message is made durable; a message that then cannot be
    # stored (here: its folder is gone when the batch renames it) must not leave the record standing.
    ran: list[str] = []
    incoming = spool.root / "incoming"

    def record() -> None:
        ran.append("record")
        incoming.rmdir()  # after the message is written, before it is renamed into incoming/

    with pytest.raises(SpoolError):
        await spool.commit(
            envelope(),
            message(),
            FollowUp(record, lambda: ran.append("flush"), lambda: ran.append("withdraw")),
        )
    assert ran == ["record", "flush", "withdraw", "flush"]
    assert list((spool.root / "tmp").iterdir()) == []  # nothing half-stored is left behind


async def test_a_follow_up_does_not_run_when_its_message_was_not_stored(spool: Spool) -> None:
    # The message cannot even be written (its file cannot be created): nothing is recorded. (A
    # message written and then not renamed into view is withdrawn: see the test above.)
    ran: list[str] = []
    (spool.root / "tmp").rmdir()
    (spool.root / "tmp").write_bytes(b"")  # root ignores permissions; a file blocks the folder
    with pytest.raises(SpoolError):
        await spool.commit(
            envelope(), message(), FollowUp(lambda: ran.append("record"), lambda: ran.append("flush"))
        )
    assert ran == []


async def test_a_failing_follow_up_is_logged_and_the_commit_stands(
    spool: Spool, caplog: pytest.LogCaptureFixture
) -> None:
    def broken() -> None:
        raise ValueError("Jane Doe's words")  # never logged: only the exception's type

    sent, beside = envelope(), envelope()
    flushed: list[bool] = []
    with caplog.at_level(logging.ERROR, logger="gateway.state.spool"):
        await asyncio.gather(
            spool.commit(sent, message(), FollowUp(broken, lambda: flushed.append(True))),
            spool.commit(beside, message(), FollowUp(lambda: None, broken)),
        )
    assert spool.load(sent.queue_id).state is QueueState.INCOMING
    assert spool.load(beside.queue_id).state is QueueState.INCOMING
    assert flushed == [True]  # a record that failed does not keep the batch's flush from running
    failures = [r for r in caplog.records if "spool_follow_up_failed" in r.getMessage()]
    assert len(failures) == 2
    assert all("ValueError" in r.getMessage() and "Jane" not in r.getMessage() for r in failures)


async def test_a_commit_does_not_wait_behind_a_delivery_move(
    spool: Spool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A message delivered a moment before is being moved to done/ (its folder fsyncs held here): a
    # new submission's commit is durable and returns meanwhile, without waiting for that batch.
    delivered = envelope()
    await spool.commit(delivered, message())
    release = threading.Event()
    done_folder = str(spool.root / "done")
    real_fsync_directory = spool_commit.fsync_directory

    def slow_fsync_directory(path: str) -> None:
        if str(path) == done_folder:
            release.wait(5)
        real_fsync_directory(path)

    monkeypatch.setattr(spool_commit, "fsync_directory", slow_fsync_directory)
    moving = asyncio.ensure_future(spool.move(delivered.queue_id, QueueState.INCOMING, QueueState.DONE))
    await asyncio.sleep(0.05)  # the move's batch is under way, held at its fsync of done/
    try:
        sent = envelope()
        await asyncio.wait_for(spool.commit(sent, message()), timeout=2)
        assert not moving.done()
        assert spool.load(sent.queue_id).state is QueueState.INCOMING
    finally:
        release.set()
    await moving
    assert spool.load(delivered.queue_id).state is QueueState.DONE


async def test_a_cancelled_commit_caller_does_not_cancel_the_others_in_its_batch(spool: Spool) -> None:
    first, second = envelope(), envelope()
    blocker = asyncio.ensure_future(spool.commit(envelope(), message()))
    await asyncio.sleep(0)
    cancelled = asyncio.ensure_future(spool.commit(first, message()))
    kept = asyncio.ensure_future(spool.commit(second, message()))
    await asyncio.sleep(0)
    cancelled.cancel()
    await asyncio.gather(blocker, kept)
    assert cancelled.cancelled()
    assert spool.load(second.queue_id).state is QueueState.INCOMING
    # The cancelled caller's message was already in the batch: it is stored (the SMTP layer shields
    # its commits, so a client is never told "not stored" about a message that was).
    assert spool.load(first.queue_id).state is QueueState.INCOMING


async def test_a_batch_that_breaks_fails_its_callers_and_the_next_batch_runs(
    spool: Spool, monkeypatch: pytest.MonkeyPatch
) -> None:
    import gateway.state.spool_commit as spool_module

    def broken(items: object) -> None:
        raise RuntimeError("the batch broke")

    monkeypatch.setattr(spool_module, "_apply_batch", broken)
    with pytest.raises(RuntimeError, match="the batch broke"):
        await spool.commit(envelope(), message())
    monkeypatch.undo()
    sent = envelope()
    await asyncio.wait_for(spool.commit(sent, message()), 5)  # the committer is not left "running"
    assert spool.load(sent.queue_id).state is QueueState.INCOMING


async def test_a_failed_commit_raises_spool_error_and_leaves_nothing(spool: Spool) -> None:
    (spool.root / "incoming").rmdir()
    (spool.root / "incoming").write_bytes(b"")  # root ignores permissions; a file blocks the folder
    with pytest.raises(SpoolError, match="cannot store message"):
        await spool.commit(envelope(), message())
    assert list((spool.root / "tmp").iterdir()) == []
    assert spool.statistics().commit_failures_total == 1


async def test_large_messages_are_committed_too(spool: Spool) -> None:
    big = message(body=("x" * 76 + "\r\n") * 20_000)  # 1.5 MB: flushed on its own thread
    small = envelope()
    large = envelope()
    await asyncio.gather(spool.commit(large, big), spool.commit(small, message()))
    assert spool.load(large.queue_id).content == big
    assert spool.load(small.queue_id).content == message()


@pytest.mark.parametrize(
    "queue_id", ["../escape", "a/b", "", ".hidden", "x" * 200, "name.with.dots"], ids=repr
)
async def test_unsafe_queue_ids_are_refused(spool: Spool, queue_id: str) -> None:
    with pytest.raises(SpoolError, match="not a valid queue id"):
        await spool.commit(envelope(queue_id=queue_id), message())


async def test_no_recipients_is_refused(spool: Spool) -> None:
    with pytest.raises(SpoolError, match="no recipients"):
        await spool.commit(envelope(rcpt_tos=()), message())


def test_queue_ids_are_unique_sortable_and_file_safe() -> None:
    ids = [Spool.new_queue_id() for _ in range(2000)]
    assert len(set(ids)) == len(ids)
    assert all(i.isalnum() and i == i.upper() for i in ids)
    first = Spool.new_queue_id()
    time.sleep(0.002)
    assert Spool.new_queue_id() > first


async def test_listing_retry_and_delete(spool: Spool) -> None:
    first, second = envelope(), envelope()
    await spool.commit(first, message())
    await spool.commit(second, message())
    status = DeliveryStatus.initial(second)
    status = status.updated(
        {"bob@example.org": RecipientStatus("bob@example.org", "deferred", "451 4.3.0 later")}
    )
    await spool.write_status(second.queue_id, status)
    await spool.move(second.queue_id, QueueState.INCOMING, QueueState.DEFERRED)

    listed = spool.entries()
    assert [(e.queue_id, e.state) for e in listed] == [
        (first.queue_id, QueueState.INCOMING),
        (second.queue_id, QueueState.DEFERRED),
    ]
    assert listed[1].envelope == second and listed[1].status == status
    assert listed[0].size == len(message())
    assert spool.find(second.queue_id).state is QueueState.DEFERRED

    spool.retry(second.queue_id)
    assert spool.find(second.queue_id).state is QueueState.INCOMING
    with pytest.raises(SpoolError, match="no message"):
        spool.retry("NOSUCHID")

    assert spool.delete(first.queue_id) is QueueState.INCOMING
    assert spool.delete(second.queue_id) is QueueState.INCOMING
    assert spool.entries() == []
    assert list(spool.status_dir.iterdir()) == []


async def test_only_deferred_mail_can_be_retried(spool: Spool) -> None:
    sent = envelope()
    await spool.commit(sent, message())
    await spool.move(sent.queue_id, QueueState.INCOMING, QueueState.DONE)
    with pytest.raises(SpoolError, match="only deferred mail"):
        spool.retry(sent.queue_id)


async def test_retry_all_sends_every_deferred_message_back(spool: Spool) -> None:
    for _ in range(3):
        sent = envelope()
        await spool.commit(sent, message())
        await spool.move(sent.queue_id, QueueState.INCOMING, QueueState.DEFERRED)
    assert spool.retry_all() == 3
    assert spool.statistics().messages["incoming"] == 3


@pytest.mark.parametrize(
    ("damage", "problem", "header_readable"),
    [
        pytest.param(lambda raw: raw[: len(raw) - 5], "content is", True, id="truncated-content"),
        pytest.param(
            lambda raw: raw.replace(b"Hello there", b"Hello thorn"), "checksum", True, id="bit-flip"
        ),
        pytest.param(lambda raw: raw[:20], "truncated envelope", False, id="truncated-envelope"),
        pytest.param(lambda raw: b"GARBAGE" + raw, "not a spool file", False, id="bad-magic"),
        pytest.param(lambda raw: b"", "not a spool file", False, id="empty"),
        pytest.param(
            lambda raw: raw.replace(b'"rcpt_tos"', b'"rcpt_tox"'), "misses", False, id="missing-field"
        ),
    ],
)
async def test_damaged_entries_are_detected(
    spool: Spool, damage: Callable[[bytes], bytes], problem: str, header_readable: bool
) -> None:
    sent = envelope()
    await spool.commit(sent, message())
    path = spool.path(sent.queue_id, QueueState.INCOMING)
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(CorruptSpoolEntry, match=problem):
        Spool(spool.root).load(sent.queue_id)
    # Listings read only the envelope: damage behind it shows when the message is read in full.
    [entry] = spool.entries()
    if header_readable:
        assert entry.envelope == sent
    else:
        assert entry.envelope is None and problem in entry.problem


async def test_quarantine_moves_entry_and_status_to_corrupt_with_a_log_line(
    spool: Spool, caplog: pytest.LogCaptureFixture
) -> None:
    sent = envelope()
    await spool.commit(sent, message(subject="Secret subject"))
    await spool.write_status(sent.queue_id, DeliveryStatus.initial(sent))
    with caplog.at_level(logging.ERROR, logger="gateway.state.spool"):
        await spool.quarantine(sent.queue_id, QueueState.INCOMING, "checksum mismatch")
    assert spool.find(sent.queue_id).state is QueueState.CORRUPT
    assert (spool.folder(QueueState.CORRUPT) / f"{sent.queue_id}.status.json").exists()
    assert spool.statistics().messages == {
        "incoming": 0,
        "deferred": 0,
        "done": 0,
        "bounced": 0,
        "corrupt": 1,
    }
    assert f"event=spool_corrupt queue_id={sent.queue_id}" in caplog.text
    assert "Secret" not in caplog.text
    with pytest.raises(CorruptSpoolEntry):
        spool.load(sent.queue_id)
    assert spool.delete(sent.queue_id) is QueueState.CORRUPT


async def test_recover_removes_stale_tmp_and_orphans_and_moves_strangers_aside(tmp_path: Path) -> None:
    root = tmp_path / "spool"
    crashed = Spool(root)
    kept = envelope()
    await crashed.commit(kept, message())
    (root / "tmp" / "ABC.deadbeef0000.tmp").write_bytes(b"CGSPOOL/1 999\n{half")
    (root / "status" / "GONE.json").write_bytes(b"{}")
    (root / "incoming" / "notes.txt").write_bytes(b"someone's editor")

    restarted = Spool(root)
    report = restarted.recover()
    assert report.removed_tmp_files == 1
    assert report.removed_orphan_status_files == 1
    assert report.quarantined == ("notes.txt",)
    assert list((root / "tmp").iterdir()) == []
    assert restarted.pending_ids(QueueState.INCOMING) == [kept.queue_id]
    assert (root / "corrupt" / "notes.txt").exists()


async def test_recover_leaves_this_instances_own_tmp_files(spool: Spool) -> None:
    # The intake of the same process may be mid-commit while delivery starts up.
    own = spool.tmp_dir / f"X.{spool._token}.tmp"
    own.write_bytes(b"in progress")
    spool.recover()
    assert own.exists()


async def test_unreadable_status_is_set_aside_and_the_message_kept(spool: Spool) -> None:
    sent = envelope()
    await spool.commit(sent, message())
    spool.status_path(sent.queue_id).write_bytes(b"{not json")
    loaded = await Spool(spool.root).read(sent.queue_id, QueueState.INCOMING)
    assert loaded.envelope == sent and loaded.status is None
    assert (spool.folder(QueueState.CORRUPT) / f"{sent.queue_id}.status.json").exists()


async def test_prune_deletes_finished_messages_after_their_retention(spool: Spool) -> None:
    done, bounced, deferred = envelope(), envelope(), envelope()
    for e, state in ((done, QueueState.DONE), (bounced, QueueState.BOUNCED), (deferred, QueueState.DEFERRED)):
        await spool.commit(e, message())
        await spool.move(e.queue_id, QueueState.INCOMING, state)
    now = time.time()
    assert await spool.prune(now=now + 10, done_retention=60, bounced_retention=600) == 0
    assert await spool.prune(now=now + 120, done_retention=60, bounced_retention=600) == 1
    assert spool.locate(done.queue_id) is None
    assert spool.locate(bounced.queue_id) is QueueState.BOUNCED
    assert await spool.prune(now=now + 700, done_retention=60, bounced_retention=600) == 1
    assert spool.locate(deferred.queue_id) is QueueState.DEFERRED


async def test_delivery_lock_is_exclusive(spool: Spool) -> None:
    other = Spool(spool.root)
    with (
        spool.delivery_lock(),
        pytest.raises(SpoolError, match="another conduct-gateway process"),
        other.delivery_lock(),
    ):
        pass
    with other.delivery_lock():
        pass


async def test_commit_listeners_hear_of_durable_commits(spool: Spool) -> None:
    heard: list[str] = []
    unsubscribe = spool.on_commit(heard.append)
    first = envelope()
    await spool.commit(first, message())
    unsubscribe()
    await spool.commit(envelope(), message())
    assert heard == [first.queue_id]


def test_entry_format_round_trips_odd_addresses() -> None:
    sent = envelope(rcpt_tos=("j\u00fcrgen@b\u00fccher.example", '"odd local"@example.org'), mail_from="")
    content = b"\xff\xfe binary-ish \r\n"
    raw = encode_entry(sent, content) + content
    assert decode_entry(raw, sent.queue_id) == (sent, content)
    with pytest.raises(CorruptSpoolEntry, match="another queue id"):
        decode_entry(raw, "SOMEOTHERID")


async def test_statistics_give_the_age_of_the_oldest_waiting_message(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    assert spool.statistics().oldest_age_seconds == {"incoming": 0.0, "deferred": 0.0}
    first = Spool.new_queue_id()
    await spool.commit(
        SpoolEnvelope(first, "a@example.org", ("b@example.org",), "a@example.org", time.time()), b"x\r\n"
    )
    second = Spool.new_queue_id()
    await spool.commit(
        SpoolEnvelope(second, "a@example.org", ("b@example.org",), "a@example.org", time.time()), b"y\r\n"
    )
    hour_ago = time.time() - 3600
    os.utime(spool.path(first, QueueState.INCOMING), (hour_ago, hour_ago))
    await spool.move(first, QueueState.INCOMING, QueueState.DEFERRED)  # a move keeps the acceptance time
    ages = spool.statistics().oldest_age_seconds
    assert 3590 < ages["deferred"] < 3700
    assert 0 <= ages["incoming"] < 60
