"""Delivery status transitions as a pure table: each recipient's state machine, an attempt's bookkeeping."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.delivery.model import RecipientResult
from gateway.delivery.status import (
    NO_ATTEMPT_REPLY,
    TRANSITIONS,
    attempt_outcome,
    backoff,
    dsn_sent,
    expire,
    next_attempt_text,
    next_state,
    record_attempt,
    reported,
    schedule,
)
from gateway.state.delivery_status import DeliveryStatus, RecipientStatus, decode_status, encode_status
from gateway.state.spool import SpoolEnvelope

NOW = 1_700_000_000.0


@pytest.mark.parametrize(
    ("state", "event", "target"),
    [
        pytest.param("pending", "delivered", "delivered", id="pending-2xx"),
        pytest.param("pending", "failed", "failed", id="pending-5xx"),
        pytest.param("pending", "deferred", "deferred", id="pending-4xx"),
        pytest.param("pending", "expired", "failed", id="pending-expired"),
        pytest.param("deferred", "delivered", "delivered", id="deferred-2xx"),
        pytest.param("deferred", "failed", "failed", id="deferred-5xx"),
        pytest.param("deferred", "deferred", "deferred", id="deferred-4xx"),
        pytest.param("deferred", "expired", "failed", id="deferred-expired"),
    ],
)
def test_a_recipient_still_to_be_tried_moves_as_the_table_says(state: Any, event: Any, target: str) -> None:
    assert next_state(state, event) == target


@pytest.mark.parametrize("state", ["delivered", "failed"])
@pytest.mark.parametrize("event", ["delivered", "deferred", "failed", "expired"])
def test_delivered_and_failed_are_final(state: Any, event: Any) -> None:
    with pytest.raises(ValueError, match="cannot become"):
        next_state(state, event)
    assert (state, event) not in TRANSITIONS


def one(*recipients: str) -> SpoolEnvelope:
    return SpoolEnvelope("Q1", "sender@example.org", recipients, "sender@example.org", NOW - 60)


def test_an_attempt_records_each_reply_counts_the_attempt_and_keeps_the_rest() -> None:
    status = DeliveryStatus.initial(one("a@example.net", "b@example.net", "c@example.net"))
    results = [
        RecipientResult("a@example.net", "delivered", "250 2.0.0 Ok", "mx.example.net"),
        RecipientResult("b@example.net", "failed", "550 5.1.1 unknown", "mx.example.net"),
    ]
    after = record_attempt(status, results, NOW)
    assert after.attempts == 1 and after.last_attempt_at == NOW
    assert [(r.address, r.state, r.reply, r.updated_at, r.remote) for r in after.recipients] == [
        ("a@example.net", "delivered", "250 2.0.0 Ok", NOW, "mx.example.net"),
        ("b@example.net", "failed", "550 5.1.1 unknown", NOW, "mx.example.net"),
        ("c@example.net", "pending", "", 0.0, ""),
    ]
    assert after.pending() == ("c@example.net",)
    assert [r.address for r in after.unreported_failures()] == ["b@example.net"]


def test_an_attempt_on_a_delivered_recipient_is_refused() -> None:
    status = record_attempt(
        DeliveryStatus.initial(one("a@example.net")),
        [RecipientResult("a@example.net", "delivered", "250 ok")],
        NOW,
    )
    with pytest.raises(ValueError, match="delivered recipient cannot become"):
        record_attempt(status, [RecipientResult("a@example.net", "failed", "550 no")], NOW + 1)


def test_expiry_fails_every_recipient_still_to_be_tried_and_keeps_the_last_reply() -> None:
    status = DeliveryStatus(
        recipients=(
            RecipientStatus("a@example.net", "delivered", "250 ok", NOW - 30),
            RecipientStatus("b@example.net", "deferred", "451 4.3.0 later", NOW - 20),
            RecipientStatus("c@example.net"),
        ),
        attempts=3,
    )
    after = expire(status, NOW)
    assert [(r.state, r.expired, r.reply, r.updated_at) for r in after.recipients] == [
        ("delivered", False, "250 ok", NOW - 30),
        ("failed", True, "451 4.3.0 later", NOW - 20),
        ("failed", True, NO_ATTEMPT_REPLY, NOW),
    ]
    assert after.attempts == 3 and not after.pending()


def test_a_dsn_marks_the_failures_reported_and_counts_itself_a_null_sender_only_marks() -> None:
    status = DeliveryStatus(
        recipients=(
            RecipientStatus("a@example.net", "failed", "550 no", reported=True),
            RecipientStatus("b@example.net", "failed", "550 no"),
            RecipientStatus("c@example.net", "deferred", "451 later"),
        ),
        dsn_count=1,
    )
    sent = dsn_sent(status)
    assert [r.reported for r in sent.recipients] == [True, True, False]
    assert sent.dsn_count == 2 and not sent.unreported_failures()
    suppressed = reported(status)
    assert [r.reported for r in suppressed.recipients] == [True, True, False]
    assert suppressed.dsn_count == 1


def test_schedule_sets_only_the_next_attempt() -> None:
    status = DeliveryStatus.initial(one("a@example.net"))
    assert schedule(status, NOW + 300) == DeliveryStatus(status.recipients, next_attempt_at=NOW + 300)
    assert next_attempt_text(schedule(status, NOW + 299.6), NOW) == "300s"
    assert next_attempt_text(schedule(status, NOW - 5), NOW) == "0s"
    assert next_attempt_text(expire(status, NOW), NOW) is None


@pytest.mark.parametrize(
    ("attempts", "expected"),
    [(0, 60.0), (1, 60.0), (2, 120.0), (3, 240.0), (6, 1920.0), (7, 3600.0), (10_000, 3600.0)],
)
def test_backoff_doubles_from_the_initial_wait_up_to_the_maximum(attempts: int, expected: float) -> None:
    assert backoff(attempts, 60.0, 3600.0) == expected


@pytest.mark.parametrize(
    ("outcomes", "expired", "word"),
    [
        ((), False, "delivered"),
        (("delivered", "delivered"), False, "delivered"),
        (("delivered", "failed"), False, "partial"),
        (("delivered", "deferred"), False, "partial"),
        (("deferred", "failed"), False, "deferred"),
        (("failed",), False, "bounced"),
        (("delivered",), True, "expired"),
        ((), True, "expired"),
    ],
)
def test_an_attempt_in_one_word(outcomes: tuple[Any, ...], expired: bool, word: str) -> None:
    results = [RecipientResult(f"r{n}@example.net", o, "") for n, o in enumerate(outcomes)]
    assert attempt_outcome(results, expired) == word


addresses = st.lists(st.sampled_from([f"r{n}@example.net" for n in range(6)]), min_size=1, max_size=6)
outcome = st.sampled_from(["delivered", "deferred", "failed"])


@given(addresses, st.lists(outcome, min_size=6, max_size=6), st.booleans())
def test_whatever_an_attempt_brings_the_record_survives_its_file_and_final_states_stay(
    rcpts: list[str], outcomes: list[Any], expired: bool
) -> None:
    status = DeliveryStatus.initial(one(*rcpts))
    results = [RecipientResult(a, o, f"{o} reply") for a, o in zip(status.pending(), outcomes, strict=False)]
    after = record_attempt(status, results, NOW)
    if expired:
        after = expire(after, NOW)
    assert decode_status(encode_status(after), "Q1") == after
    assert {r.state for r in after.recipients} <= {"pending", "delivered", "deferred", "failed"}
    for before, now in zip(status.recipients, after.recipients, strict=True):
        assert before.address == now.address
        if now.state in ("delivered", "failed") and not now.expired:
            assert now.reply.startswith(now.state)
    assert not (expired and after.pending())


def test_the_status_file_keeps_its_format_byte_for_byte() -> None:
    # Spools written by earlier releases must still be read, and theirs written the same way.
    status = DeliveryStatus(
        recipients=(RecipientStatus("a@example.net", "deferred", "451 4.3.0 later", 2.5, "mx.example.net"),),
        attempts=1,
        last_attempt_at=2.5,
        next_attempt_at=62.5,
    )
    expected = (
        b'{\n "version": 1,\n "attempts": 1,\n "last_attempt_at": 2.5,\n "next_attempt_at": 62.5,\n'
        b' "dsn_count": 0,\n "recipients": [\n  {\n   "address": "a@example.net",\n'
        b'   "state": "deferred",\n   "reply": "451 4.3.0 later",\n   "updated_at": 2.5,\n'
        b'   "remote": "mx.example.net",\n   "expired": false,\n   "reported": false\n  }\n ]\n}'
    )
    assert encode_status(status) == expected
    assert decode_status(expected, "Q1") == status
