"""The shared group-commit loop (gateway/state/batching.py) of the files spool and the PostgreSQL queue."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.state.batching import Batcher, FollowUp, run_follow_ups, run_tasks


@dataclass(frozen=True)
class Outcome:
    errors: list[BaseException | None]


class Recorder:
    """An apply function that records each batch and fails the items named in ``failing``."""

    def __init__(self, failing: Sequence[int] = (), gate: threading.Event | None = None) -> None:
        self.batches: list[list[int]] = []
        self.failing = set(failing)
        self.gate = gate

    def __call__(self, items: list[int]) -> Outcome:
        if self.gate is not None:
            self.gate.wait(5)
        self.batches.append(items)
        return Outcome([ValueError(item) if item in self.failing else None for item in items])


def test_items_submitted_while_a_batch_runs_form_the_next_batch() -> None:
    gate = threading.Event()
    recorder = Recorder(gate=gate)
    seen: list[Outcome] = []
    batcher: Batcher[int, Outcome] = Batcher(recorder, seen.append)

    async def scenario() -> None:
        first = asyncio.ensure_future(batcher.apply(0))
        await asyncio.sleep(0)  # the first batch (item 0) is now running, held at the gate
        rest = [asyncio.ensure_future(batcher.apply(item)) for item in (1, 2, 3)]
        await asyncio.sleep(0)
        gate.set()
        await asyncio.gather(first, *rest)

    asyncio.run(scenario())
    assert recorder.batches == [[0], [1, 2, 3]]
    assert len(seen) == 2


@settings(max_examples=30, deadline=None)
@given(items=st.lists(st.integers(0, 50), min_size=1, max_size=20, unique=True), data=st.data())
def test_each_caller_gets_its_own_items_error_and_only_that(items: list[int], data: st.DataObject) -> None:
    failing = data.draw(st.sets(st.sampled_from(items)))
    batcher: Batcher[int, Outcome] = Batcher(Recorder(failing), lambda outcome: None)

    async def scenario() -> list[BaseException | None]:
        results = await asyncio.gather(*(batcher.apply(item) for item in items), return_exceptions=True)
        return [result if isinstance(result, BaseException) else None for result in results]

    results = asyncio.run(scenario())
    for item, result in zip(items, results, strict=True):
        if item in failing:
            assert isinstance(result, ValueError)
            assert result.args == (item,)
        else:
            assert result is None


def test_an_apply_that_raises_fails_every_caller_of_its_batch_and_the_next_batch_still_runs() -> None:
    calls: list[list[int]] = []

    def apply(items: list[int]) -> Outcome:
        calls.append(items)
        if len(calls) == 1:
            raise OSError("disk gone")
        return Outcome([None] * len(items))

    batcher: Batcher[int, Outcome] = Batcher(apply, lambda outcome: None)

    async def scenario() -> None:
        with pytest.raises(OSError, match="disk gone"):
            await batcher.apply(1)
        await batcher.apply(2)

    asyncio.run(scenario())
    assert calls == [[1], [2]]


def test_a_new_event_loop_starts_afresh() -> None:
    recorder = Recorder()
    batcher: Batcher[int, Outcome] = Batcher(recorder, lambda outcome: None)
    asyncio.run(batcher.apply(1))
    asyncio.run(batcher.apply(2))
    assert recorder.batches == [[1], [2]]


def test_follow_ups_record_each_durable_change_and_flush_once_per_distinct_flush() -> None:
    events: list[str] = []

    def flush() -> None:
        events.append("flush")

    def failing_record() -> None:
        raise RuntimeError("the follow-up logs its own trouble")

    follow_ups: list[FollowUp | None] = [
        FollowUp(lambda: events.append("a"), flush),
        FollowUp(lambda: events.append("b"), flush),
        FollowUp(lambda: events.append("not durable"), flush),
        None,
        FollowUp(failing_record),
    ]
    run_follow_ups(follow_ups, [None, None, OSError("no"), None, None])
    assert events == ["a", "b", "flush"]


def test_a_task_given_by_several_callers_runs_once_and_each_gets_its_outcome() -> None:
    ran: list[str] = []

    def shared() -> None:
        ran.append("shared")

    def broken() -> None:
        ran.append("broken")
        raise OSError(5, "Input/output error")

    def other() -> None:
        ran.append("other")

    errors = run_tasks([shared, broken, shared, other, broken])
    assert ran == ["shared", "broken", "other"]  # each distinct task once, in order of first arrival
    assert [type(error) if error else None for error in errors] == [None, OSError, None, None, OSError]
    assert errors[1] is errors[4]  # both callers of the failing task get its failure
