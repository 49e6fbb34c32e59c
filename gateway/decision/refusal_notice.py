"""The refusal notice: a short mail to a sender whose message the policy refused, saying what to fix.

Besides the 550 in the SMTP session (which many mail clients show poorly, or only as "could not
send"), the sender gets a letter listing each finding: the rule, where in the message, what kind of
thing, and the advice. It repeats nothing of the message: no subject, no matched text (findings'
``private_detail`` never leaves ``check``), only the places and the reference. Not even the refused
message's Message-ID (which can hold a name): it names the message by its reference.

A sender who thinks the refusal was wrong replies to the notice with "false positive" on the first
line: the reply reaches the committee like any mail to the conduct address, and the screener audits
a ``false-positive-report`` with the refused message's reference (``false_positive_of``), which the
committee digest counts and lists. A client whose reply got a 451 (the gateway could not store
it) sends the same reply again: the report's idempotency key, a digest of the reply's Message-ID
(or of its bytes, without one) and the refused message's reference, is recorded in the shared
override store first, so the retry, through this gateway or another, is neither audited nor
counted again. Never sent to the null sender or for an auto-submitted message
(RFC 3834), nor beyond the sender's hourly notice budget.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence

from gateway.decision.facts import held_findings
from gateway.decision.screening import Outgoing, Submission
from gateway.errors import AuditError
from gateway.logs import log_event
from gateway.mail.auto_submitted import answerable
from gateway.mail.notices import Letter, NoticeFinding, NoticeKind, Notices, finding_lines
from gateway.policy.engine import CompiledPolicy
from gateway.policy.mime import parse_message
from gateway.policy.model import Action, ParsedMessage, Verdict
from gateway.review.desk import ReviewDesk
from gateway.review.letters import notice_finding
from gateway.state.overrides import report_key
from gateway.state.ports import AuditWriterPort, OverridesPort

log = logging.getLogger("gateway.policy")

FALSE_POSITIVE_EVENT = "false-positive-report"
# A notice's Message-ID is <NOTICE_QUEUE_ID.refused@host> (``Notices.build``): a reply's In-Reply-To
# or References shows it answers a refusal notice; its Subject ("Re: Not sent: ... (reference Q)")
# names the refused message.
NOTICE_REFERENCE = re.compile(r"<[A-Za-z0-9]{6,40}\." + re.escape(NoticeKind.REFUSED.value) + r"@[^>]+>")
_REFERENCE = re.compile(r"\(reference ([A-Za-z0-9]{6,40})\)")
_FALSE_POSITIVE = re.compile(r"^\W*false[\s-]+positive\b", re.IGNORECASE)


def refusal_letter(*, to: str, reference: str, findings: Sequence[NoticeFinding]) -> Letter:
    """The letter for a refused message (``findings``: what the sender may see of each)."""
    text = "\n".join(
        [
            "The gateway did not send your message: it breaks the committee's mail policy. Your mail "
            "client may have shown this only as a failed send. Nothing was delivered to anyone.",
            "",
            "What to fix (the places in your message; nothing of its content is repeated here):",
            "",
            *finding_lines(findings),
            "",
            "Change the message and send it again. If you think the gateway was wrong, reply to this "
            'notice with the words "false positive" on the first line: the committee sees every such '
            "report in its digest, by reference.",
            "",
            f"Reference: {reference}",
        ]
    )
    return Letter(
        NoticeKind.REFUSED,
        to,
        f"Not sent: what to fix (reference {reference})",
        text,
    )


def automatic(mail_from: str, content: bytes) -> bool:
    """Whether a notice must not answer this message: the null sender, or ``Auto-Submitted`` other
    than ``no`` (RFC 3834; the notices' general rule, ``gateway.mail.auto_submitted``)."""
    return not answerable(mail_from, content)


def false_positive_of(message: ParsedMessage, first_line: str) -> str | None:
    """The reference of the refusal a "false positive" reply reports, or None if it is not one."""
    if not _FALSE_POSITIVE.match(first_line):
        return None
    answers_notice = any(
        NOTICE_REFERENCE.search(value if value.startswith("<") else f"<{value}>")
        for value in (*message.in_reply_to, *message.references)
    )
    reference = _REFERENCE.search(message.subject)
    return reference.group(1) if answers_notice and reference is not None else None


def refusal_notice(
    notices: Notices, policy: CompiledPolicy, submission: Submission, verdict: Verdict
) -> Outgoing | None:
    """The "what to fix" mail for a refused message, or None (not a member's, automatic, over the
    sender's notice budget, or it could not be built: a notice never changes the refusal itself)."""
    if submission.mail_from.lower() not in policy.committee or automatic(
        submission.mail_from, submission.content
    ):
        return None
    shown = [f for f in held_findings(verdict) if f.action != Action.AUDIT.value]
    try:
        return notices.outgoing(
            refusal_letter(
                to=submission.mail_from,
                reference=submission.queue_id,
                findings=[notice_finding(f) for f in shown],
            )
        )
    except Exception as exc:
        log_event(log, "notice-failed", logging.ERROR, queue_id=submission.queue_id, error=type(exc).__name__)
        return None


def false_positive_report(
    audit: AuditWriterPort,
    submission: Submission,
    message: ParsedMessage,
    reports: OverridesPort | None = None,
    now: Callable[[], float] = time.time,
) -> None:
    """Audit a sender's "false positive" reply to a refusal notice (counted in the digest), once:
    a retry of the same reply (known to ``reports`` by its key) is only logged."""
    if not any(NOTICE_REFERENCE.search(v) for v in (*message.in_reply_to, *message.references)):
        return  # the usual case: not a reply to a refusal notice, and no second parse
    leading = parse_message(submission.content).leading_text
    first_line = next((line for text in leading for line in text.splitlines() if line.strip()), "")
    reference = false_positive_of(message, first_line)
    if reference is None:
        return
    if reports is not None:
        key = report_key(message.message_id or hashlib.sha256(submission.content).hexdigest(), reference)
        try:
            first = reports.note_report(key, reference, now())
        except Exception as exc:  # better counted twice than lost: audited anyway
            log_event(log, "false-positive-key-unrecorded", logging.ERROR, error=type(exc).__name__)
            first = True
        if not first:
            log_event(log, "false-positive-repeated", reference=reference, queue_id=submission.queue_id)
            return
    try:
        audit.append(FALSE_POSITIVE_EVENT, {"reference": reference, "queue_id": submission.queue_id})
    except AuditError as exc:  # the message itself is unaffected; the report is logged instead
        log_event(log, "false-positive-unrecorded", logging.ERROR, reference=reference, error=str(exc))


class PendingNotices:
    """Refusal notices prepared by the screener, until the refusal's disposition spools them."""

    def __init__(self, enabled: bool, limit: int = 10_000) -> None:
        self.enabled = enabled
        self._limit = limit
        self._lock = threading.Lock()
        self._notices: OrderedDict[str, Outgoing] = OrderedDict()

    def prepare(
        self, review: ReviewDesk | None, policy: CompiledPolicy, submission: Submission, verdict: Verdict
    ) -> None:
        """Build the notice for a refused submission (nothing when switched off or review is off)."""
        if not self.enabled or review is None:
            return
        notice = refusal_notice(review.notices(policy), policy, submission, verdict)
        if notice is not None:
            with self._lock:
                self._notices[submission.queue_id] = notice
                while len(self._notices) > self._limit:  # refusals whose disposition never came
                    self._notices.popitem(last=False)

    def take(self, queue_id: str) -> Outgoing | None:
        with self._lock:
            return self._notices.pop(queue_id, None)
