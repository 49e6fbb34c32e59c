"""The durable step behind a 250: the message and its decision reach the disk together, in an order
that never leaves a queued message without its decision, whatever moment the process dies at.

The acceptance's audit entry is written once the message's bytes are, flushed while the message's
data is, and both are on disk before the message is renamed into incoming/ (where delivery finds
it). A process killed (``os._exit``, as kill -9) between any two of those steps leaves either no
queued message (the client heard no 250 and sends again) or a queued message whose decision is in
the audit trail; a message that cannot be stored after its decision was written gets a second entry
saying so.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gateway import replies
from gateway.decision.commit import CommitState, DecisionStores, commit
from gateway.decision.disposition import Disposition, Relay
from gateway.decision.screening import Submission
from gateway.state.audit import AuditTrail, DecisionRecord
from gateway.state.audit_reading import read_entries
from gateway.state.spool import QueueState, Spool

CONTENT = b"From: <ada@example.org>\r\nSubject: ordering\r\n\r\nBody.\r\n"
REPO = Path(__file__).resolve().parents[2]


def submission(queue_id: str) -> Submission:
    return Submission(queue_id, "ada@example.org", ("olive@example.net",), "ada@example.org", CONTENT)


def relayed(queue_id: str) -> Disposition:
    record = DecisionRecord(queue_id, "ada@example.org", "deliver", "250 2.0.0", "v1", message=CONTENT)
    return Disposition(
        replies.queued(queue_id),
        rcpt_tos=("olive@example.net",),
        relay=Relay(CONTENT, ("olive@example.net",)),
        audit=(record,),
    )


def where(fd: int) -> str:
    return os.readlink(f"/proc/self/fd/{fd}")


async def test_the_decision_is_on_disk_before_its_message_is_renamed_into_the_queue(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spool = Spool(tmp_path / "spool")
    audit = AuditTrail.open(tmp_path / "audit", deferred=True)
    steps: list[str] = []

    def spy(name: str, real: Callable[..., Any], describe: Callable[..., str]) -> Callable[..., Any]:
        def call(*args: Any) -> Any:
            described = describe(*args)  # before the call: a rename changes what the path names
            result = real(*args)
            steps.append(f"{name} {described}")
            return result

        return call

    monkeypatch.setattr(os, "fdatasync", spy("fdatasync", os.fdatasync, where))
    monkeypatch.setattr(os, "fsync", spy("fsync", os.fsync, where))
    monkeypatch.setattr(os, "rename", spy("rename", os.rename, lambda source, target: str(target)))
    try:
        committed = await commit(
            relayed("Q1"), CommitState.of(spool, DecisionStores(audit)), submission("Q1")
        )
    finally:
        audit.close()
    assert committed.reply == replies.queued("Q1")
    into_queue = steps.index(f"rename {spool.root / 'incoming' / 'Q1'}")
    before, after = steps[:into_queue], steps[into_queue + 1 :]
    flushed = {step.rsplit("/", 1)[-1] for step in before if step.startswith("fdatasync")}
    assert {"audit.jsonl", "salts.jsonl"} <= flushed  # the decision, flushed before the rename ...
    assert any(name.startswith("Q1.") for name in flushed)  # ... as the message's own data is
    assert after == [f"fsync {spool.root / 'incoming'}"]  # then the folder: the message is queued
    assert [entry.fields["queue_id"] for entry in read_entries(tmp_path / "audit")] == ["Q1"]


async def test_a_message_recorded_then_not_stored_gets_a_second_entry_saying_so(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    audit = AuditTrail.open(tmp_path / "audit", deferred=True)
    (spool.root / "incoming").rmdir()  # the rename into the queue fails, after the record is written
    try:
        committed = await commit(
            relayed("Q1"), CommitState.of(spool, DecisionStores(audit)), submission("Q1")
        )
        assert not audit.unflushed  # the withdrawal is flushed too
    finally:
        audit.close()
    assert committed.reply == replies.STORE_FAILED
    entries = [entry.fields for entry in read_entries(tmp_path / "audit")]
    assert [(e["queue_id"], e["verdict"], e["reply"]) for e in entries] == [
        ("Q1", "deliver", "250 2.0.0"),
        ("Q1", "tempfail", "451 4.3.0"),
    ]
    assert entries[1]["error"] == "SpoolError"


# The child commits one message and dies (os._exit, as kill -9) at ``POINT``: the first time the
# named call is made for the message (the rename into the queue, or the queue folder's fsync).
CHILD = textwrap.dedent(
    """
    import asyncio, os, sys
    sys.path.insert(0, sys.argv[3])
    from pathlib import Path
    from tests.faults.test_commit_ordering import relayed, submission
    from gateway.decision.commit import CommitState, DecisionStores, commit
    from gateway.state.audit import AuditTrail
    from gateway.state.spool import Spool

    root, point = Path(sys.argv[1]), sys.argv[2]
    spool = Spool(root / "spool")
    audit = AuditTrail.open(root / "audit", deferred=True)
    real_rename, real_fsync = os.rename, os.fsync

    def rename(source, target):
        if point == "before-rename" and "/incoming/" in str(target):
            os._exit(86)
        real_rename(source, target)

    def fsync(fd):
        if point == "before-folder-fsync" and os.readlink(f"/proc/self/fd/{fd}").endswith("/incoming"):
            os._exit(86)
        real_fsync(fd)

    os.rename, os.fsync = rename, fsync
    asyncio.run(commit(relayed("Q1"), CommitState.of(spool, DecisionStores(audit)), submission("Q1")))
    print("answered 250")
    """
)


@pytest.mark.parametrize("point", ["before-rename", "before-folder-fsync"])
def test_a_crash_inside_the_durable_step_never_leaves_a_queued_message_without_its_decision(
    tmp_path: Path, point: str
) -> None:
    child = subprocess.run(
        [sys.executable, "-c", CHILD, str(tmp_path), point, str(REPO)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert child.returncode == 86, child.stderr
    assert "answered 250" not in child.stdout  # no 250 was given: the client sends it again
    spool = Spool(tmp_path / "spool")
    spool.recover()  # as the restarted gateway does
    queued = spool.pending_ids(QueueState.INCOMING)
    decided = {entry.fields["queue_id"] for entry in read_entries(tmp_path / "audit")}
    assert decided == {"Q1"}  # the decision was on disk before the message could be queued
    assert queued == ([] if point == "before-rename" else ["Q1"])
    assert set(queued) <= decided
    assert list(spool.tmp_dir.iterdir()) == []  # the half-stored copy is gone
