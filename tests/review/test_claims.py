"""Claims, reminders and comments: who is told what, what the hold and the audit trail keep."""

from __future__ import annotations

import re
from collections.abc import Mapping

import pytest

from gateway.decision.policy_screener import PolicyScreener
from gateway.mail.disposition import Disposition
from gateway.mail.messages import Outgoing
from gateway.review.desk import ReviewDesk
from gateway.settings import ReviewSettings
from gateway.state.audit_format import JsonValue
from tests.review.conftest import OpenScreener, answer, desk, held, reply_to

POLICY = """\
organisation:
  conduct_address: conduct@example.org
  members:
    - name: Ada Quill
      addresses: [ada@example.org]
    - name: Ben Ink
      addresses: [ben@example.org]
    - name: Cy Moss
      addresses: [cy@example.org]
rules:
  - rule: reporter-protection
    action: hold
cases:
  - code: home shelf
    reporters:
      - id: quiet heron
        names: [Jin Park]
"""
COMMENT = "Fine to send; please keep the dates vague next time"


@pytest.fixture
def screener(open_screener: OpenScreener) -> PolicyScreener:
    return open_screener(POLICY, ReviewSettings(expiry=4000.0))


@pytest.fixture
def events(screener: PolicyScreener) -> list[Mapping[str, JsonValue]]:
    recorded: list[Mapping[str, JsonValue]] = []
    desk(screener).audit = recorded.append
    return recorded


def kinds(outgoing: tuple[Outgoing, ...] | list[Outgoing]) -> list[tuple[str, str]]:
    found = []
    for message in outgoing:
        match = re.search(rb"^X-Conduct-Gateway-Notice: (\S+)", message.content, re.MULTILINE)
        found.append((message.rcpt_tos[0], match.group(1).decode() if match else "message"))
    return sorted(found)


async def hold(screener: PolicyScreener) -> Disposition:
    disposition = await screener.decide(held())
    assert screener.stores.holds is not None
    screener.stores.holds.confirm("Q1")
    return disposition


async def test_a_claim_by_reply_tells_the_other_reviewers_and_is_audited_without_content(
    screener: PolicyScreener, events: list[Mapping[str, JsonValue]]
) -> None:
    held = await hold(screener)
    claimed = await screener.decide(answer(reply_to(held, "ben"), "Claim.", "R1", quoted=True))
    assert claimed.accepted and claimed.reply.lines[0].startswith("Claimed: ")
    assert kinds(claimed.outgoing) == [("cy@example.org", "claimed")]  # never the sender, never Ben
    record = desk(screener).store.get("Q1")
    assert record.status == "held" and record.claimed_by is not None
    assert record.claimed_by.member == "ben@example.org"
    assert [e["review"] for e in events] == ["claim"]
    assert "incident" not in repr(events).lower()
    again = await screener.decide(answer(reply_to(held, "cy"), "claim", "R2", member="cy", quoted=True))
    assert again.outgoing == () and "Ben Ink claimed message Q1 already" in again.reply.lines[0]


async def test_the_sender_cannot_claim_their_own_message(screener: PolicyScreener) -> None:
    held = await hold(screener)
    held_notice = [m for m in held.outgoing if m.rcpt_tos == ("ada@example.org",)]
    address = re.search(rb"^Reply-To: <([^>]+)>", held_notice[0].content, re.MULTILINE)
    assert address is not None
    refused = await screener.decide(
        answer(address.group(1).decode(), "claim", "R1", member="ada", quoted=True)
    )
    assert not refused.accepted and desk(screener).store.get("Q1").claims == ()


async def test_another_member_may_decide_a_claimed_hold_and_the_sender_hears_the_comment_and_the_claim(
    screener: PolicyScreener, events: list[Mapping[str, JsonValue]]
) -> None:
    held = await hold(screener)
    await screener.decide(answer(reply_to(held, "ben"), "claim", "R1", quoted=True))
    decided = await screener.decide(
        answer(reply_to(held, "cy"), f"Approve: {COMMENT}", "R2", member="cy", quoted=True)
    )
    assert decided.accepted
    [letter] = [m for m in decided.outgoing if m.rcpt_tos == ("ada@example.org",)]
    text = letter.content.decode()
    assert f"Cy Moss's comment: {COMMENT}" in " ".join(text.split())
    assert "(Ben Ink had claimed it for review.)" in text
    approval = next(e for e in events if e["review"] == "approve")
    assert approval["comment"] is True
    assert "vague" not in repr(events)  # the comment's text never reaches the audit trail


