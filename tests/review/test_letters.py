"""What the review tells people: mailboxes in the approver header, times, the words for a status."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from gateway.policy.reviewers import Member, Reviewer
from gateway.review.letters import STATUS_WORDS, approvers, mailbox, when
from gateway.state.holds import Decision, HoldRecord


@given(name=st.text(max_size=60))
def test_a_mailbox_never_carries_a_line_break_and_always_ends_with_the_address(name: str) -> None:
    text = mailbox(name, "ben@example.org")
    assert "\r" not in text and "\n" not in text
    assert text.removesuffix(">").endswith("ben@example.org")


def test_a_name_that_is_not_ascii_leaves_the_bare_address() -> None:
    assert mailbox("Zoë Ink", "zoe@example.org") == "<zoe@example.org>"
    assert mailbox('Ben "the" Ink', "ben@example.org") == "Ben the Ink <ben@example.org>"


def test_the_approver_header_names_each_counted_approver_once() -> None:
    approval = Decision(member="ben@example.org", name="Ben Ink", decision="approve", at=5.0, via="mail")
    record = HoldRecord(
        reference="Q1",
        created_at=1.0,
        expires_at=2.0,
        sender="ada@example.org",
        sender_account="ada@example.org",
        sender_name="Ada Quill",
        rcpt_tos=(),
        release_rcpt_tos=(),
        reviewers=(Reviewer(name="Ben Ink", address="ben@example.org"),),
        decisions=(approval, approval),
    )
    cleo = Member("Cleo Nib", ("cleo@example.org",))
    assert approvers(record, cleo) == "Ben Ink <ben@example.org>"
    assert approvers(record.model_copy(update={"reviewers": ()}), cleo) == "Cleo Nib <cleo@example.org>"


def test_times_are_utc_to_the_minute() -> None:
    assert when(0) == "1970-01-01 00:00 UTC"


def test_every_status_has_words() -> None:
    assert set(STATUS_WORDS) == {"held", "released", "rejected", "cancelled", "expired"}
