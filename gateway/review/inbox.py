"""A reply to a review address checked before it decides anything: who wrote it, to which token, what."""

from __future__ import annotations

from dataclasses import dataclass

from gateway import replies
from gateway.mail.auto_submitted import auto_submitted
from gateway.mail.disposition import Disposition, refused
from gateway.mail.messages import Submission
from gateway.policy.engine import CompiledPolicy
from gateway.policy.reviewers import Member, member_of
from gateway.replies import Reply
from gateway.review.auditing import AuditSink, audit_refusal
from gateway.review.reply_parsing import ReplyCommand, parse_command, reply_text
from gateway.review.tokens import is_review_address, token_of
from gateway.settings import ReviewSettings
from gateway.state.holds_port import HoldsPort


@dataclass(frozen=True)
class CheckedReply:
    """A reply that may be decided on: the hold it answers, who wrote it, their command, the token."""

    reference: str
    actor: Member
    command: ReplyCommand
    token: str


def refusal(reply: Reply) -> Disposition:
    """The disposition of a refused reply: ``reply`` (built in ``gateway.replies``), nothing spooled."""
    return refused(reply)


def check_reply(
    submission: Submission,
    policy: CompiledPolicy,
    settings: ReviewSettings,
    store: HoldsPort,
    audit: AuditSink,
) -> CheckedReply | Disposition:
    """The decision a reply to a review address carries, or why it is refused (audited where it
    matters: a non-member, an unknown token, self-review, another member's token)."""
    reference = submission.queue_id
    actor = member_of(policy, submission.authenticated_as)
    review_rcpts = [r for r in submission.rcpt_tos if is_review_address(r, settings, policy)]
    others = [
        r
        for r in submission.rcpt_tos
        if r not in review_rcpts and (actor is None or r.lower() not in actor.addresses)
    ]
    if others:
        return refusal(replies.review_reply_to_others(reference))
    if actor is None or submission.mail_from.lower() not in actor.addresses:
        audit_refusal(audit, reference, submission.authenticated_as, "not-a-member")
        return refusal(replies.review_not_a_member(reference))
    if len(review_rcpts) != 1:
        return refusal(replies.review_one_address_at_a_time(reference))
    token = token_of(review_rcpts[0], settings)
    found = store.find_token(token) if token is not None else None
    if token is None or found is None:
        audit_refusal(audit, reference, actor.key, "unknown-token")
        return refusal(replies.review_address_unknown(reference))
    record, grant = found
    if auto_submitted(submission.content):  # RFC 3834: an out-of-office reply quoting the request
        audit_refusal(audit, record.reference, actor.key, "automatic-reply")
        return refusal(replies.review_reply_automatic(record.reference))
    command = parse_command(reply_text(submission.content))
    if command is None:
        return refusal(replies.review_not_understood(record.reference))
    sender_member = member_of(policy, record.sender_account)
    is_sender = actor.key == (sender_member.key if sender_member else record.sender.lower()) or (
        record.sender.lower() in actor.addresses
    )
    if command.command in ("approve", "reject", "claim", "unclaim") and is_sender:
        audit_refusal(audit, record.reference, actor.key, "self-review")
        return refusal(replies.review_of_own_message(record.reference))
    if command.command == "cancel" and not is_sender:
        return refusal(replies.review_cancel_by_sender_only(record.reference))
    if grant.holder not in actor.addresses:
        audit_refusal(audit, record.reference, actor.key, "token-of-another-member")
        return refusal(replies.review_address_of_another(record.reference))
    if command.command == "reject" and not command.reason:
        return refusal(replies.review_reason_missing(record.reference))
    return CheckedReply(record.reference, actor, command, token)
