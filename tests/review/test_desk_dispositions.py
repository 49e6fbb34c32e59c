"""The review desk returns Dispositions: a hold and a reviewer's decision reach commit as values."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway import replies
from gateway.decision.disposition import desk_verdict, of
from gateway.decision.policy_screener import PolicyScreener
from gateway.decision.screening import Ruling
from gateway.mail.disposition import Disposition, refused
from gateway.mail.messages import Outgoing, Submission
from gateway.replies import Reply
from tests.review.conftest import OpenScreener, answer, held, reply_to

POLICY = """\
organisation:
  conduct_address: conduct@example.org
  members:
    - name: Ada Quill
      addresses: [ada@example.org]
    - name: Ben Ink
      addresses: [ben@example.org]
rules:
  - rule: reporter-protection
    action: hold
cases:
  - code: home shelf
    reporters:
      - id: quiet heron
        names: [Jin Park]
"""


@pytest.fixture
def screener(open_screener: OpenScreener) -> PolicyScreener:
    return open_screener(POLICY)


async def test_a_hold_is_a_disposition_commit_confirms_by_its_key(screener: PolicyScreener) -> None:
    disposition = await screener.decide(held())
    assert disposition.accepted and disposition.relay is None  # the message itself waits
    assert disposition.hold == "Q1" and disposition.undo == "Q1"
    assert disposition.rcpt_tos == ("olive@example.net",)  # whom it goes to once released
    assert disposition.essential_outgoing  # the review request must be stored, or the hold is undone
    assert disposition.reply.lines[0].startswith("Held for review")
    assert [record.verdict for record in disposition.audit] == ["hold"]


async def test_a_reviewers_decision_is_a_disposition_with_the_release(screener: PolicyScreener) -> None:
    hold = await screener.decide(held())
    assert screener.stores.holds is not None
    screener.stores.holds.confirm("Q1")  # as commit does once the review request is stored
    decided = await screener.decide(answer(reply_to(hold), "Approve."))
    assert decided.accepted and decided.relay is None  # a reply to the gateway is never relayed
    assert decided.hold == "R1"  # the decision's transaction: confirmed or undone by commit
    assert decided.reply.lines == ("Approved: message Q1 released for delivery. Thank you for reviewing.",)
    [release] = [m for m in decided.outgoing if m.mail_from == "ada@example.org"]
    assert release.essential and release.rcpt_tos == ("olive@example.net",)
    assert decided.audit == ()  # the desk audits review decisions itself


def test_a_reply_the_desk_refuses_is_a_refusal_with_nothing_to_spool(screener: PolicyScreener) -> None:
    assert screener.review is not None
    local_part = screener.review.settings.local_part
    address = f"{local_part}+{'a' * 40}@example.org"  # a review address whose token was never given
    disposition = screener.review.intercept(answer(address, "Approve."), screener.source.policy)
    assert not disposition.accepted
    assert (disposition.outgoing, disposition.hold, disposition.relay) == ((), None, None)


ADDRESSES = st.from_regex(r"[a-z]{1,8}@example\.(org|net)", fullmatch=True)
OUTGOING = st.builds(
    Outgoing,
    queue_id=st.from_regex(r"[A-Z0-9]{4,12}", fullmatch=True),
    mail_from=st.sampled_from(["", "ada@example.org"]),
    rcpt_tos=st.tuples(ADDRESSES),
    content=st.binary(max_size=40),
    essential=st.booleans(),
)


@given(
    lines=st.lists(st.text(min_size=1, max_size=40), min_size=1, max_size=4),
    rcpt_tos=st.lists(ADDRESSES, max_size=3),
    outgoing=st.lists(OUTGOING, max_size=3),
    ruling=st.sampled_from([Ruling.HOLD, Ruling.REVIEW]),
)
def test_the_screeners_view_of_a_desk_disposition_gives_back_the_same_disposition(
    lines: list[str], rcpt_tos: list[str], outgoing: list[Outgoing], ruling: Ruling
) -> None:
    submission = Submission("Q7", "ada@example.org", ("olive@example.net",), "ada@example.org", b"x")
    disposition = Disposition(
        replies.accepted_as(lines), rcpt_tos=tuple(rcpt_tos), outgoing=tuple(outgoing), hold="Q7"
    )
    assert of(submission, desk_verdict(disposition, ruling)) == disposition


@given(code=st.sampled_from([451, 550, 553]), text=st.text(min_size=1, max_size=40))
def test_a_desk_refusal_stays_the_same_refusal(code: int, text: str) -> None:
    submission = Submission("Q7", "ada@example.org", ("olive@example.net",), "ada@example.org", b"x")
    refusal = refused(Reply(code, f"{str(code)[0]}.7.1", (text,)))
    assert of(submission, desk_verdict(refusal, Ruling.REVIEW)) == refusal
