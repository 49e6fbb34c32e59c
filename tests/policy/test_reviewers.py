"""Who may review a held message and how many must approve: the pure committee and quorum rules."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.policy.engine import CompiledPolicy, compile_policy
from gateway.policy.loader import parse_policy_text
from gateway.policy.reviewers import (
    Member,
    conflicted_members,
    eligible_reviewers,
    member_of,
    plan_review,
    review_refusal,
    still_eligible,
)

POLICY = """\
organisation:
  conduct_address: conduct@example.org
  members:
    - name: Ada Quill
      addresses: [ada@example.org, ada.q@example.org]
    - name: Ben Ink
      addresses: [ben@example.org]
    - name: Cleo Nib
      addresses: [cleo@example.org]
rules:
  - rule: reporter-protection
    action: hold
cases:
  - code: home shelf
    conflicts: [ben@example.org]
    reporters:
      - id: quiet heron
        names: [Jin Park]
"""
ADA = Member("Ada Quill", ("ada@example.org", "ada.q@example.org"))
BEN = Member("Ben Ink", ("ben@example.org",))
CLEO = Member("Cleo Nib", ("cleo@example.org",))
DAN = Member("Dan Reed", ("dan@example.org",))  # not in the policy


@pytest.fixture(scope="module")
def policy() -> CompiledPolicy:
    return compile_policy(parse_policy_text(POLICY, Path("p.yaml")), POLICY.encode())


def test_a_member_is_found_by_any_of_their_addresses_in_any_case(policy: CompiledPolicy) -> None:
    assert member_of(policy, "ADA.Q@example.org") == ADA
    assert member_of(policy, "olive@example.net") is None


def test_the_sender_and_the_conflicted_are_not_asked(policy: CompiledPolicy) -> None:
    reviewers = eligible_reviewers(
        policy, sender=ADA, sender_address="ada.q@example.org", cases=["home shelf"]
    )
    assert [r.address for r in reviewers] == ["cleo@example.org"]
    assert conflicted_members(policy, ["home shelf", "unknown"]) == {"ben@example.org"}


@pytest.mark.parametrize(
    ("member", "cases", "has_account", "expected"),
    [
        pytest.param(CLEO, ["home shelf"], None, None, id="eligible"),
        pytest.param(BEN, ["home shelf"], None, "conflict of interest on case home shelf", id="conflicted"),
        pytest.param(CLEO, [], lambda address: False, "no longer has an account", id="offboarded"),
        pytest.param(DAN, [], None, "no longer a committee member", id="gone"),
    ],
)
def test_why_a_member_may_not_review(
    policy: CompiledPolicy, member: Member, cases: list[str], has_account: object, expected: str | None
) -> None:
    why = review_refusal(policy, member, cases, has_account)  # type: ignore[arg-type]
    assert why is None if expected is None else (why is not None and expected in why)


def test_a_hold_that_too_few_may_review_is_refused_with_the_numbers(policy: CompiledPolicy) -> None:
    plan = plan_review(
        policy,
        authenticated_as="ada@example.org",
        mail_from="ada@example.org",
        cases=["home shelf"],
        required_approvals=2,
    )
    assert plan.required_approvals == 2 and [r.address for r in plan.reviewers] == ["cleo@example.org"]
    assert plan.refusal is not None
    assert "approval by 2" in plan.refusal and "only 1 may review" in plan.refusal


def test_only_approvers_who_may_still_review_count(policy: CompiledPolicy) -> None:
    approvers = ["ben@example.org", "cleo@example.org", "dan@example.org"]
    assert still_eligible(policy, approvers, [], None) == ("ben@example.org", "cleo@example.org")
    assert still_eligible(policy, approvers, ["home shelf"], None) == ("cleo@example.org",)
    assert still_eligible(policy, approvers, [], lambda address: address != "cleo@example.org") == (
        "ben@example.org",
    )
