"""Who may review a held message and how many must approve: the committee and quorum rules (pure).

A member may review a message unless they sent it, have a declared conflict of interest on one of
its cases, or lost their place (removed from the policy's members, or their account removed from
the users file: the caller passes that check as ``has_account``). The quorum is the policy's count
for the gravest case's severity.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    # Annotations only: the hold store (state layer) imports ``Reviewer`` without the engine.
    from gateway.policy.engine import CompiledPolicy

AccountCheck = Callable[[str], bool]
"""Does this address (a member's) still have an account in the users file?"""


@dataclass(frozen=True)
class Member:
    """A committee member as the policy names them: display name and every address."""

    name: str
    addresses: tuple[str, ...]  # lower-cased; the first is where review requests go

    @property
    def key(self) -> str:
        return self.addresses[0]


class Reviewer(BaseModel):
    """A member asked to review a held message (stored in the hold record)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    address: str  # lower-cased: the member's first address


def committee_members(policy: CompiledPolicy) -> tuple[Member, ...]:
    return tuple(
        Member(member.name, tuple(a.lower() for a in member.addresses))
        for member in policy.document.organisation.members
    )


def member_of(policy: CompiledPolicy, address: str) -> Member | None:
    lowered = address.lower()
    for member in committee_members(policy):
        if lowered in member.addresses:
            return member
    return None


def conflicted_members(policy: CompiledPolicy, cases: Sequence[str]) -> frozenset[str]:
    """Every address of every member with a conflict of interest on any of ``cases``."""
    found: set[str] = set()
    for case in cases:
        found |= policy.conflicts.get(case, frozenset())
    return frozenset(found)


def review_refusal(
    policy: CompiledPolicy, member: Member, cases: Sequence[str], has_account: AccountCheck | None
) -> str | None:
    """Why ``member`` may not review a message of ``cases`` now (None: they may).

    Checked when the hold is made *and* at every decision, so a member removed from the policy or
    the users file, or declared conflicted meanwhile, loses the right at once.
    """
    current = member_of(policy, member.key)
    if current is None:
        # Either gone from organisation.members, or without an account (committee.members_in_force).
        return (
            f"{member.name} is no longer a committee member (removed from the policy, or no longer has an "
            "account on the gateway: `user remove`)"
        )
    if has_account is not None and not any(has_account(address) for address in current.addresses):
        return f"{member.name} no longer has an account on the gateway (removed with `user remove`)"
    conflicted = sorted(case for case in cases if set(current.addresses) & policy.conflicts.get(case, set()))
    if conflicted:
        return f"{member.name} has a declared conflict of interest on case {', '.join(conflicted)}"
    return None


def eligible_reviewers(
    policy: CompiledPolicy,
    *,
    sender: Member | None,
    sender_address: str,
    cases: Sequence[str],
    has_account: AccountCheck | None = None,
    excluded: frozenset[str] = frozenset(),
) -> tuple[Reviewer, ...]:
    """The members who may review a message: all but the sender, the conflicted, the offboarded."""
    return tuple(
        Reviewer(name=m.name, address=m.key)
        for m in committee_members(policy)
        if m != sender
        and sender_address.lower() not in m.addresses
        and not (set(m.addresses) & excluded)
        and review_refusal(policy, m, cases, has_account) is None
    )


@dataclass(frozen=True)
class ReviewPlan:
    """Who would be asked to review a held message, how many must approve, or why it cannot be held."""

    reviewers: tuple[Reviewer, ...]
    required_approvals: int
    refusal: str | None  # the 550 text when fewer members may review it than must approve it


def plan_review(
    policy: CompiledPolicy,
    *,
    authenticated_as: str,
    mail_from: str,
    cases: Sequence[str],
    has_account: AccountCheck | None = None,
    excluded: frozenset[str] = frozenset(),
    required_approvals: int | None = None,
) -> ReviewPlan:
    """The review a message would get if held now (the desk uses it, and so does ``check``)."""
    sender = member_of(policy, authenticated_as) or member_of(policy, mail_from)
    reviewers = eligible_reviewers(
        policy,
        sender=sender,
        sender_address=mail_from,
        cases=cases,
        has_account=has_account,
        excluded=excluded,
    )
    required = quorum(policy, cases, len(reviewers)) if required_approvals is None else required_approvals
    refusal = None
    if len(reviewers) < required:
        refusal = (
            f"Message not sent: it needs approval by {required} other committee member(s), and only "
            f"{len(reviewers)} may review it (not the sender, not members with a conflict of interest on "
            "its case). Ask an admin to add committee members."
        )
    return ReviewPlan(reviewers, required, refusal)


def quorum(policy: CompiledPolicy, cases: Sequence[str], eligible: int) -> int:
    """The quorum for a message of ``cases``: the policy's count for the gravest case's severity.

    ``majority`` is more than half of the ``eligible`` reviewers (at least 1).
    """
    counts = policy.document.review.approvals
    severities = {policy.severities.get(case, "normal") for case in cases}
    wanted = [counts.severe if "severe" in severities else counts.normal, counts.normal]
    numbers = [max(1, eligible // 2 + 1) if value == "majority" else int(value) for value in wanted]
    return max(numbers)


def still_eligible(
    policy: CompiledPolicy, addresses: Sequence[str], cases: Sequence[str], has_account: AccountCheck | None
) -> tuple[str, ...]:
    """The ``addresses`` (approvers) whose members may still review a message of ``cases``: a
    quorum counts only them."""
    valid = []
    for address in addresses:
        member = member_of(policy, address)
        if member is not None and review_refusal(policy, member, cases, has_account) is None:
            valid.append(address)
    return tuple(valid)
