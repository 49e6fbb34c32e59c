"""One decision about one submission, as a value: what to answer, spool, confirm, record and undo.

A screener turns each submission into a frozen ``Disposition``; ``gateway.decision.commit`` is the
only code that applies one (holds, spool group commit, audit flush, ledger), so what a decision
does can be read, compared and tested without running it.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway import replies
from gateway.decision.screening import Accept, Outgoing, Submission
from gateway.decision.thread_steps import ThreadStep
from gateway.replies import Reply
from gateway.state.audit import DecisionRecord


@dataclass(frozen=True)
class Relay:
    """The submission as it is spooled: possibly rewritten content, and its envelope recipients."""

    content: bytes
    rcpt_tos: tuple[str, ...]


@dataclass(frozen=True)
class LedgerStep:
    """A relayed message's place in its thread, for the thread ledger (metadata only)."""

    queue_id: str
    thread: ThreadStep
    case: str | None


@dataclass(frozen=True)
class Disposition:
    """What a decision does.

    ``reply`` is what the client hears once everything else is durable. ``relay`` (essential) and
    ``outgoing`` (the gateway's own messages: notices, review requests, a released held message;
    each says whether it is essential) are spooled in one group commit. ``hold`` is the transaction
    key of a hold or review decision the review desk has stored: confirmed once the messages are
    spooled, undone when an essential one could not be (the client then gets 451 instead). ``audit``
    records and ``ledger`` steps are written once the messages are spooled; a refusal's record was
    appended when it was decided (its reply depends on whether it could be), and is flushed
    before the reply like any other.
    """

    reply: Reply
    rcpt_tos: tuple[str, ...] = ()  # whom an accepted message goes to (a held one: once released)
    relay: Relay | None = None
    outgoing: tuple[Outgoing, ...] = ()
    hold: str | None = None
    audit: tuple[DecisionRecord, ...] = ()
    ledger: tuple[LedgerStep, ...] = ()

    @property
    def accepted(self) -> bool:
        return self.reply.is_success

    @property
    def essential_outgoing(self) -> bool:
        """Whether a generated message must be stored for the transaction to succeed."""
        return any(outgoing.essential for outgoing in self.outgoing)

    @property
    def undo(self) -> str | None:
        """The review desk's transaction key to roll back when an essential message was not stored."""
        return self.hold


def refused(reply: Reply) -> Disposition:
    """Answer with ``reply``; nothing is spooled."""
    return Disposition(reply)


def acceptance(
    submission: Submission,
    accept: Accept,
    *,
    audit: tuple[DecisionRecord, ...] = (),
    ledger: tuple[LedgerStep, ...] = (),
) -> Disposition:
    """The disposition of an acceptance (a screener's, or the review desk's ``Accept``)."""
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
    """The disposition of a verdict that records nothing (the review desk's results, test screeners)."""
    return acceptance(submission, verdict) if isinstance(verdict, Accept) else refused(verdict)
