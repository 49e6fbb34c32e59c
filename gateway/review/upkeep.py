"""The periodic upkeep of held messages: expiry, retention, abandoned holds, releases a crash left behind."""

from __future__ import annotations

import logging

from gateway.logs import log_event
from gateway.mail.messages import Outgoing
from gateway.mail.notices import Notices
from gateway.policy.reviewers import Member
from gateway.review.auditing import AuditSink, audit_review
from gateway.review.letters import expired_letter
from gateway.review.outgoing import release_message, to_sender
from gateway.state.holds import Decision, decided_at
from gateway.state.holds_port import HoldsPort

log = logging.getLogger("gateway.review")


def expire_due(store: HoldsPort, audit: AuditSink, notices: Notices, now: float) -> list[Outgoing]:
    """Mark every held message past its expiry at ``now`` as expired; return the senders' notices.

    Nothing is ever sent to the original recipients on expiry.
    """
    outgoing: list[Outgoing] = []
    for candidate in store.records():
        if candidate.status != "held" or now < candidate.expires_at:
            continue
        with store.locked():
            record = store.get(candidate.reference)
            if record.status != "held":
                continue
            decision = Decision(member="", name="", decision="expire", at=now, via="gateway")
            record = record.model_copy(
                update={"status": "expired", "decisions": (*record.decisions, decision)}
            )
            store.save(record)
        audit_review(audit, record, "expire", "", "gateway")
        outgoing += to_sender(notices, expired_letter(record, store.original(record.reference)))
    return outgoing


def prune_decided(store: HoldsPort, audit: AuditSink, cutoff: float) -> list[str]:
    """Delete holds decided before ``cutoff``: held mail must not stay forever.

    A release not yet durably in the spool is kept (it is still needed). Returns the references.
    """
    pruned: list[str] = []
    for candidate in store.records():
        if candidate.status == "held" or decided_at(candidate) > cutoff:
            continue
        with store.locked():
            record = store.get(candidate.reference)
            if record.status == "held" or (record.status == "released" and not record.released):
                continue
            store.discard(record.reference)
        audit_review(audit, record, "prune", "", "gateway")
        pruned.append(record.reference)
    return pruned


def discard_abandoned(store: HoldsPort, audit: AuditSink, cutoff: float, live: frozenset[str]) -> list[str]:
    """Delete holds whose transaction never ended: unconfirmed, not ``live`` (in progress here),
    created before ``cutoff``. A crash between storing a hold and answering 250 leaves one; the
    client was not told the message was accepted and sends it again, which makes the real hold.
    Returns the references."""
    discarded: list[str] = []
    for candidate in store.records():
        if candidate.confirmed or candidate.reference in live or candidate.created_at > cutoff:
            continue
        with store.locked():
            record = store.get(candidate.reference)
            if record.confirmed or record.reference in live:
                continue
            store.discard(record.reference)
        audit_review(audit, record, "abandoned", "", "gateway")
        log_event(log, "review-abandoned", logging.WARNING, reference=record.reference)
        discarded.append(record.reference)
    return discarded


def unreleased(
    store: HoldsPort, now: float, settle: float, in_flight: frozenset[str]
) -> list[tuple[str, Outgoing]]:
    """Approved holds whose release never reached the spool (a crash between recording the
    decision and the spool commit), rebuilt with the queue id chosen at the decision.

    Decisions younger than ``settle`` seconds, and releases ``in_flight`` here, are left alone:
    their own transaction (or a CLI command in another process) may still be committing them.
    """
    found: list[tuple[str, Outgoing]] = []
    for record in store.records():
        if record.status != "released" or record.released or record.reference in in_flight:
            continue
        if not record.release_queue_id or not record.approvals:
            continue
        last = record.approvals[-1]
        if now - last.at < settle:
            continue
        approver = Member(name=last.name, addresses=(last.member,))
        found.append((record.reference, release_message(store, record, approver, record.release_queue_id)))
    return found


def mark_released(store: HoldsPort, audit: AuditSink, reference: str) -> None:
    """The release of ``reference`` is durably in the spool (recovered after a crash)."""
    with store.locked():
        record = store.get(reference)
        if record.released:
            return
        record = record.model_copy(update={"released": True})
        store.save(record)
    audit_review(audit, record, "release-recovered", "", "gateway")
