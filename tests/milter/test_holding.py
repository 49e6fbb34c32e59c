"""Postfix's hold queue following the review desk: released once, deleted once, retried after a failure."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

from gateway.milter.holding import HoldQueue, PostfixQueue
from gateway.state.holds import HoldRecord, Status


def record(reference: str, status: Status, release_queue_id: str | None = None) -> HoldRecord:
    return HoldRecord(
        reference=reference,
        status=status,
        created_at=0.0,
        expires_at=1.0,
        sender="ada@example.org",
        sender_account="ada@example.org",
        sender_name="Ada Quill",
        rcpt_tos=("olive@example.net",),
        release_rcpt_tos=("olive@example.net", "conduct@example.org"),
        release_queue_id=release_queue_id,
    )


class Recorder(PostfixQueue):
    def __init__(self, succeed: bool = True) -> None:
        super().__init__(("postsuper",))
        object.__setattr__(self, "calls", [])
        object.__setattr__(self, "succeed", succeed)

    async def run(self, flag: str, references: Sequence[str]) -> bool:
        self.calls.append((flag, list(references)))  # type: ignore[attr-defined]
        return self.succeed  # type: ignore[attr-defined,no-any-return]


async def test_approved_by_reply_is_released_and_everything_else_decided_is_deleted_once() -> None:
    records = [
        record("HELD1", "held"),
        record("BYREPLY", "released", "R1"),
        record("BYCLI", "released", "R2"),  # the CLI put the approved copy in the gateway's queue
        record("REJECTED", "rejected"),
        record("EXPIRED", "expired"),
        record("CANCELLED", "cancelled"),
    ]
    queue = Recorder()
    holds = HoldQueue(queue, lambda: records, lambda queue_id: queue_id == "R2")
    await holds.round()
    await holds.round()  # a second round finds nothing left to do
    assert queue.calls == [  # type: ignore[attr-defined]
        ("-H", ["BYREPLY"]),
        ("-d", ["BYCLI", "REJECTED", "EXPIRED", "CANCELLED"]),
    ]


async def test_a_failed_postsuper_is_tried_again_at_the_next_round() -> None:
    queue = Recorder(succeed=False)
    holds = HoldQueue(queue, lambda: [record("BYREPLY", "released", "R1")], lambda _id: False)
    await holds.round()
    await holds.round()
    assert queue.calls == [("-H", ["BYREPLY"]), ("-H", ["BYREPLY"])]  # type: ignore[attr-defined]


async def test_postsuper_gets_the_instance_the_flag_and_the_ids_on_standard_input(tmp_path: Path) -> None:
    log = tmp_path / "calls.json"
    script = f"import json, sys; open({str(log)!r}, 'w').write(json.dumps([sys.argv[1:], sys.stdin.read()]))"
    queue = PostfixQueue((sys.executable, "-c", script), "/etc/postfix-out")
    assert await queue.run("-H", ["4F1A", "4F1B"])
    assert json.loads(log.read_text()) == [["-c", "/etc/postfix-out", "-H", "-"], "4F1A\n4F1B\n"]


async def test_a_postsuper_that_fails_or_is_missing_reports_it() -> None:
    assert not await PostfixQueue((sys.executable, "-c", "raise SystemExit(1)")).run("-d", ["4F1A"])
    assert not await PostfixQueue(("/nonexistent/postsuper",)).run("-d", ["4F1A"])
    assert await PostfixQueue(("/nonexistent/postsuper",)).run("-d", [])  # nothing to do: not run
