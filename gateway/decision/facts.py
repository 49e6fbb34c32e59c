"""What a decision keeps of a message: its findings (for the audit trail and reviewers), its thread step.

Metadata only, never the message itself: the thread ledger learns a relayed message's place in its
thread, the audit trail its findings, reviewers what each finding asks of the sender.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from gateway.decision.screening import Accept, Submission
from gateway.decision.thread_steps import ThreadStep
from gateway.logs import log_event
from gateway.policy.mime import parse_message
from gateway.policy.model import Action, Outcome, Verdict
from gateway.replies import Reply
from gateway.review.desk import ReviewDesk
from gateway.state.audit import DecisionRecord, FindingRecord
from gateway.state.holds import HeldFinding, HoldRecord
from gateway.state.holds_port import HoldsPort
from gateway.state.ports import LedgerPort

log = logging.getLogger("gateway.policy")


@dataclass(frozen=True)
class DecisionFacts:
    """What an acceptance's records need from ``screen`` (small: never the message itself)."""

    policy_version: str
    findings: tuple[FindingRecord, ...]
    labels: tuple[str, ...]
    thread: ThreadStep
    case: str | None

    def relayed(self, submission: Submission, accept: Accept) -> DecisionRecord:
        """The audit record of a message relayed (unchanged or rewritten)."""
        return DecisionRecord(
            queue_id=submission.queue_id,
            member=submission.authenticated_as,
            verdict=accept.verdict,
            reply="250",
            policy_version=self.policy_version,
            findings=self.findings,
            changes=self.labels,
            message_id=self.thread.message_id,
            recipients=accept.rcpt_tos,
            message=submission.content,
            relayed=accept.content,
        )

    def held(self, submission: Submission) -> DecisionRecord:
        """The audit record of a message held for review."""
        return DecisionRecord(
            queue_id=submission.queue_id,
            member=submission.authenticated_as,
            verdict=Outcome.HOLD.value,
            reply="250 2.0.0",
            policy_version=self.policy_version,
            findings=self.findings,
            changes=self.labels,
            message_id=self.thread.message_id,
            recipients=submission.rcpt_tos,
            message=submission.content,
        )


def refusal_record(
    submission: Submission,
    reply: Reply,
    verdict: str,
    version: str,
    findings: tuple[FindingRecord, ...],
    message_id: str | None = None,
    error: str | None = None,
) -> DecisionRecord:
    """The audit record of a message refused (or deferred) with ``reply``."""
    return DecisionRecord(
        queue_id=submission.queue_id,
        member=submission.authenticated_as,
        verdict=verdict,
        reply=f"{reply.code} {reply.status}",
        policy_version=version,
        findings=findings,
        error=error,
        message_id=message_id,
        recipients=submission.rcpt_tos,
        message=submission.content,
    )


class DeskHolds:
    """The review desk's holds and decisions as the commit step confirms and undoes them.

    A transaction that released a held message teaches the thread ledger that message (a ledger
    failure is logged, never raised: the release is already in the spool).
    """

    def __init__(self, desk: ReviewDesk, ledger: LedgerPort) -> None:
        self.desk = desk
        self.ledger = ledger

    def confirm(self, key: str) -> None:
        released = self.desk.accepted(key)
        if released is None:
            return
        try:
            learn_release(self.ledger, self.desk.store, released)
        except Exception as exc:
            log_event(
                log,
                "ledger-record-failed",
                logging.ERROR,
                queue_id=released.reference,
                error=type(exc).__name__,
            )

    def undo(self, key: str) -> None:
        self.desk.not_stored(key)


def learn_release(ledger: LedgerPort, store: HoldsPort, released: HoldRecord) -> None:
    """The thread ledger learns a held message only once it is really sent: when its release is
    in the spool (released by a reviewer's reply to the gateway, or with the CLI)."""
    ledger.record_message(parse_message(store.release_content(released.reference)), case=released.case)


def finding_records(verdict: Verdict) -> tuple[FindingRecord, ...]:
    return tuple(
        FindingRecord(
            rule=d.finding.rule,
            code=d.finding.code,
            kind=d.finding.kind,
            action=d.action.value,
            case=d.finding.case,
            consent=d.finding.consent.key if d.finding.consent is not None else None,
            consent_date=d.finding.consent.date if d.finding.consent is not None else None,
        )
        for d in verdict.decisions
    )


def held_findings(verdict: Verdict) -> list[HeldFinding]:
    """What reviewers and the sender are shown of each finding (never ``private_detail``)."""
    return [
        HeldFinding(
            rule=d.finding.rule,
            code=d.finding.code,
            where=d.finding.where,
            kind=d.finding.kind,
            advice=d.finding.advice,
            action=d.action.value,
            recipients=d.finding.recipients,
        )
        for d in verdict.decisions
        if d.action is not Action.AUDIT
    ]


def cases_of(verdict: Verdict, thread_case: str | None) -> tuple[str, ...]:
    """Every case a held message concerns: its findings' cases, and its thread's case."""
    cases = sorted({d.finding.case for d in verdict.decisions if d.finding.case})
    return tuple(dict.fromkeys((*cases, *((thread_case,) if thread_case else ()))))


def case_of(verdict: Verdict) -> str | None:
    cases = sorted({d.finding.case for d in verdict.decisions if d.finding.case})
    return cases[0] if cases else None


def message_id_of(content: bytes) -> str | None:
    # Only after an internal error, when there may be no parsed message: a second, careful look.
    try:
        message_id = parse_message(content).message_id
    except Exception:
        return None
    return message_id if isinstance(message_id, str) else None