async def test_the_reminder_reaches_the_reviewers_once_before_expiry_and_survives_a_restart(
    screener: PolicyScreener, events: list[Mapping[str, JsonValue]]
) -> None:
    await hold(screener)
    record = desk(screener).store.get("Q1")
    policy = screener.source.policy
    desk(screener).clock = lambda: record.expires_at - 1001.0  # before the lead time (4000 / 4)
    assert desk(screener).expire_due(policy) == []
    desk(screener).clock = lambda: record.expires_at - 999.0
    reminders = desk(screener).expire_due(policy)
    assert kinds(reminders) == [("ben@example.org", "review-reminder"), ("cy@example.org", "review-reminder")]
    assert desk(screener).expire_due(policy) == []  # once per hold
    restarted = ReviewDesk(desk(screener).store, desk(screener).settings, "gw.example.test", events.append)
    restarted.clock = lambda: record.expires_at - 10.0
    assert restarted.expire_due(policy) == []  # recorded on the hold, so a restart does not repeat it
    assert [e["review"] for e in events] == ["remind"]


async def test_reminders_can_be_turned_off(screener: PolicyScreener) -> None:
    await hold(screener)
    record = desk(screener).store.get("Q1")
    off = ReviewDesk(
        desk(screener).store, ReviewSettings(reminders=False), "gw.example.test", lambda _fields: None
    )
    off.clock = lambda: record.expires_at - 10.0
    assert off.expire_due(screener.source.policy) == []


async def test_a_claim_by_reply_carries_essential_letters_and_is_undone_when_they_cannot_be_spooled(
    screener: PolicyScreener,
) -> None:
    held = await hold(screener)
    claimed = await screener.decide(answer(reply_to(held, "ben"), "claim", "R1", quoted=True))
    assert claimed.accepted and claimed.undo == "R1"
    assert [m.essential for m in claimed.outgoing] == [True]
    desk(screener).not_stored("R1")  # what commit does when the letters could not be spooled (451)
    assert desk(screener).store.get("Q1").claims == ()
    # The client retries: the claim is made again and the others are told again.
    retried = await screener.decide(answer(reply_to(held, "ben"), "claim", "R1b", quoted=True))
    assert kinds(retried.outgoing) == [("cy@example.org", "claimed")]
    desk(screener).accepted("R1b")
    record = desk(screener).store.get("Q1")
    assert record.claimed_by is not None and record.claimed_by.member == "ben@example.org"


async def test_unclaim_by_reply_gives_the_hold_back_and_tells_the_others(
    screener: PolicyScreener, events: list[Mapping[str, JsonValue]]
) -> None:
    held = await hold(screener)
    await screener.decide(answer(reply_to(held, "ben"), "claim", "R1", quoted=True))
    desk(screener).accepted("R1")
    # Only the member who claimed can give it back.
    other = await screener.decide(answer(reply_to(held, "cy"), "Unclaim.", "R2", member="cy", quoted=True))
    assert other.accepted and other.outgoing == () and "Ben Ink claimed it" in other.reply.lines[0]
    assert desk(screener).store.get("Q1").claimed_by is not None
    given = await screener.decide(answer(reply_to(held, "ben"), "unclaim", "R3", quoted=True))
    assert given.accepted and given.reply.lines[0].startswith("Unclaimed: ")
    assert kinds(given.outgoing) == [("cy@example.org", "unclaimed")]
    desk(screener).accepted("R3")
    assert desk(screener).store.get("Q1").claims == ()
    assert [e["review"] for e in events] == ["claim", "unclaim"]
    # Undone like a claim when its letters cannot be spooled: the claim is back.
    await screener.decide(answer(reply_to(held, "cy"), "claim", "R4", member="cy", quoted=True))
    desk(screener).accepted("R4")
    undone = await screener.decide(answer(reply_to(held, "cy"), "unclaim", "R5", member="cy", quoted=True))
    assert undone.accepted
    desk(screener).not_stored("R5")
    record = desk(screener).store.get("Q1")
    assert record.claimed_by is not None and record.claimed_by.member == "cy@example.org"
