"""The desk's refusals, built in gateway/replies.py: permanent, with an enhanced code and the reference."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from gateway import replies
from gateway.replies import Reply

REFUSALS: list[Callable[[str], Reply]] = [
    replies.review_reply_to_others,
    replies.review_not_a_member,
    replies.review_one_address_at_a_time,
    replies.review_address_unknown,
    replies.review_not_understood,
    replies.review_of_own_message,
    replies.review_cancel_by_sender_only,
    replies.review_address_of_another,
    replies.review_reason_missing,
    lambda reference: replies.hold_refused("Message not sent: too few reviewers.", reference),
]


@pytest.mark.parametrize("refusal", REFUSALS)
def test_a_review_refusal_is_permanent_names_the_reference_and_fits_a_reply_line(
    refusal: Callable[[str], Reply],
) -> None:
    reply = refusal("20260301T100000-abc")
    assert reply.code == 550 and reply.status.startswith("5.")
    assert reply.lines[-1] == "Reference: 20260301T100000-abc"
    assert all(line.isascii() and "\r" not in line and "\n" not in line for line in reply.lines)
    assert all(len(line) <= 512 for line in str(reply).split("\r\n"))
