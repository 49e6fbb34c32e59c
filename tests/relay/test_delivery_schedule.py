"""The delivery worker's timetable on its own: ready, scheduled and in-flight messages, without a clock."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from gateway.delivery.schedule import Schedule
from gateway.state.spool import QueueState

INCOMING, DEFERRED = QueueState.INCOMING, QueueState.DEFERRED


def test_messages_become_ready_when_due_in_time_order() -> None:
    plan = Schedule()
    plan.schedule("B", DEFERRED, 20.0)
    plan.schedule("A", DEFERRED, 10.0)
    assert plan.promote_due(5.0) == 10.0 and not plan.ready
    assert plan.promote_due(15.0) == 20.0 and list(plan.ready) == ["A"]
    assert plan.promote_due(25.0) is None and list(plan.ready) == ["A", "B"]
    assert plan.due == {}


def test_a_rescheduled_message_is_due_only_at_its_new_time() -> None:
    plan = Schedule()
    plan.schedule("A", DEFERRED, 10.0)
    plan.schedule("A", DEFERRED, 30.0)
    assert plan.promote_due(20.0) == 30.0 and not plan.ready


def test_enqueue_takes_a_scheduled_message_now_but_never_one_in_flight_or_ready() -> None:
    plan = Schedule()
    plan.schedule("A", DEFERRED, 100.0)
    plan.enqueue("A", INCOMING)  # `queue retry` sent it back to incoming/
    assert list(plan.ready) == ["A"] and plan.where == {"A": INCOMING} and plan.due == {}
    plan.enqueue("A", INCOMING)
    assert list(plan.ready) == ["A"]
    assert plan.next_ready() == "A" and plan.start("A") is INCOMING
    plan.enqueue("A", INCOMING)
    assert not plan.ready and plan.active == {"A"}
    plan.finish("A")
    assert not plan.active


def test_next_ready_can_be_restricted() -> None:
    plan = Schedule()
    for queue_id in ("A", "B", "C"):
        plan.enqueue(queue_id, INCOMING)
    assert plan.next_ready(only={"B"}) == "B"
    assert plan.next_ready(only=set()) is None
    assert list(plan.ready) == ["A", "C"]


@given(st.lists(st.tuples(st.sampled_from("ABCD"), st.floats(0, 100)), max_size=20), st.floats(0, 100))
def test_every_message_is_in_exactly_one_place(steps: list[tuple[str, float]], now: float) -> None:
    plan = Schedule()
    for queue_id, when in steps:
        plan.schedule(queue_id, DEFERRED, when)
    plan.promote_due(now)
    ready = list(plan.ready)
    assert len(ready) == len(set(ready))
    assert set(ready).isdisjoint(plan.due)
    assert set(ready) | set(plan.due) == {queue_id for queue_id, _ in steps}
    assert all(when > now for when in plan.due.values())
