"""Delivery status notifications (RFC 3464): tell a sender, in plain words, which recipients failed.

A DSN is ``multipart/report; report-type=delivery-status`` with three parts: a human-readable
explanation, the machine-readable ``message/delivery-status``, and the original message's *headers*
as ``text/rfc822-headers``. The original body is never included: it may hold protected content.

Built as bytes by hand (CRLF, lines under 998 octets) rather than with ``email.generator``, so the
original header bytes are carried exactly and nothing is re-encoded.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from email.utils import formatdate

from gateway.header_section import original_headers
from gateway.state.spool import SpoolEnvelope

_ENHANCED = re.compile(r"^\s*[245]\d\d[ -]([245])\.(\d{1,3})\.(\d{1,3})(?!\S)")
_BASIC = re.compile(r"^\s*([245])\d\d(?!\d)")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
_MAX_DIAGNOSTIC = 600


@dataclass(frozen=True)
class FailedRecipient:
    """One recipient the message could not be delivered to, and why."""

    address: str
    reply: str  # the last reply about it ("550 5.1.1 <x>: unknown user"), or our own explanation
    remote: str = ""  # the server that gave the reply; "" if none was reached
    expired: bool = False  # we gave up after retry_lifetime rather than on a permanent refusal
    last_attempt_at: float = 0.0


def status_code(failure: FailedRecipient) -> str:
    """The RFC 3463 status for the report: the reply's enhanced code, else one derived from its class."""
    match = _ENHANCED.match(failure.reply)
    if match:
        klass, subject, detail = match.groups()
        if failure.expired or klass == "5":
            return f"{klass}.{int(subject)}.{int(detail)}"
        return f"4.{int(subject)}.{int(detail)}"
    if failure.expired:
        return "4.4.7"  # delivery time expired
    basic = _BASIC.match(failure.reply)
    return f"{basic.group(1)}.0.0" if basic and basic.group(1) in "45" else "5.0.0"


def build_dsn(
    *,
    queue_id: str,
    original: SpoolEnvelope,
    original_content: bytes,
    failures: Sequence[FailedRecipient],
    reporting_host: str,
    created_at: float,
    retry_lifetime: float,
) -> bytes:
    """The complete DSN message (headers and body, CRLF line endings) to send to ``original.mail_from``."""
    if not original.mail_from:
        raise ValueError("never send a DSN to the null sender")
    if not failures:
        raise ValueError("a DSN needs at least one failed recipient")
    host = _clean(reporting_host) or "localhost"
    headers = original_headers(original_content)
    boundary = _boundary(headers)
    addresses = [original.mail_from, *(f.address for f in failures)]
    international = any(not a.isascii() for a in addresses)
    address_type = "utf-8" if international else "rfc822"

    top = [
        f"From: Mail Delivery System <MAILER-DAEMON@{host}>",
        f"To: <{_clean(original.mail_from)}>",
        "Subject: Undelivered mail returned to sender",
        f"Date: {formatdate(created_at, usegmt=True)}",
        f"Message-ID: <{queue_id}@{host}>",
        "Auto-Submitted: auto-replied",
        "MIME-Version: 1.0",
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"',
    ]
    original_id = _message_id(headers)
    if original_id:
        top += [f"In-Reply-To: {original_id}", f"References: {original_id}"]

    status_lines = [
        f"Reporting-MTA: dns; {host}",
        f"X-Queue-ID: {original.queue_id}",
        f"Arrival-Date: {formatdate(original.received_at, usegmt=True)}",
    ]
    for failure in failures:
        status_lines += [
            "",
            f"Final-Recipient: {address_type}; {_clean(failure.address)}",
            "Action: failed",
            f"Status: {status_code(failure)}",
        ]
        if failure.remote:
            status_lines.append(f"Remote-MTA: dns; {_clean(failure.remote)}")
        if failure.reply and failure.remote:
            status_lines.append(f"Diagnostic-Code: smtp; {_diagnostic(failure.reply)}")
        elif failure.reply:
            status_lines.append(f"Diagnostic-Code: x-gateway; {_diagnostic(failure.reply)}")
        if failure.last_attempt_at:
            status_lines.append(f"Last-Attempt-Date: {formatdate(failure.last_attempt_at, usegmt=True)}")
        if failure.expired:
            status_lines.append(
                f"Will-Retry-Until: {formatdate(original.received_at + retry_lifetime, usegmt=True)}"
            )

    explanation = _explanation(original, failures, host, retry_lifetime)
    needs_8bit = international or not explanation.isascii()
    report_type = "message/global-delivery-status" if international else "message/delivery-status"
    headers_8bit = not headers.isascii()

    parts = [
        _lines(top),
        b"\r\n",
        b"This is a MIME-encapsulated delivery status notification.\r\n",
        f"\r\n--{boundary}\r\n".encode(),
        _lines(
            [
                "Content-Description: Notification",
                'Content-Type: text/plain; charset="utf-8"',
                f"Content-Transfer-Encoding: {'8bit' if needs_8bit else '7bit'}",
            ]
        ),
        b"\r\n",
        explanation.encode("utf-8"),
        f"\r\n--{boundary}\r\n".encode(),
        _lines(
            [
                "Content-Description: Delivery report",
                f"Content-Type: {report_type}",
                *(["Content-Transfer-Encoding: 8bit"] if international else []),
            ]
        ),
        b"\r\n",
        _lines(status_lines),
        f"\r\n--{boundary}\r\n".encode(),
        _lines(
            [
                "Content-Description: Headers of the undelivered message (its body is not included)",
                "Content-Type: text/rfc822-headers",
                *(["Content-Transfer-Encoding: 8bit"] if headers_8bit else []),
            ]
        ),
        b"\r\n",
        headers,
        f"\r\n--{boundary}--\r\n".encode(),
    ]
    return b"".join(parts)


