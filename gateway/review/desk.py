"""The review desk: the decision state machine of held messages (hold, decide, confirm or undo, upkeep).

A message whose verdict is ``hold`` is not relayed: the desk stores it (``gateway.state.holds``)
and asks the eligible committee members to review it, each at a reply address of their own
(``gateway.review.tokens``). The gateway consumes mail to such an address itself
(``ReviewDesk.intercept``); it is never relayed. ``required_approvals`` (default 1) distinct
eligible members must approve before the message is released; one rejection ends the review.
The first decision wins, whether it came by mail or from ``conduct-gateway review``.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Literal

from gateway import replies
from gateway.logs import log_event
from gateway.mail.disposition import Disposition
from gateway.mail.messages import Outgoing, Submission
from gateway.mail.notices import NoticeKind, NoticeLimiter, NoticeRefused, Notices
from gateway.policy.engine import CompiledPolicy
from gateway.policy.reviewers import (
    AccountCheck,
    Member,
    member_of,
    plan_review,
    review_refusal,
    still_eligible,
)
from gateway.review import claims, upkeep
from gateway.review.auditing import AuditSink, audit_refusal, audit_review
from gateway.review.inbox import check_reply, refusal
from gateway.review.letters import (
    already_decided_letter,
    already_decided_text,
    approved_letter,
    cancelled_letter,
    held_letter,
    held_reply,
    progress_letter,
    rejected_letter,
    request_letter,
)
from gateway.review.outgoing import release_message, to_sender
from gateway.review.reassign import reassign
from gateway.review.tokens import is_review_address, new_token, reply_address
from gateway.settings import ReviewSettings
from gateway.state.holds import Decision, Grant, HeldFinding, HoldRecord, ReviewError, token_hash
from gateway.state.holds_port import HoldsPort
from gateway.state.spool import Spool

log = logging.getLogger("gateway.review")

# A hold still unconfirmed this long after it was stored belongs to a transaction that never ended.
ABANDONED_HOLD_GRACE = 600.0


class ReviewOutcome(StrEnum):
    """What a reviewer's decision did to the hold (the ``outcome`` of a ``review-decision`` log event)."""

    RELEASED = "released"  # approved by enough members: the release is among the messages to spool
    APPROVAL_RECORDED = "approval-recorded"  # approved, more approvals needed
    REJECTED = "rejected"
    CANCELLED = "cancelled"
    ALREADY_DECIDED = "already-decided"


@dataclass(frozen=True)
class DecisionResult:
    """What a decision did, the messages to spool for it, and the lines to tell the decider."""

    outcome: ReviewOutcome
    record: HoldRecord
    outgoing: tuple[Outgoing, ...] = ()
    lines: tuple[str, ...] = ()


@dataclass
class _Undo:
    """What ``not_stored`` restores (and ``accepted`` confirms) for one SMTP transaction."""

    reference: str
    before: HoldRecord | None  # None: the hold was created by this transaction; remove it
    released: bool = False  # the transaction carries the release of the held message


