"""The commit step: a disposition is applied in order, and undone when an essential message is not stored."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest

from gateway import replies
from gateway.decision import disposition
from gateway.decision.commit import CommitState, DecisionStores, commit
from gateway.decision.disposition import Disposition, LedgerStep, Relay
from gateway.decision.screening import Accept, Outgoing, PassThrough, Ruling, Screener, Submission
from gateway.decision.thread_steps import ThreadStep, ThreadSteps
from gateway.errors import SpoolError
from gateway.state.audit import DecisionRecord
from gateway.state.spool import FollowUp, SpoolEnvelope

SUBMISSION = Submission(
    "Q1", "ada@example.org", ("olive@example.net",), "ada@example.org", b"Subject: x\r\n\r\nx\r\n"
)
THREAD = ThreadStep("<m1@example.org>", (), (), (), (), ())


@dataclass
class Steps:
    """Everything the fake stores did, in order."""

    done: list[str] = field(default_factory=list)


@dataclass
class FakeSpool:
    steps: Steps
    failing: frozenset[str] = frozenset()

    async def commit(
        self, envelope: SpoolEnvelope, content: bytes, follow_up: FollowUp | None = None
    ) -> None:
        await asyncio.sleep(0)
        if envelope.queue_id in self.failing:
            raise SpoolError("disk full")
        self.steps.done.append(f"spool {envelope.queue_id}")
        if follow_up is not None:  # as the spool does: in the batch, once the message is durable
            follow_up.record()
            if follow_up.flush is not None:
                follow_up.flush()

    async def run_with_next_batch(self, task: Callable[[], None]) -> None:
        task()


@dataclass
class FakeAudit:
    steps: Steps

    def record_decision(self, record: DecisionRecord) -> None:
        self.steps.done.append(f"audit {record.queue_id}")

    def flush(self) -> None:
        self.steps.done.append("flush")


@dataclass
class FakeHolds:
    steps: Steps

    def confirm(self, key: str) -> None:
        self.steps.done.append(f"confirm {key}")

    def undo(self, key: str) -> None:
        self.steps.done.append(f"undo {key}")


@dataclass
class FakeLedger:
    steps: Steps

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        yield

    def record(self, message_id: str, **_thread: object) -> None:
        self.steps.done.append(f"ledger {message_id}")


def state(steps: Steps, failing: frozenset[str] = frozenset()) -> CommitState:
    threads = ThreadSteps(FakeLedger(steps))  # type: ignore[arg-type]
    return CommitState.of(
        FakeSpool(steps, failing), DecisionStores(FakeAudit(steps), threads, FakeHolds(steps))
    )


def record() -> DecisionRecord:
    return DecisionRecord("Q1", "ada@example.org", "hold", "250 2.0.0", "v1")


def held(*, essential: bool = True) -> Disposition:
    request = Outgoing("Q1R", "", ("ben@example.org",), b"Subject: r\r\n\r\nr\r\n", essential)
    notice = Outgoing("Q1N", "", ("ada@example.org",), b"Subject: n\r\n\r\nn\r\n")
    return Disposition(
        replies.accepted_as(("Held for review.",)),
        rcpt_tos=("olive@example.net",),
        outgoing=(request, notice),
        hold="Q1",
        audit=(record(),),
        ledger=(LedgerStep("Q1", THREAD, None),),
    )


async def test_a_hold_is_confirmed_once_its_messages_are_spooled_then_audited_flushed_and_learnt() -> None:
    steps = Steps()
    committed = await commit(held(), state(steps), SUBMISSION)
    assert committed.reply == replies.accepted_as(("Held for review.",))
    assert sorted(steps.done[:2]) == ["spool Q1N", "spool Q1R"]
    assert steps.done[2:] == ["confirm Q1", "audit Q1", "flush", "ledger <m1@example.org>"]


async def test_an_essential_message_not_stored_undoes_the_hold_and_records_nothing() -> None:
    steps = Steps()
    committed = await commit(held(), state(steps, failing=frozenset({"Q1R"})), SUBMISSION)
    assert committed.reply == replies.STORE_FAILED
    assert steps.done == ["spool Q1N", "undo Q1"]


async def test_a_best_effort_message_not_stored_does_not_fail_the_hold() -> None:
    steps = Steps()
    committed = await commit(held(essential=False), state(steps, failing=frozenset({"Q1R"})), SUBMISSION)
    assert committed.reply.is_success
    assert steps.done == ["spool Q1N", "confirm Q1", "audit Q1", "flush", "ledger <m1@example.org>"]


async def test_a_relayed_message_is_recorded_and_flushed_in_the_batch_that_stores_it() -> None:
    steps = Steps()
    relayed = Disposition(
        replies.queued("Q1"),
        rcpt_tos=SUBMISSION.rcpt_tos,
        relay=Relay(SUBMISSION.content, SUBMISSION.rcpt_tos),
        audit=(record(),),
        ledger=(LedgerStep("Q1", THREAD, None),),
    )
    committed = await commit(relayed, state(steps), SUBMISSION, b"Received: by test\r\n")
    assert committed.reply == replies.queued("Q1")
    assert committed.accepted_bytes == len(b"Received: by test\r\n" + SUBMISSION.content)
    # All inside the spool's commit: nothing is left for the event loop to record afterwards.
    assert steps.done == ["spool Q1", "audit Q1", "flush", "ledger <m1@example.org>"]


async def test_a_relayed_message_that_cannot_be_stored_records_nothing() -> None:
    steps = Steps()
    relayed = Disposition(
        replies.queued("Q1"), relay=Relay(SUBMISSION.content, SUBMISSION.rcpt_tos), audit=(record(),)
    )
    committed = await commit(relayed, state(steps, failing=frozenset({"Q1"})), SUBMISSION)
    assert committed.reply == replies.STORE_FAILED
    assert steps.done == []


@pytest.mark.parametrize(
    ("verdict", "hold"),
    [
        pytest.param(Ruling.DELIVER, None, id="deliver"),
        pytest.param(Ruling.REWRITE, None, id="rewrite"),
        pytest.param(Ruling.HOLD, "Q1", id="hold"),
        pytest.param(Ruling.REVIEW, "Q1", id="review"),
    ],
)
def test_the_review_desk_confirms_only_holds_and_review_decisions(verdict: Ruling, hold: str | None) -> None:
    accept = Accept(content=b"", rcpt_tos=("olive@example.net",), verdict=verdict)
    assert disposition.acceptance(SUBMISSION, accept).hold == hold


async def test_pass_through_is_a_screener_that_records_nothing() -> None:
    screener: Screener = PassThrough()
    decided = await screener.decide(SUBMISSION)
    assert decided.relay == Relay(SUBMISSION.content, SUBMISSION.rcpt_tos)
    assert decided.reply == replies.queued("Q1")
    assert decided.audit == () and decided.hold is None
    assert CommitState.of(FakeSpool(Steps()), screener.stores).shared_flush is None
