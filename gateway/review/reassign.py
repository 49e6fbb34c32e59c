"""Reviewers re-checked against the policy and the users file: offboarding and conflicts declared late."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable

from gateway.logs import log_event
from gateway.mail.messages import Outgoing
from gateway.mail.notices import NoticeRefused, Notices
from gateway.policy.engine import CompiledPolicy
from gateway.policy.reviewers import AccountCheck, eligible_reviewers, member_of
from gateway.review.auditing import AuditSink, audit_review
from gateway.review.letters import request_letter
from gateway.review.tokens import new_token, reply_address
from gateway.settings import ReviewSettings
from gateway.state.holds import Grant, token_hash
from gateway.state.holds_port import HoldsPort

log = logging.getLogger("gateway.review")


def reassign(
    store: HoldsPort,
    audit: AuditSink,
    policy: CompiledPolicy,
    *,
    settings: ReviewSettings,
    notices: Notices,
    has_account: AccountCheck | None,
    clock: Callable[[], float],
) -> list[Outgoing]:
    """Re-check every held message's reviewers against the policy and the users file now.

    A reviewer who lost the right (removed from the users file or the policy's members, or
    declared conflicted on the message's case) loses their reply address, and their approval
    stops counting; every remaining eligible member who has not decided yet gets a new review
    request, and so does a member who became eligible. Returns the requests to spool.
    Idempotent: once the reviewers match, a second run changes and sends nothing.
    """
    outgoing: list[Outgoing] = []
    for candidate in store.records():
        if candidate.status != "held" or not candidate.confirmed:
            continue  # an unconfirmed hold may still be undone by its own transaction
        with store.locked():
            record = store.get(candidate.reference)
            if record.status != "held" or not record.confirmed or clock() >= record.expires_at:
                continue
            sender = member_of(policy, record.sender_account) or member_of(policy, record.sender)
            eligible = eligible_reviewers(
                policy,
                sender=sender,
                sender_address=record.sender,
                cases=record.all_cases,
                has_account=has_account,
            )
            current = {reviewer.address for reviewer in record.reviewers}
            wanted = {reviewer.address for reviewer in eligible}
            dropped, added = current - wanted, wanted - current
            if not dropped and not added:
                continue
            decided = {d.member for d in record.decisions}
            targets = [r for r in eligible if r.address in added or (dropped and r.address not in decided)]
            grants = {
                key: grant
                for key, grant in record.grants.items()
                if not (grant.role == "reviewer" and grant.holder in dropped)
            }
            tokens = {reviewer.address: new_token() for reviewer in targets}
            grants.update({token_hash(t): Grant(holder=a, role="reviewer") for a, t in tokens.items()})
            record = record.model_copy(update={"reviewers": eligible, "grants": grants})
            store.save(record)
            original = store.original(record.reference)
        for address in sorted(dropped):
            audit_review(audit, record, "reviewer-removed", address, "gateway")
        for address in sorted(added):
            audit_review(audit, record, "reviewer-added", address, "gateway")
        if len(eligible) < record.required_approvals:
            log_event(
                log,
                "hold-quorum-unreachable",
                logging.WARNING,
                reference=record.reference,
                eligible=len(eligible),
                required=record.required_approvals,
            )
        note = (
            "This request is sent again because a member asked before can no longer review it. "
            if dropped
            else ""
        )
        for reviewer in targets:
            with contextlib.suppress(NoticeRefused):
                request = notices.outgoing(
                    request_letter(
                        record,
                        reviewer,
                        reply_address(settings, policy, tokens[reviewer.address]),
                        original,
                        note=note,
                    ),
                    essential=True,
                )
                if request is not None:
                    outgoing.append(request)
        log_event(
            log,
            "hold-reassigned",
            reference=record.reference,
            removed=len(dropped),
            added=len(added),
            requests=len(targets),
        )
    return outgoing
