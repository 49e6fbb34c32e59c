"""What intake checks in a submitted message before the policy sees it, shared by SMTP and `check`.

The live gateway (``gateway.intake.smtp``) and ``conduct-gateway check`` run these same functions, so
``check`` answers exactly what a mail client would get: a message too big, with broken line
endings, a malformed header section, no or two ``From:``, or a ``From:``/``Sender:`` address that is
not the logged-in member's, is refused here with the reply and the audit code below, before any rule
runs. Pure: the member's addresses, limits, host name and time come in as arguments.
"""

from __future__ import annotations

import datetime
import email.utils
from dataclasses import dataclass

from gateway import replies
from gateway.intake.dataread import BadMessage, HeaderFacts, check_bytes, read_headers
from gateway.replies import Reply


@dataclass(frozen=True)
class IntakeRefusal:
    """A submission refused before the policy: the reply for the client and the audit's code."""

    reply: Reply
    code: str  # MESSAGE_TOO_BIG, MALFORMED_MESSAGE or HEADER_ADDRESS_NOT_MEMBER


def too_big(max_size: int) -> IntakeRefusal:
    return IntakeRefusal(replies.message_size_exceeds(max_size), "MESSAGE_TOO_BIG")


def check_submitted(
    content: bytes, *, member: str, allowed: frozenset[str] | None, max_line_length: int
) -> HeaderFacts | IntakeRefusal:
    """The header facts of an acceptable submission, or why it is refused.

    ``allowed`` holds the member's own addresses (lower-cased); None skips the sender binding (only
    ``check`` does, when it is given no account to check against).
    """
    try:
        check_bytes(content, max_line_length)
        facts = read_headers(content)
    except BadMessage as refusal:
        return IntakeRefusal(refusal.response, "MALFORMED_MESSAGE")
    if allowed is not None:
        for header, addresses in (("From", facts.from_addresses), ("Sender", facts.sender_addresses)):
            for address in addresses:
                if address not in allowed:
                    return IntakeRefusal(
                        replies.header_address_not_yours(header, address, member), "HEADER_ADDRESS_NOT_MEMBER"
                    )
    return facts


def missing_headers(facts: HeaderFacts, hostname: str, now: datetime.datetime) -> bytes:
    """A missing Date and Message-ID, which RFC 6409 8.2/8.3 let a submission server add."""
    added = b""
    if not facts.has_date:
        added += f"Date: {email.utils.format_datetime(now)}\r\n".encode()
    if not facts.has_message_id:
        added += f"Message-ID: {email.utils.make_msgid(domain=hostname)}\r\n".encode()
    return added
