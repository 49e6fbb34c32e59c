"""The notice that tells a committee member which ``warn`` findings their delivered message had."""

from __future__ import annotations

import logging
from dataclasses import replace

from gateway.decision.facts import held_findings
from gateway.decision.screening import Outgoing, Submission
from gateway.logs import log_event
from gateway.mail.notices import warnings_letter
from gateway.policy.engine import CompiledPolicy
from gateway.policy.model import Action, ParsedMessage, Verdict
from gateway.review.desk import ReviewDesk
from gateway.review.letters import notice_finding

log = logging.getLogger("gateway.policy")  # the screener's logger: the event is the screener's


def warnings_notice(
    review: ReviewDesk | None,
    submission: Submission,
    policy: CompiledPolicy,
    verdict: Verdict,
    message: ParsedMessage,
) -> tuple[Outgoing, ...]:
    """One notice listing the ``warn`` findings of a delivered message (best effort)."""
    if (
        review is None
        or not any(d.action is Action.WARN for d in verdict.decisions)
        or submission.mail_from.lower() not in policy.committee
    ):
        return ()
    warned = [d for d in held_findings(verdict) if d.action == Action.WARN.value]
    try:
        letter = warnings_letter(
            to=submission.mail_from,
            reference=submission.queue_id,
            subject=message.subject,
            message_id=message.message_id,
            findings=[notice_finding(f) for f in warned],
        )
        notice = review.notices(policy).outgoing(replace(letter, answering=submission.content))
    except Exception as exc:  # a notice must never stop the message itself
        log_event(log, "notice-failed", logging.ERROR, queue_id=submission.queue_id, error=type(exc).__name__)
        return ()
    return (notice,) if notice is not None else ()
