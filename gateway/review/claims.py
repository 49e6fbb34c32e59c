"""Reviewers working together: claiming a hold so others see it is taken, and the reminder before expiry.

A claim does not lock the hold: another eligible member may still decide (a committee may need to),
and the sender's letter then says who had claimed it. Both are audited without content.
"""

from __future__ import annotations

import contextlib
import logging
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


def claim(
    store: HoldsPort,
    audit: AuditSink,
    notices: Notices,
    reference: str,
    actor: Member,
    *,
    via: Literal["mail", "cli"],
    now: float,
) -> tuple[tuple[str, ...], list[Outgoing]]:
    """Record ``actor``'s claim on a held message; returns the lines for them and the mails telling
    the other eligible reviewers. Claiming again, or after someone else, changes nothing."""
    with store.locked():
        record = store.get(reference)
        if record.status != "held" or now >= record.expires_at:
            raise ReviewError(f"message {reference} is no longer held ({record.status}); nothing to claim")
        if actor.key not in {reviewer.address for reviewer in record.reviewers}:
            raise ReviewError(f"{actor.name} is not among the eligible reviewers of {reference}")
        first = record.claimed_by
        if first is not None:
            if first.member == actor.key:
                return (f"Already recorded: you claimed message {reference}.",), []
            return (
                f"{first.name} claimed message {reference} already ({when(first.at)}); you may still decide.",
            ), []
        record = record.model_copy(
            update={"claims": (Claim(member=actor.key, name=actor.name, at=now, via=via),)}
        )
        store.save(record)
    audit_review(audit, record, "claim", actor.key, via)
    log_event(log, "review-claimed", reference=reference, via=via)
    others = [r for r in record.reviewers if r.address != actor.key]
    outgoing = _send(notices, [claimed_letter(record, actor, r.address) for r in others])
    return (
        f"Claimed: the other reviewers of message {reference} are told you are looking at it. "
        "Reply approve or reject when you have decided.",
    ), outgoing


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


def _send(notices: Notices, letters: list[Letter]) -> list[Outgoing]:
    outgoing: list[Outgoing] = []
    for letter in letters:
        with contextlib.suppress(NoticeRefused):  # a reviewer is a committee member; never outside it
            message = notices.outgoing(letter)
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