def _explanation(
    original: SpoolEnvelope, failures: Sequence[FailedRecipient], host: str, retry_lifetime: float
) -> str:
    lines = [
        f"This is the mail system at {host}.",
        "",
        f"Your message could not be delivered to {_count(len(failures), 'recipient')}:",
        "",
    ]
    for failure in failures:
        lines.append(f"  <{_clean(failure.address)}>")
        if failure.expired:
            lines.append(
                f"    We kept trying for {_duration(retry_lifetime)}, but the message could not be handed on."
            )
            if failure.reply:
                lines.append(f"    The last problem was: {_diagnostic(failure.reply)}")
        elif failure.remote:
            lines.append(f"    The receiving server {_clean(failure.remote)} refused it permanently, saying:")
            lines.append(f"    {_diagnostic(failure.reply)}")
        else:
            lines.append(f"    It was refused permanently: {_diagnostic(failure.reply)}")
        lines.append("")
    lines += [
        "What to do: check each address above for typing mistakes. If an address is right, the",
        "server's words above usually say why it was refused (unknown user, mailbox full, policy);",
        "ask the recipient for another address or your mail administrator for help, then send",
        "the message again.",
        "",
        "Recipients not listed here are not affected by this report. The headers of your message",
        "are attached so you can tell which message this is; its text is not, to keep it private.",
        f"Reference: queue id {original.queue_id}.",
    ]
    return "\r\n".join(lines) + "\r\n"


def _lines(lines: Sequence[str]) -> bytes:
    return "".join(f"{line}\r\n" for line in lines).encode("utf-8")


def _clean(text: str) -> str:
    """One header-safe line: control characters (CR, LF, NUL, ...) become spaces."""
    return _CONTROL.sub(" ", text).strip()


def _diagnostic(reply: str) -> str:
    text = " ".join(_clean(reply).split())
    return text if len(text) <= _MAX_DIAGNOSTIC else text[: _MAX_DIAGNOSTIC - 3] + "..."


def _message_id(headers: bytes) -> str:
    unfolded = re.sub(rb"\r\n[ \t]+", b" ", headers)
    match = re.search(rb"(?im)^message-id:[ \t]*(<[!-;=?-~]{1,250}>)[ \t]*\r?$", unfolded)
    return match.group(1).decode("ascii") if match else ""


def _boundary(headers: bytes) -> str:
    while True:
        boundary = f"=_dsn_{secrets.token_hex(12)}"
        if boundary.encode() not in headers:
            return boundary


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def _duration(seconds: float) -> str:
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            return _count(round(seconds / size), unit)
    return _count(max(1, round(seconds)), "second")
