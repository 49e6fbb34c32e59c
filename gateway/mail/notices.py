"""Mail the gateway writes itself to committee members: notices to senders and review requests.

Every message built here goes to a committee member only (``Notices`` refuses any other recipient,
so a programming error cannot mail a held message to an outsider), is sent with the null envelope
sender (like a DSN: nothing can bounce back into a loop), has the conduct address as ``From`` (the
organisation's own domain, so the upstream accepts it and replies reach the committee), and carries
``Auto-Submitted`` so that vacation responders stay quiet. Notices answer the sender's message
(``In-Reply-To``/``References``), and are rate-limited per sender (``NoticeLimiter``). None answers
the null sender or an auto-submitted message (RFC 3834: ``gateway.mail.auto_submitted``).

Messages are built as bytes by hand (CRLF, short lines) rather than with ``email.generator``, so an
attached original is carried byte for byte and nothing is re-encoded.
"""

from __future__ import annotations

import logging
import secrets
import textwrap
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from email.header import Header
from email.utils import formataddr, formatdate
from enum import StrEnum

from gateway.errors import GatewayError
from gateway.header_section import original_headers
from gateway.login_throttle import SharedCounts
from gateway.logs import log_event
from gateway.mail.auto_submitted import answerable
from gateway.mail.messages import Outgoing
from gateway.state.spool import Spool

log = logging.getLogger("gateway.notices")

NOTICE_HEADER = "X-Conduct-Gateway-Notice"
WIDTH = 76
GATEWAY_NAME = "Conduct gateway"


class NoticeRefused(GatewayError):
    """A gateway message was about to go to someone outside the committee; nothing was built."""


class NoticeKind(StrEnum):
    """What a gateway message is about (its ``X-Conduct-Gateway-Notice`` header)."""

    HELD = "held"
    REVIEW_REQUEST = "review-request"
    APPROVED = "approved"
    APPROVAL_RECORDED = "approval-recorded"
    REJECTED = "rejected"
    EXPIRED = "expired"
    CANCELLED = "cancelled"
    WARNINGS = "warnings"
    ALREADY_DECIDED = "already-decided"
    SUPPRESSED = "suppressed"
    CLAIMED = "claimed"
    UNCLAIMED = "unclaimed"  # a reviewer gave up their claim: the hold waits for anyone again
    REVIEW_REMINDER = "review-reminder"
    REFUSED = "refused"  # what to fix in a refused message (``gateway.decision.refusal_notice``)
    DIGEST = "digest"  # the committee digest (``gateway.decision.digest``), to the committee


# Notices that answer one submission each: a flood of submissions must not become a flood of mail.
# Outcomes of a review (approved, rejected, expired, cancelled) were promised to the sender and are
# bounded by the number of holds, so they always go out.
RATE_LIMITED = frozenset(
    {NoticeKind.HELD, NoticeKind.WARNINGS, NoticeKind.ALREADY_DECIDED, NoticeKind.REFUSED}
)


@dataclass(frozen=True)
class NoticeFinding:
    """A finding as notices show it: never ``private_detail``."""

    rule: str
    code: str
    where: str
    kind: str
    advice: str
    action: str


NOTICE_WINDOW = 3600.0  # notices_per_hour: the window the limit counts in


class LimitDecision(StrEnum):
    SEND = "send"
    COLLAPSE = "collapse"  # send one "further notices suppressed" notice instead
    DROP = "drop"


class NoticeLimiter:
    """At most ``per_hour`` rate-limited notices per sender in any hour; then one summary, then none.

    With ``shared`` (several gateways on PostgreSQL) the notices other gateways sent the sender in
    the hour count too, as of their last sync (``gateway.login_throttle.SharedCounts``: never a
    wait on the network). Each gateway sends its own one summary.
    """

    def __init__(
        self,
        per_hour: int,
        clock: Callable[[], float] = time.monotonic,
        shared: SharedCounts | None = None,
    ) -> None:
        self.per_hour = per_hour
        self._clock = clock
        self._shared = shared
        self._sent: dict[str, deque[float]] = {}
        self._collapsed: dict[str, float] = {}
        self._lock = threading.Lock()  # the periodic expiry runs on a worker thread

    def check(self, sender: str) -> LimitDecision:
        with self._lock:
            return self._check(sender)

    def _check(self, sender: str) -> LimitDecision:
        now = self._clock()
        key = sender.lower()
        recent = self._sent.setdefault(key, deque())
        while recent and recent[0] <= now - NOTICE_WINDOW:
            recent.popleft()
        elsewhere = self._shared.elsewhere(key) if self._shared is not None else 0
        if len(recent) + elsewhere < self.per_hour:
            recent.append(now)
            if self._shared is not None:
                self._shared.note(key)
            self._collapsed.pop(key, None)
            return LimitDecision.SEND
        if key in self._collapsed and self._collapsed[key] > now - NOTICE_WINDOW:
            return LimitDecision.DROP
        self._collapsed[key] = now
        return LimitDecision.COLLAPSE

    def resumes_in(self, sender: str) -> float:
        """Seconds until the oldest counted notice leaves the window."""
        key = sender.lower()
        recent = self._sent.get(key)
        if recent:
            return max(0.0, recent[0] + NOTICE_WINDOW - self._clock())
        # Only other gateways' notices count: their times are not known here, so say the most.
        return NOTICE_WINDOW if self._shared is not None and self._shared.elsewhere(key) else 0.0


