"""What a decision keeps of a message: its findings (for the audit trail and reviewers), its thread step.

Metadata only, never the message itself: the thread ledger learns a relayed message's place in its
thread, the audit trail its findings, reviewers what each finding asks of the sender.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from gateway.logs import log_event
from gateway.policy.mime import parse_message
from gateway.policy.model import Action, Address, ParsedMessage, Verdict
from gateway.review.desk import HeldFinding, HoldRecord, HoldStore
from gateway.state.audit import FindingRecord
from gateway.state.ledger import Ledger

log = logging.getLogger("gateway.policy")


@dataclass(frozen=True)
class ThreadStep:
    """A relayed message's place in its thread, as the ledger records it (metadata only)."""

    message_id: str | None
    in_reply_to: tuple[str, ...]
    references: tuple[str, ...]
    from_: tuple[Address, ...]
    to: tuple[Address, ...]
    cc: tuple[Address, ...]

    @classmethod
    def of(cls, message: ParsedMessage, added_cc: tuple[Address, ...] = ()) -> ThreadStep:
        present = {address.address.lower() for address in message.cc}
        cc = message.cc + tuple(a for a in added_cc if a.address.lower() not in present)
        return cls(message.message_id, message.in_reply_to, message.references, message.from_, message.to, cc)


@dataclass(frozen=True)
class DecisionFacts:
    """What ``accepted`` needs from ``screen`` (small: never the message itself)."""

    policy_version: str
    findings: tuple[FindingRecord, ...]
    labels: tuple[str, ...]
    thread: ThreadStep
    case: str | None


def learn_release(ledger: Ledger, store: HoldStore, released: HoldRecord) -> None:
    """The thread ledger learns a held message only once it is really sent: when its release is
    in the spool (released by a reviewer's reply to the gateway, or with the CLI)."""
    ledger.record_message(parse_message(store.release_content(released.reference)), case=released.case)


def record_step(ledger: Ledger, thread: ThreadStep, case: str | None) -> None:
    if thread.message_id is not None:
        ledger.record(
            thread.message_id,
            in_reply_to=thread.in_reply_to,
            references=thread.references,
            from_=thread.from_,
            to=thread.to,
            cc=thread.cc,
            case=case,
        )


def ledger_failed(queue_id: str, exc: Exception) -> None:
    log_event(log, "ledger-record-failed", logging.ERROR, queue_id=queue_id, error=type(exc).__name__)


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


class ThreadSteps:
    """Accepted messages' thread steps the ledger has not learnt yet, written in one ledger batch.

    A failure is logged, never raised: the messages are already accepted, and losing one thread step
    is not fatal.
    """

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self._steps: list[tuple[str, ThreadStep, str | None]] = []  # (queue id, step, case)
        self._lock = threading.Lock()

    def add(self, queue_id: str, thread: ThreadStep, case: str | None) -> None:
        with self._lock:
            self._steps.append((queue_id, thread, case))

    def write(self) -> None:
        """Teach the ledger every step added so far (blocking)."""
        with self._lock:
            steps, self._steps = self._steps, []
        if not steps:
            return
        try:
            with self.ledger.batch():
                for queue_id, thread, case in steps:
                    try:
                        record_step(self.ledger, thread, case)
                    except Exception as exc:
                        ledger_failed(queue_id, exc)
        except Exception as exc:  # the commit itself failed: none of the batch was recorded
            for queue_id, _thread, _case in steps:
                ledger_failed(queue_id, exc)
