"""A screener's verdict (``Accept`` or a refusal) as the ``Disposition`` that ``commit`` applies.

``Disposition`` and its parts live in ``gateway.mail.disposition``, below both the decision layer and
the review desk, which returns dispositions of its own; they are named here too for the callers that
import them from the decision layer.
"""

from __future__ import annotations

from gateway import replies
from gateway.decision.screening import Accept, Ruling, Submission
from gateway.mail.disposition import Disposition, LedgerStep, Relay, refused
from gateway.replies import Reply
from gateway.state.audit import DecisionRecord

__all__ = ["Disposition", "LedgerStep", "Relay", "acceptance", "desk_verdict", "of", "refused"]


def acceptance(
    submission: Submission,
    accept: Accept,
    *,
    audit: tuple[DecisionRecord, ...] = (),
    ledger: tuple[LedgerStep, ...] = (),
) -> Disposition:
    """The disposition of an acceptance (a screener's ``Accept``; the desk's, through ``desk_verdict``)."""
    if accept.reply_lines:
        reply = replies.accepted_as(accept.reply_lines)
    else:
        reply = replies.queued(submission.queue_id, accept.changes)
    return Disposition(
        reply,
        rcpt_tos=accept.rcpt_tos,
        relay=Relay(accept.content, accept.rcpt_tos) if accept.spool_submission else None,
        outgoing=accept.extra,
        hold=submission.queue_id if accept.verdict.consumed_by_review else None,
        audit=audit,
        ledger=ledger,
    )


def of(submission: Submission, verdict: Accept | Reply) -> Disposition:
    """The disposition of a verdict that records nothing (the pass-through, test screeners)."""
    return acceptance(submission, verdict) if isinstance(verdict, Accept) else refused(verdict)


def desk_verdict(disposition: Disposition, ruling: Ruling, findings: tuple[str, ...] = ()) -> Accept | Reply:
    """The review desk's disposition as a screener's verdict (what ``screen`` shows tools and tests).

    ``acceptance`` turns it back into the same disposition: the reply's lines, the messages to spool
    and the transaction key of the hold or decision (the submission's queue id) all carry over.
    """
    if not disposition.accepted:
        return disposition.reply
    return Accept(
        content=b"",
        rcpt_tos=disposition.rcpt_tos,
        verdict=ruling,
        findings=findings,
        extra=disposition.outgoing,
        spool_submission=False,
        reply_lines=disposition.reply.lines,
    )
