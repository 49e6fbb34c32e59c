"""A message the MTA passed on, judged by the same screener the SMTP intake uses, and what that records.

``Judge.judge`` builds the ``Submission`` the SMTP intake would have built (the authenticated
member from ``{auth_authen}``, the MTA's queue id as the reference), has the screener decide it,
then applies the decision with ``gateway.decision.commit`` as the gateway does, except that the
message itself is never spooled: the MTA keeps and delivers it, with the edits from ``actions``.
The gateway's own messages (review requests, notices) go to the gateway's queue; the release of an
approved hold is Postfix's ``postsuper -H`` instead (see ``holding``). Any failure answers with a
temporary failure: nothing passes unscreened.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from kilter.protocol.messages import Message

from gateway import replies
from gateway.decision.commit import CommitState, commit, flush
from gateway.decision.disposition import Disposition
from gateway.decision.screening import Screener, Submission
from gateway.logs import describe_error, log_event
from gateway.mail.verdict_replies import APPROVED_HEADER
from gateway.milter import actions
from gateway.milter.session import Envelope
from gateway.settings import MilterSettings
from gateway.state.spool_records import new_queue_id

log = logging.getLogger("gateway.milter")

_REFERENCE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")  # what the hold store takes

HeldRelease = Callable[[str], tuple[bytes, tuple[str, ...]] | None]  # reference -> release, recipients
Released = Callable[[], Awaitable[None]]  # release the approved holds from the MTA's hold queue
Committee = Callable[[], frozenset[str]]
ReviewAddress = Callable[[str], bool]  # whether an address is one of the review desk's


@dataclass(frozen=True)
class Verdict:
    """What the milter answers, and why (for the log line: never content or addresses)."""

    actions: list[Message]
    outcome: str
    reference: str


def is_release(content: bytes) -> bool:
    """Whether a message the review desk made is the release of an approved hold."""
    return content.startswith(APPROVED_HEADER.encode("ascii") + b":")


class Judge:
    """Decides each message the MTA passes on, as the gateway would, and records the decision."""

    def __init__(
        self,
        screener: Screener,
        state: CommitState,
        settings: MilterSettings,
        *,
        committee: Committee,
        held_release: HeldRelease,
        release: Released,
        max_size: int,
        review_address: ReviewAddress = lambda _address: False,
    ) -> None:
        self.screener = screener
        self.state = state
        self.settings = settings
        self.committee = committee
        self.held_release = held_release
        self.release = release
        self.max_size = max_size
        self.review_address = review_address

    def member_of(self, envelope: Envelope) -> str | None:
        """Who the message is judged as; None: delivered untouched (not from the committee)."""
        if envelope.login:
            return envelope.login.lower()
        sender = envelope.mail_from.lower()
        if self.settings.unauthenticated == "screen" or sender in self.committee():
            # Mail that claims a committee member's address is judged as theirs, never waved through.
            return sender
        return None

    async def judge(self, envelope: Envelope) -> Verdict:
        queue_id = envelope.queue_id if _REFERENCE.match(envelope.queue_id) else new_queue_id()
        member = self.member_of(envelope)
        if member is None:
            return Verdict(actions.pass_through(), "passed", queue_id)
        if not envelope.login and any(self.review_address(r) for r in envelope.rcpt_tos):
            # A decision on a held message stands for a member's word: only their login proves it
            # (as in gateway mode, where every submission is logged in), never a From line.
            return Verdict(actions.refuse(replies.REVIEW_NEEDS_LOGIN), "refused", queue_id)
        if envelope.oversized:
            return Verdict(actions.refuse(replies.message_size_exceeds(self.max_size)), "refused", queue_id)
        submission = Submission(
            queue_id=queue_id,
            mail_from=envelope.mail_from,
            rcpt_tos=envelope.rcpt_tos,
            authenticated_as=member,
            content=envelope.content,
            client_address=envelope.client_address,
        )
        try:
            disposition = await self.screener.decide(submission)
        except Exception as exc:
            log_event(
                log, "milter.screener_failed", logging.ERROR, queue_id=queue_id, error=describe_error(exc)
            )
            return Verdict(actions.refuse(replies.INTERNAL_ERROR), "deferred", queue_id)
        if not disposition.accepted:
            if not await flush(self.state, queue_id):
                return Verdict(actions.refuse(replies.INTERNAL_ERROR), "deferred", queue_id)
            outcome = "deferred" if disposition.reply.is_temporary else "refused"
            return Verdict(actions.refuse(disposition.reply), outcome, queue_id)
        return await self._accepted(envelope, submission, disposition)

    async def _accepted(
        self, envelope: Envelope, submission: Submission, disposition: Disposition
    ) -> Verdict:
        queue_id = submission.queue_id
        held = self.held_release(queue_id) if disposition.hold is not None else None
        review_decision = disposition.relay is None and held is None and not disposition.rcpt_tos
        unreleasable = held is not None and queue_id != envelope.queue_id
        if unreleasable or (disposition.relay is None and held is None and not review_decision):
            # A hold whose copy Postfix could not release (no usable queue id), or a hold the desk
            # did not keep: never accept it. The desk's unconfirmed hold is undone.
            log_event(log, "milter.hold_impossible", logging.ERROR, queue_id=queue_id)
            self._undo(disposition)
            return Verdict(actions.refuse(replies.INTERNAL_ERROR), "deferred", queue_id)
        # The MTA keeps and delivers the message itself: only the gateway's own messages are spooled.
        local = dataclasses.replace(
            disposition,
            relay=None,
            outgoing=tuple(o for o in disposition.outgoing if not is_release(o.content)),
        )
        committed = await commit(local, self.state, submission)
        if not committed.reply.is_success:
            return Verdict(actions.refuse(committed.reply), "deferred", queue_id)
        if disposition.relay is not None:
            edits = actions.relay(envelope, disposition.relay.content, disposition.relay.rcpt_tos)
            return Verdict(edits, "accepted", queue_id)
        if held is not None:
            content, rcpt_tos = held
            return Verdict(actions.hold(envelope, content, rcpt_tos, queue_id), "held", queue_id)
        # A reviewer's decision, consumed: an approval is released from the hold queue, a
        # rejection's copy deleted.
        await self.release()
        return Verdict(actions.consume(), "consumed", queue_id)

    def _undo(self, disposition: Disposition) -> None:
        holds = self.state.stores.holds
        if disposition.undo is not None and holds is not None:
            try:
                holds.undo(disposition.undo)
            except Exception as exc:  # the review round discards abandoned holds
                log_event(log, "milter.undo_failed", logging.ERROR, error=describe_error(exc))