@dataclass(frozen=True)
class Letter:
    """What one gateway message says: the parts ``Notices.build`` turns into bytes."""

    kind: NoticeKind
    to: str
    subject: str
    text: str
    in_reply_to: str | None = None
    reply_to: str | None = None
    attachment: bytes | None = None  # a whole message, attached as message/rfc822
    attachment_headers_only: bool = False  # attach only the header block (text/rfc822-headers)
    # The message this letter answers, when it is the sender's (RFC 3834: an automatic one is never
    # answered). None: the attachment, unless the letter is a review request to another member.
    answering: bytes | None = None


class Notices:
    """Builds gateway messages for one committee; refuses any recipient outside it."""

    def __init__(
        self,
        *,
        conduct_address: str,
        committee: Iterable[str],
        hostname: str,
        limiter: NoticeLimiter | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.conduct_address = conduct_address
        self.committee = frozenset(address.lower() for address in committee) | {conduct_address.lower()}
        self.hostname = hostname
        self.limiter = limiter
        self._clock = clock

    def outgoing(self, letter: Letter, *, essential: bool = False) -> Outgoing | None:
        """The spoolable message for ``letter``; None when the sender's notice budget is spent, or
        when the letter would answer the null sender or an auto-submitted message (RFC 3834).

        Raises ``NoticeRefused`` if the recipient is not a committee member address.
        """
        if letter.to.lower() not in self.committee:  # the null sender too: never answered
            raise NoticeRefused(f"refusing to send a {letter.kind.value} notice outside the committee")
        if not _may_answer(letter):
            return None
        if self.limiter is not None and letter.kind in RATE_LIMITED:
            decision = self.limiter.check(letter.to)
            if decision is LimitDecision.DROP:
                return None
            if decision is LimitDecision.COLLAPSE:
                letter = suppressed_letter(letter.to, self.limiter.resumes_in(letter.to))
        queue_id = Spool.new_queue_id()
        content = self.build(letter, queue_id)
        return Outgoing(
            queue_id=queue_id, mail_from="", rcpt_tos=(letter.to,), content=content, essential=essential
        )

    def build(self, letter: Letter, queue_id: str) -> bytes:
        """The complete message (CRLF line ends)."""
        generated = (NoticeKind.REVIEW_REQUEST, NoticeKind.DIGEST)
        auto = "auto-generated" if letter.kind in generated else "auto-replied"
        headers = [
            f"From: {formataddr((GATEWAY_NAME, self.conduct_address))}",
            f"To: <{_clean(letter.to)}>",
            f"Subject: {_header_text(letter.subject)}",
            f"Date: {formatdate(self._clock(), usegmt=True)}",
            f"Message-ID: <{queue_id}.{letter.kind.value}@{_clean(self.hostname)}>",
            f"Auto-Submitted: {auto}",
            "X-Auto-Response-Suppress: All",
            f"{NOTICE_HEADER}: {letter.kind.value}",
            "MIME-Version: 1.0",
        ]
        if letter.reply_to:
            headers.append(f"Reply-To: <{_clean(letter.reply_to)}>")
        if letter.in_reply_to:
            headers += [
                f"In-Reply-To: {_clean(letter.in_reply_to)}",
                f"References: {_clean(letter.in_reply_to)}",
            ]
        text = _text_body(letter.text)
        encoding = "7bit" if text.isascii() else "8bit"
        if letter.attachment is None:
            headers += ['Content-Type: text/plain; charset="utf-8"', f"Content-Transfer-Encoding: {encoding}"]
            return _lines(headers) + b"\r\n" + text.encode("utf-8")
        boundary = _boundary(letter.attachment)
        headers.append(f'Content-Type: multipart/mixed; boundary="{boundary}"')
        if letter.attachment_headers_only:
            attached = original_headers(letter.attachment)
            part_headers = [
                "Content-Type: text/rfc822-headers",
                "Content-Description: Headers of your message",
            ]
        else:
            attached = _crlf_terminated(letter.attachment)
            part_headers = [
                "Content-Type: message/rfc822",
                'Content-Disposition: attachment; filename="held-message.eml"',
                "Content-Description: The held message, exactly as it was sent",
            ]
        if not attached.isascii():
            part_headers.append("Content-Transfer-Encoding: 8bit")
        return b"".join(
            [
                _lines(headers),
                b"\r\nThis is a MIME-encapsulated message.\r\n",
                f"\r\n--{boundary}\r\n".encode(),
                _lines(
                    ['Content-Type: text/plain; charset="utf-8"', f"Content-Transfer-Encoding: {encoding}"]
                ),
                b"\r\n",
                text.encode("utf-8"),
                f"\r\n--{boundary}\r\n".encode(),
                _lines(part_headers),
                b"\r\n",
                attached,
                f"\r\n--{boundary}--\r\n".encode(),
            ]
        )


def _may_answer(letter: Letter) -> bool:
    """RFC 3834: never a notice to the null sender, nor one answering an auto-submitted message."""
    answered = letter.answering
    if answered is None and letter.kind is not NoticeKind.REVIEW_REQUEST:
        answered = letter.attachment
    if answerable(letter.to, answered or b""):
        return True
    log_event(log, "notice-not-sent", kind=letter.kind.value, reason="answers an automatic message")
    return False


def suppressed_letter(to: str, resumes_in: float) -> Letter:
    minutes = max(1, round(resumes_in / 60))
    return Letter(
        kind=NoticeKind.SUPPRESSED,
        to=to,
        subject="Further notices suppressed for a while",
        text=(
            "The gateway has sent you many notices in the last hour, so it will not send more held "
            f"or warning notices for about {minutes} minute(s). Nothing else changes: your mail client "
            "still shows the gateway's answer to each message you send, held messages still wait for "
            "review, and you will still hear when one is approved, rejected or expires."
        ),
    )


def finding_lines(findings: Sequence[NoticeFinding]) -> list[str]:
    """One paragraph per finding: rule, where, kind, the action, and the advice."""
    lines: list[str] = []
    for finding in findings:
        rule = f"{finding.rule} ({finding.code})" if finding.code else finding.rule
        head = " - ".join(part for part in (rule, finding.where, finding.kind) if part)
        lines.append(f"* {head} [{finding.action}]")
        if finding.advice:
            lines.append(f"  {finding.advice}")
    return lines


def warnings_letter(
    *, to: str, reference: str, subject: str, message_id: str | None, findings: Sequence[NoticeFinding]
) -> Letter:
    text = "\n".join(
        [
            f'Your message "{subject}" was sent, but the gateway noticed things the committee\'s '
            "communication guidelines ask you to look at. Nothing was changed because of them; "
            "please keep them in mind for your next message.",
            "",
            *finding_lines(findings),
            "",
            f"Reference: {reference}",
        ]
    )
    return Letter(NoticeKind.WARNINGS, to, f"Sent, with warnings: {subject}", text, in_reply_to=message_id)


def _text_body(text: str) -> str:
    """Wrap each paragraph line to WIDTH; CRLF; lines that are indented keep their indent."""
    out: list[str] = []
    for line in text.replace("\r\n", "\n").split("\n"):
        if len(line) <= WIDTH:
            out.append(line)
            continue
        indent = line[: len(line) - len(line.lstrip())]
        if line.lstrip().startswith("* "):
            indent += "  "
        out.extend(
            textwrap.wrap(
                line, WIDTH, subsequent_indent=indent, break_long_words=True, break_on_hyphens=False
            )
        )
    return "\r\n".join(out) + "\r\n"


def _header_text(text: str) -> str:
    flat = _clean(text)
    if flat.isascii() and len(flat) < 900:
        return flat
    return Header(flat, "utf-8", header_name="Subject").encode()


def _clean(text: str) -> str:
    return " ".join("".join(ch if ch >= " " and ch != "\x7f" else " " for ch in text).split())


def _lines(lines: Sequence[str]) -> bytes:
    return "".join(f"{line}\r\n" for line in lines).encode("utf-8")


def _crlf_terminated(content: bytes) -> bytes:
    return content if content.endswith(b"\r\n") else content + b"\r\n"


def _boundary(attachment: bytes) -> str:
    while True:
        boundary = f"=_conduct_{secrets.token_hex(12)}"
        if boundary.encode() not in attachment:
            return boundary
