"""What the review tells people: review requests, the sender's notices, and the texts of decisions."""

from __future__ import annotations

import time
from email.utils import formataddr

from gateway.mail.notices import Letter, NoticeFinding, NoticeKind, finding_lines
from gateway.mail.verdict_replies import held_lines
from gateway.policy.reviewers import Member, Reviewer
from gateway.state.holds import HeldFinding, HoldRecord

STATUS_WORDS = {
    "released": "approved and sent",
    "rejected": "rejected",
    "cancelled": "withdrawn by the sender",
    "expired": "not reviewed in time and has expired",
    "held": "held",
}


def notice_finding(finding: HeldFinding) -> NoticeFinding:
    """A held finding as notices show it."""
    return NoticeFinding(
        finding.rule, finding.code, finding.where, finding.kind, finding.advice, finding.action
    )


def held_reply(record: HoldRecord, *, notified: bool = True, sender: str = "") -> tuple[str, ...]:
    """The 250 text for a held message (ASCII, short lines)."""
    return held_lines(record.reasons(), record.reference, notified=notified, sender=sender)


def request_letter(
    record: HoldRecord, reviewer: Reviewer, reply_to: str, original: bytes, *, note: str = ""
) -> Letter:
    expires = when(record.expires_at)
    approvals = (
        ""
        if record.required_approvals == 1
        else f" It needs {record.required_approvals} approvals from different members."
    )
    lines = [
        f"{note}{record.sender_name} <{record.sender}> sent a message that the committee's policy holds "
        "for review by a second committee member before it goes out. Please review it: it is "
        "attached exactly as it was written.",
        "",
        f"Subject: {record.subject or '(none)'}",
        f"Recipients: {', '.join(record.release_rcpt_tos)}",
        f"Reference: {record.reference}",
        f"Expires: {expires} (after that it is not sent, and the sender is told).{approvals}",
        "",
        "Why it was held:",
        *finding_lines([notice_finding(f) for f in record.findings]),
        "",
        "What the gateway will change before sending it:",
        *([f"* {change}" for change in record.changes] or ["* nothing"]),
        "",
        "To decide, reply to this message (the reply goes to the gateway only, never to the "
        "recipients) with one of these as the first line:",
        "",
        "    approve",
        "    reject <the reason, which the sender is told>",
        "",
        "The reply address works once and only for you. Your mail client shows the gateway's "
        "answer; you also get an e-mail if someone else decided first.",
        "",
        "The attached message is for the committee only: do not forward it.",
    ]
    return Letter(
        NoticeKind.REVIEW_REQUEST,
        reviewer.address,
        f"Review needed: {record.subject or record.reference}",
        "\n".join(lines),
        in_reply_to=None,
        reply_to=reply_to,
        attachment=original,
    )


def held_letter(record: HoldRecord, reply_to: str, to: str) -> Letter:
    reviewers = ", ".join(r.name for r in record.reviewers)
    lines = [
        f'Your message "{record.subject or "(no subject)"}" is held: the committee\'s policy asks a '
        "second committee member to review it before it goes out. Nothing has been sent yet.",
        "",
        f"Reference: {record.reference}",
        f"Asked to review: {reviewers}",
        f"Approvals needed: {record.required_approvals} (0 of {record.required_approvals} so far)",
        f"Expires: {when(record.expires_at)} (if nobody decides by then it is not sent; you will be told)",
        "",
        "Why:",
        *finding_lines([notice_finding(f) for f in record.findings]),
        "",
        "What the gateway will change before sending it:",
        *([f"* {change}" for change in record.changes] or ["* nothing"]),
        "",
        "You will get an e-mail when it is approved (and sent) or rejected (with the reason).",
        "To withdraw it, reply to this notice with the single word cancel as the first line.",
    ]
    return Letter(
        NoticeKind.HELD,
        to,
        f"Held for review: {record.subject or record.reference}",
        "\n".join(lines),
        in_reply_to=record.message_id,
        reply_to=reply_to,
    )


