"""Reviewers working together: claiming a hold so others see it is taken, and the reminder before expiry.

A claim does not lock the hold: another eligible member may still decide (a committee may need to),
and the sender's letter then says who had claimed it. The member who claimed may give the claim up
(``unclaim``); the others are told either way. All of it is audited without content.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Literal

from gateway.logs import log_event
from gateway.mail.messages import Outgoing
from gateway.mail.notices import Letter, NoticeKind, NoticeRefused, Notices
from gateway.policy.reviewers import Member
from gateway.review.auditing import AuditSink, audit_review
from gateway.review.letters import when
from gateway.settings import ReviewSettings
from gateway.state.holds import Claim, HoldRecord, ReviewError
from gateway.state.holds_port import HoldsPort

log = logging.getLogger("gateway.review")


@dataclass(frozen=True)
class ClaimChange:
    """What a claim or unclaim did: the lines for the member, the letters to the other reviewers,
    and the record as it was before (None when nothing changed), so a failed spool can undo it."""

    lines: tuple[str, ...]
    outgoing: list[Outgoing]
    before: HoldRecord | None = None


def claim(
    store: HoldsPort,
    audit: AuditSink,
    notices: Notices,
    reference: str,
    actor: Member,
    *,
    via: Literal["mail", "cli"],
    now: float,
    essential: bool = False,
) -> ClaimChange:
    """Record ``actor``'s claim on a held message; the other eligible reviewers are told (with
    ``essential``, those letters must be spooled for the claim to stand). Claiming again, or after
    someone else, changes nothing."""
    with store.locked():
        before = _held(store, reference, actor, now, "claim")
        first = before.claimed_by
        if first is not None:
            if first.member == actor.key:
                return ClaimChange((f"Already recorded: you claimed message {reference}.",), [])
            taken = f"{first.name} claimed message {reference} already ({when(first.at)})"
            return ClaimChange((f"{taken}; you may still decide.",), [])
        record = before.model_copy(
            update={"claims": (Claim(member=actor.key, name=actor.name, at=now, via=via),)}
        )
        store.save(record)
    audit_review(audit, record, "claim", actor.key, via)
    log_event(log, "review-claimed", reference=reference, via=via)
    others = [r for r in record.reviewers if r.address != actor.key]
    outgoing = _send(notices, [claimed_letter(record, actor, r.address) for r in others], essential)
    lines = (
        f"Claimed: the other reviewers of message {reference} are told you are looking at it. "
        "Reply approve or reject when you have decided, or unclaim to give it back.",
    )
    return ClaimChange(lines, outgoing, before)


def unclaim(
    store: HoldsPort,
    audit: AuditSink,
    notices: Notices,
    reference: str,
    actor: Member,
    *,
    via: Literal["mail", "cli"],
    now: float,
    essential: bool = False,
) -> ClaimChange:
    """Give up ``actor``'s own claim on a held message; the other eligible reviewers are told it
    waits for anyone again. Someone else's claim, or none, changes nothing."""
    with store.locked():
        before = _held(store, reference, actor, now, "unclaim")
        first = before.claimed_by
        if first is None or first.member != actor.key:
            holder = "nobody has claimed it" if first is None else f"{first.name} claimed it"
            return ClaimChange((f"Nothing to give back: {holder} (message {reference}).",), [])
        record = before.model_copy(update={"claims": ()})
        store.save(record)
    audit_review(audit, record, "unclaim", actor.key, via)
    log_event(log, "review-unclaimed", reference=reference, via=via)
    others = [r for r in record.reviewers if r.address != actor.key]
    outgoing = _send(notices, [unclaimed_letter(record, actor, r.address) for r in others], essential)
    lines = (f"Unclaimed: the other reviewers of message {reference} are told it waits for anyone again.",)
    return ClaimChange(lines, outgoing, before)


def _held(store: HoldsPort, reference: str, actor: Member, now: float, action: str) -> HoldRecord:
    record = store.get(reference)
    if record.status != "held" or now >= record.expires_at:
        raise ReviewError(f"message {reference} is no longer held ({record.status}); nothing to {action}")
    if actor.key not in {reviewer.address for reviewer in record.reviewers}:
        raise ReviewError(f"{actor.name} is not among the eligible reviewers of {reference}")
    return record


def remind_due(
    store: HoldsPort, audit: AuditSink, notices: Notices, settings: ReviewSettings, now: float
) -> list[Outgoing]:
    """Remind the eligible reviewers of every hold nobody decided that expires within the lead
    time; once per hold (recorded on the hold, so a restart does not send it again)."""
    if not settings.reminders:
        return []
    lead = settings.reminder_before if settings.reminder_before is not None else settings.expiry / 4
    outgoing: list[Outgoing] = []
    for candidate in store.records():
        if not _due(candidate, now, lead):
            continue
        with store.locked():
            record = store.get(candidate.reference)
            if not _due(record, now, lead):
                continue
            record = record.model_copy(update={"reminded_at": now})
            store.save(record)
        audit_review(audit, record, "remind", "", "gateway")
        waiting = {d.member for d in record.approvals}
        outgoing += _send(
            notices,
            [reminder_letter(record, r.address) for r in record.reviewers if r.address not in waiting],
        )
    return outgoing


def _due(record: HoldRecord, now: float, lead: float) -> bool:
    return (
        record.status == "held"
        and record.confirmed
        and record.reminded_at is None
        and record.expires_at - lead <= now < record.expires_at
    )


def _send(notices: Notices, letters: list[Letter], essential: bool = False) -> list[Outgoing]:
    outgoing: list[Outgoing] = []
    for letter in letters:
        with contextlib.suppress(NoticeRefused):  # a reviewer is a committee member; never outside it
            message = notices.outgoing(letter, essential=essential)
            if message is not None:
                outgoing.append(message)
    return outgoing


def claimed_letter(record: HoldRecord, claimer: Member, to: str) -> Letter:
    text = (
        f"{claimer.name} claimed held message {record.reference} "
        f'("{record.subject or "(no subject)"}"): they are reviewing it, so you need not. '
        "You may still approve or reject it with your review request if you need to; the first "
        "decision wins."
    )
    subject = f"Claimed by {claimer.name}: {record.subject or record.reference}"
    return Letter(NoticeKind.CLAIMED, to, subject, text)


def unclaimed_letter(record: HoldRecord, claimer: Member, to: str) -> Letter:
    text = (
        f"{claimer.name} gave back held message {record.reference} "
        f'("{record.subject or "(no subject)"}"): nobody is reviewing it now. Approve, reject or '
        "claim it with your review request; it expires "
        f"{when(record.expires_at)}."
    )
    subject = f"Unclaimed by {claimer.name}: {record.subject or record.reference}"
    return Letter(NoticeKind.UNCLAIMED, to, subject, text)


def reminder_letter(record: HoldRecord, to: str) -> Letter:
    claimed = record.claimed_by
    taken = f" {claimed.name} claimed it." if claimed is not None else " Nobody has claimed it."
    text = (
        f'Held message {record.reference} ("{record.subject or "(no subject)"}") is still waiting '
        f"for review and expires {when(record.expires_at)}; then it is not sent.{taken} "
        f"Approvals so far: {len(record.counted_approvers())} of {record.required_approvals}.\n\n"
        "To decide, reply to the review request you were sent (approve, reject <reason> or claim)."
    )
    return Letter(
        NoticeKind.REVIEW_REMINDER,
        to,
        f"Reminder, review expires soon: {record.subject or record.reference}",
        text,
    )