@dataclass
class ReviewDesk:
    """The review flow for one state folder: holds, requests, decisions, notices, expiry."""

    store: HoldsPort
    settings: ReviewSettings
    hostname: str
    audit: AuditSink
    clock: Callable[[], float] = time.time
    limiter: NoticeLimiter | None = None
    # The users file: review rights end with the account (None: not checked, e.g. no users file).
    has_account: AccountCheck | None = None
    _undo: dict[str, _Undo] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.limiter is None:
            self.limiter = NoticeLimiter(self.settings.notices_per_hour)

    def notices(self, policy: CompiledPolicy) -> Notices:
        return Notices(
            conduct_address=policy.document.organisation.conduct_address,
            committee=policy.committee,
            hostname=self.hostname,
            limiter=self.limiter,
            clock=self.clock,
        )

    # -- holding

    def hold(
        self,
        submission: Submission,
        policy: CompiledPolicy,
        *,
        findings: Sequence[HeldFinding],
        changes: Sequence[str],
        release: bytes,
        release_rcpt_tos: tuple[str, ...],
        message_id: str | None,
        subject: str,
        case: str | None,
        cases: Sequence[str] = (),
        required_approvals: int | None = None,
        excluded_reviewers: frozenset[str] = frozenset(),
    ) -> Disposition:
        """Keep the message, and prepare the sender's notice and the review requests.

        ``cases`` are every case the message concerns: members conflicted on any of them are not
        asked, and the gravest case's severity sets the quorum (``required_approvals`` overrides).
        The hold is on disk when this returns (unconfirmed); the disposition's ``hold`` is its
        transaction key: ``commit`` confirms it (``accepted``) once the notices are spooled, or
        undoes it (``not_stored``). A hold that cannot be made is a refusal.
        """
        now = self.clock()
        all_cases = tuple(dict.fromkeys((*cases, *((case,) if case else ()))))
        plan = plan_review(
            policy,
            authenticated_as=submission.authenticated_as,
            mail_from=submission.mail_from,
            cases=all_cases,
            has_account=self.has_account,
            excluded=excluded_reviewers,
            required_approvals=required_approvals,
        )
        if plan.refusal is not None:
            return refusal(replies.hold_refused(plan.refusal, submission.queue_id))
        reviewers, required_approvals = plan.reviewers, plan.required_approvals
        sender_member = member_of(policy, submission.authenticated_as) or member_of(
            policy, submission.mail_from
        )
        tokens = {reviewer.address: new_token() for reviewer in reviewers}
        sender_token = new_token()
        grants = {token_hash(t): Grant(holder=a, role="reviewer") for a, t in tokens.items()}
        grants[token_hash(sender_token)] = Grant(holder=submission.mail_from.lower(), role="sender")
        record = HoldRecord(
            reference=submission.queue_id,
            created_at=now,
            expires_at=now + self.settings.expiry,
            sender=submission.mail_from,
            sender_account=submission.authenticated_as,
            sender_name=sender_member.name if sender_member else submission.mail_from,
            rcpt_tos=submission.rcpt_tos,
            release_rcpt_tos=release_rcpt_tos,
            message_id=message_id,
            subject=subject,
            findings=tuple(findings),
            changes=tuple(changes),
            policy_version=policy.version,
            case=case or (all_cases[0] if all_cases else None),
            cases=all_cases,
            required_approvals=required_approvals,
            reviewers=reviewers,
            grants=grants,
        )
        notices = self.notices(policy)
        outgoing: list[Outgoing] = []
        for reviewer in reviewers:
            request = notices.outgoing(
                request_letter(
                    record,
                    reviewer,
                    reply_address(self.settings, policy, tokens[reviewer.address]),
                    submission.content,
                ),
                essential=True,
            )
            if request is not None:
                outgoing.append(request)
        notified = submission.mail_from.lower() in notices.committee
        if notified:
            reply_to = reply_address(self.settings, policy, sender_token)
            letter = held_letter(record, reply_to, submission.mail_from)
            held = notices.outgoing(replace(letter, answering=submission.content))
            if held is not None:
                outgoing.append(held)
        else:
            # Notices never leave the committee: say so now, in the log and in the 250, not later.
            log_event(
                log,
                "notice-not-sent",
                logging.WARNING,
                kind=NoticeKind.HELD.value,
                reference=record.reference,
                reason="sender address is not a committee address in the policy",
            )
        self.store.create(record, submission.content, release)
        self._undo[submission.queue_id] = _Undo(record.reference, before=None)
        log_event(
            log, "held", reference=record.reference, reviewers=len(reviewers), expires=record.expires_at
        )
        return Disposition(
            replies.accepted_as(held_reply(record, notified=notified, sender=submission.mail_from)),
            rcpt_tos=release_rcpt_tos,
            outgoing=tuple(outgoing),
            hold=submission.queue_id,
        )

    # -- intercepting replies

    def intercepts(self, submission: Submission, policy: CompiledPolicy) -> bool:
        return any(is_review_address(r, self.settings, policy) for r in submission.rcpt_tos)

    def intercept(self, submission: Submission, policy: CompiledPolicy) -> Disposition:
        """A reply to a review address: decide, and answer; never relayed. The decision is saved
        when this returns; its ``hold`` transaction key lets ``commit`` confirm or undo it."""
        checked = check_reply(submission, policy, self.settings, self.store, self.audit)
        if isinstance(checked, Disposition):
            return checked
        command = checked.command.command
        if command == "claim" or command == "unclaim":
            try:
                lines, claimed = self.claim(
                    checked.reference,
                    checked.actor,
                    policy,
                    via="mail",
                    give_back=command == "unclaim",
                    undo_key=submission.queue_id,
                )
            except ReviewError as exc:
                return refusal(replies.review_claim_refused(checked.reference, str(exc)))
            # The letters to the others are essential: if they cannot be spooled the client gets
            # 451 and the claim is undone, so no hold is claimed without the others being told.
            return Disposition(replies.accepted_as(lines), outgoing=tuple(claimed), hold=submission.queue_id)
        result = self.decide(
            checked.reference,
            checked.actor,
            command,
            checked.command.reason,
            policy,
            via="mail",
            token=checked.token,
            undo_key=submission.queue_id,
        )
        return Disposition(
            replies.accepted_as(result.lines), outgoing=result.outgoing, hold=submission.queue_id
        )

    # -- claiming (reply or CLI): others see it is taken; nobody is stopped from deciding

    def claim(
        self,
        reference: str,
        actor: Member,
        policy: CompiledPolicy,
        *,
        via: Literal["mail", "cli"],
        give_back: bool = False,
        undo_key: str | None = None,
    ) -> tuple[tuple[str, ...], list[Outgoing]]:
        """Record ``actor``'s claim, or with ``give_back`` end it (``gateway.review.claims``): the
        lines for them, the mails to the other eligible reviewers. With ``undo_key`` the mails are
        essential and ``not_stored(undo_key)`` restores the hold as it was. Raises ReviewError when
        the hold is decided or not theirs to review."""
        change = (claims.unclaim if give_back else claims.claim)(
            self.store,
            self.audit,
            self.notices(policy),
            reference,
            actor,
            via=via,
            now=self.clock(),
            essential=undo_key is not None,
        )
        if undo_key is not None and change.before is not None:
            self._undo[undo_key] = _Undo(reference, change.before)
        return change.lines, change.outgoing

    # -- deciding (reply or CLI)

    def decide(
        self,
        reference: str,
        actor: Member,
        command: Literal["approve", "reject", "cancel"],
        reason: str,
        policy: CompiledPolicy,
        *,
        via: Literal["mail", "cli"],
        token: str | None = None,
        undo_key: str | None = None,
    ) -> DecisionResult:
        """Record one decision under the lock; the first deciding one wins.

        Raises ReviewError when the actor may not make it (the sender reviewing, a member who is not
        an eligible reviewer). An already decided hold is not an error: the result says who decided.
        """
        now = self.clock()
        with self.store.locked():
            record = self.store.get(reference)
            grant_key = token_hash(token) if token is not None else None
            grant = record.grants.get(grant_key) if grant_key else None
            if record.status != "held" or now >= record.expires_at:
                return self._already(record, actor, policy)
            if command != "cancel":
                eligible = {reviewer.address for reviewer in record.reviewers}
                if actor.key not in eligible:
                    raise ReviewError(
                        f"{actor.name} is not among the eligible reviewers of {reference} (the sender, "
                        "or a member excluded from this case, cannot review it)"
                    )
                # Rights are checked again now: offboarding or a conflict declared since the hold.
                why_not = review_refusal(policy, actor, record.all_cases, self.has_account)
                if why_not is not None:
                    audit_refusal(self.audit, reference, actor.key, "not-eligible-now")
                    raise ReviewError(f"{why_not}, so they cannot review message {reference}")
                if any(d.member == actor.key for d in record.approvals):
                    return DecisionResult(
                        ReviewOutcome.APPROVAL_RECORDED,
                        record,
                        lines=(
                            f"Already recorded: you approved message {reference} before; nothing changed.",
                        ),
                    )
            if grant is not None and grant.used_at is not None:
                return self._already(record, actor, policy)
            before = record
            decision = Decision(
                member=actor.key, name=actor.name, decision=command, reason=reason, at=now, via=via
            )
            grants = dict(record.grants)
            if grant_key is not None and grant is not None:
                grants[grant_key] = grant.model_copy(update={"used_at": now})
            record = record.model_copy(update={"decisions": (*record.decisions, decision), "grants": grants})
            notices = self.notices(policy)
            outgoing: list[Outgoing] = []

            # RFC 3834: the sender's letters answer the held message, so they need its header
            # section to tell whether it was automatic; read only when a letter is written.
            def original() -> bytes:
                return self.store.original(reference)

            if command == "approve":
                approvers = still_eligible(
                    policy, record.counted_approvers(), record.all_cases, self.has_account
                )
                if len(approvers) < record.required_approvals:
                    outcome = ReviewOutcome.APPROVAL_RECORDED
                    lines: tuple[str, ...] = (
                        f"Recorded: your approval of message {reference} "
                        f"({len(approvers)} of {record.required_approvals} approvals needed; it is "
                        "released when the others have approved).",
                    )
                    outgoing += to_sender(
                        notices, replace(progress_letter(record, len(approvers)), answering=original())
                    )
                else:
                    release_id = Spool.new_queue_id()
                    record = record.model_copy(update={"status": "released", "release_queue_id": release_id})
                    outgoing.append(release_message(self.store, record, actor, release_id))
                    outcome = ReviewOutcome.RELEASED
                    lines = (
                        f"Approved: message {reference} released for delivery. Thank you for reviewing.",
                    )
                    outgoing += to_sender(
                        notices, replace(approved_letter(record, actor), answering=original())
                    )
            elif command == "reject":
                record = record.model_copy(update={"status": "rejected"})
                outcome = ReviewOutcome.REJECTED
                lines = (
                    f"Recorded: message {reference} rejected; the sender is told your reason. "
                    "Nothing was sent.",
                )
                outgoing += to_sender(
                    notices, rejected_letter(record, actor, reason, self.store.original(reference))
                )
            else:
                record = record.model_copy(update={"status": "cancelled"})
                outcome = ReviewOutcome.CANCELLED
                lines = (f"Cancelled: message {reference} withdrawn; it will not be sent.",)
                outgoing += to_sender(notices, replace(cancelled_letter(record), answering=original()))
            self.store.save(record)
            if undo_key is not None:
                self._undo[undo_key] = _Undo(reference, before, released=outcome is ReviewOutcome.RELEASED)
        audit_review(self.audit, record, decision.decision, actor.key, via, comment=bool(reason))
        if outcome is ReviewOutcome.RELEASED:
            audit_review(self.audit, record, "release", actor.key, via)
        log_event(
            log, "review-decision", reference=reference, decision=command, outcome=outcome.value, via=via
        )
        return DecisionResult(outcome, record, tuple(outgoing), lines)

    def _already(self, record: HoldRecord, actor: Member, policy: CompiledPolicy) -> DecisionResult:
        text = already_decided_text(record)
        outgoing: list[Outgoing] = []
        with contextlib.suppress(NoticeRefused):
            notice = self.notices(policy).outgoing(already_decided_letter(record, actor.key, text))
            if notice is not None:
                outgoing.append(notice)
        return DecisionResult(ReviewOutcome.ALREADY_DECIDED, record, tuple(outgoing), (text,))

    # -- recovery after a crash

    def unreleased(self, settle: float = 60.0) -> list[tuple[str, Outgoing]]:
        """Approved holds whose release never reached the spool (a crash between recording the
        decision and the spool commit), rebuilt with the queue id chosen at the decision.

        Decisions younger than ``settle`` seconds are left alone: their own transaction (or a CLI
        command in another process) may still be committing them.
        """
        in_flight = frozenset(undo.reference for undo in self._undo.values() if undo.released)
        return upkeep.unreleased(self.store, self.clock(), settle, in_flight)

    def mark_released(self, reference: str) -> None:
        """The release of ``reference`` is durably in the spool (recovered after a crash)."""
        upkeep.mark_released(self.store, self.audit, reference)

    # -- the SMTP layer's callbacks

    def accepted(self, key: str) -> HoldRecord | None:
        """The messages of the hold or decision made for transaction ``key`` are spooled: confirm it.

        Returns the hold record if the transaction released it.
        """
        undo = self._undo.pop(key, None)
        if undo is None:
            return None
        with self.store.locked():
            record = self.store.get(undo.reference)
            if undo.before is None and not record.confirmed:
                record = record.model_copy(update={"confirmed": True})
                self.store.save(record)
            elif undo.released and not record.released:
                record = record.model_copy(update={"released": True})
                self.store.save(record)
        return record if undo.released else None

    def not_stored(self, key: str) -> None:
        """The messages could not be spooled (the client got 451): undo the hold or the decision."""
        undo = self._undo.pop(key, None)
        if undo is None:
            return
        with self.store.locked():
            if undo.before is None:
                self.store.discard(undo.reference)
            else:
                self.store.save(undo.before)
        log_event(log, "review-undone", logging.WARNING, reference=undo.reference)

    # -- expiry

    def expire_due(self, policy: CompiledPolicy) -> list[Outgoing]:
        """Mark every held message past its expiry as expired; return the senders' notices, and the
        reminders to the eligible reviewers of holds about to expire (``gateway.review.claims``).

        Nothing is ever sent to the original recipients on expiry.
        """
        notices = self.notices(policy)
        now = self.clock()
        expired = upkeep.expire_due(self.store, self.audit, notices, now)
        return expired + claims.remind_due(self.store, self.audit, notices, self.settings, now)

    def prune_decided(self) -> list[str]:
        """Delete decided holds older than ``decided_retention``: held mail must not stay forever.

        A release not yet durably in the spool is kept (it is still needed). Returns the references.
        """
        return upkeep.prune_decided(self.store, self.audit, self.clock() - self.settings.decided_retention)

    def discard_abandoned(self, grace: float = ABANDONED_HOLD_GRACE) -> list[str]:
        """Delete holds whose transaction never ended: unconfirmed, not in progress here, older than
        ``grace``. A crash between storing a hold and answering 250 leaves one; the client was not
        told the message was accepted and sends it again, which makes the real hold. Returns the
        references."""
        cutoff = self.clock() - grace
        live = frozenset(undo.reference for undo in tuple(self._undo.values()))  # the event loop may add some
        return upkeep.discard_abandoned(self.store, self.audit, cutoff, live)

    # -- offboarding and conflicts declared after the hold

    def reassign(self, policy: CompiledPolicy) -> list[Outgoing]:
        """Re-check every held message's reviewers against the policy and the users file now
        (``gateway.review.reassign``); returns the review requests to spool."""
        return reassign(
            self.store,
            self.audit,
            policy,
            settings=self.settings,
            notices=self.notices(policy),
            has_account=self.has_account,
            clock=self.clock,
        )