def progress_letter(record: HoldRecord, approvals: int) -> Letter:
    missing = record.required_approvals - approvals
    text = (
        f'Your message "{record.subject or "(no subject)"}" (reference {record.reference}) now has '
        f"{approvals} of {record.required_approvals} approvals. It is still held: it needs "
        f"{missing} more committee member{'s' if missing != 1 else ''} to approve it before it is "
        "sent. You will be told when it is sent or rejected."
    )
    return Letter(
        NoticeKind.APPROVAL_RECORDED,
        record.sender,
        f"{approvals} of {record.required_approvals} approvals: {record.subject or record.reference}",
        text,
        in_reply_to=record.message_id,
    )


def approved_letter(record: HoldRecord, approver: Member) -> Letter:
    counted = set(record.counted_approvers())
    names = ", ".join(dict.fromkeys(d.name for d in record.approvals if d.member in counted)) or approver.name
    text = (
        f'Your message "{record.subject or "(no subject)"}" (reference {record.reference}) was approved '
        f"by {names} and has been released for delivery to {', '.join(record.release_rcpt_tos)}."
    )
    if record.changes:
        text += "\n\nThe gateway changed it as announced:\n" + "\n".join(f"* {c}" for c in record.changes)
    return Letter(
        NoticeKind.APPROVED,
        record.sender,
        f"Approved and sent: {record.subject or record.reference}",
        text,
        in_reply_to=record.message_id,
    )


def rejected_letter(record: HoldRecord, reviewer: Member, reason: str, original: bytes) -> Letter:
    text = "\n".join(
        [
            f'Your message "{record.subject or "(no subject)"}" (reference {record.reference}) '
            "was not sent: "
            f"{reviewer.name} reviewed it and rejected it.",
            "",
            f"Their reason: {reason}",
            "",
            "Your message is attached, so you can change it and send it again.",
        ]
    )
    return Letter(
        NoticeKind.REJECTED,
        record.sender,
        f"Not sent (rejected in review): {record.subject or record.reference}",
        text,
        in_reply_to=record.message_id,
        attachment=original,
    )


def cancelled_letter(record: HoldRecord) -> Letter:
    return Letter(
        NoticeKind.CANCELLED,
        record.sender,
        f"Withdrawn: {record.subject or record.reference}",
        f'You withdrew your held message "{record.subject or "(no subject)"}" (reference '
        f"{record.reference}). It was not sent, and the reviewers' reply addresses no longer work.",
        in_reply_to=record.message_id,
    )


def expired_letter(record: HoldRecord, original: bytes) -> Letter:
    return Letter(
        NoticeKind.EXPIRED,
        record.sender,
        f"Expired, not sent: {record.subject or record.reference}",
        f'Your held message "{record.subject or "(no subject)"}" (reference {record.reference}) was not '
        f"reviewed before it expired ({when(record.expires_at)}), so it was not sent, and will not be. "
        "Send it again if it is still needed, and ask another committee member to look out for it.",
        in_reply_to=record.message_id,
        attachment=original,
        attachment_headers_only=True,
    )


def already_decided_text(record: HoldRecord) -> str:
    """What a member deciding a hold that is no longer held is told (by reply, and in a notice)."""
    if record.status == "held":  # past its expiry, not yet swept
        return f"Already decided: message {record.reference} has expired; nothing was sent."
    final = record.final
    who = f" by {final.name}" if final is not None and final.name else ""
    status = STATUS_WORDS[record.status]
    return (
        f"Already decided: message {record.reference} was {status}{who}. "
        "Your reply was not needed; thank you."
    )


def already_decided_letter(record: HoldRecord, to: str, text: str) -> Letter:
    return Letter(NoticeKind.ALREADY_DECIDED, to, f"Already decided: held message {record.reference}", text)


def approvers(record: HoldRecord, approver: Member) -> str:
    """The release's approver header value: every counted approver's mailbox, else ``approver``'s."""
    counted = set(record.counted_approvers())
    return ", ".join(
        mailbox(d.name, d.member)
        for d in {d.member: d for d in record.approvals if d.member in counted}.values()
    ) or mailbox(approver.name, approver.key)


def mailbox(name: str, address: str) -> str:
    display = "".join(ch for ch in name if ch >= " " and ch not in '"\\')
    return formataddr((display, address)) if display.isascii() else f"<{address}>"


def when(timestamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(timestamp))
