"""The one place SMTP reply codes and texts live: every reply the gateway sends a mail client.

Every reply after the greeting and EHLO carries an RFC 3463 enhanced status code (we advertise
ENHANCEDSTATUSCODES, RFC 2034) and text a person can act on. Texts are ASCII and never include
message content; the only client-supplied values echoed back are the authenticated member's own
addresses and limits.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property

# RFC 5321 4.5.3.1.5: a reply line is at most 512 octets including the code and CRLF.
_MAX_TEXT = 400


def _clean(text: str) -> str:
    """Printable ASCII only: a reply must never carry CR/LF (reply splitting) or raw bytes."""
    return "".join(ch if " " <= ch <= "~" else "?" for ch in text)


def _wrap(text: str) -> list[str]:
    """``textwrap.wrap(text, _MAX_TEXT) or [""]`` for cleaned text (spaces are its only whitespace)."""
    if len(text) <= _MAX_TEXT:
        # What textwrap does to a line that fits, without its cost: keep the leading spaces of a
        # line with words on it, drop trailing spaces, and a line of only spaces becomes empty.
        return [text.rstrip(" ")] if text.strip(" ") else [""]
    return textwrap.wrap(text, _MAX_TEXT) or [""]


@dataclass(frozen=True)
class Reply:
    """One SMTP reply: ``code``, enhanced ``status`` ("" where RFC 2034 wants none), text lines."""

    code: int
    status: str
    lines: tuple[str, ...]

    def __str__(self) -> str:
        """The reply as sent, without the final CRLF (multi-line replies joined with CRLF)."""
        return self._rendered

    @cached_property
    def _rendered(self) -> str:
        # Cached: most replies are module constants sent once per command (frozen still allows this).
        wrapped: list[str] = []
        for line in self.lines or ("",):
            wrapped.extend(_wrap(_clean(line)))
        status = f"{self.status} " if self.status else ""
        last = len(wrapped) - 1
        return "\r\n".join(
            f"{self.code}{' ' if index == last else '-'}{status}{text}".rstrip()
            for index, text in enumerate(wrapped)
        )

    @property
    def is_success(self) -> bool:
        return self.code < 400

    @property
    def is_temporary(self) -> bool:
        return 400 <= self.code < 500


def reply(code: int, status: str, *lines: str) -> Reply:
    return Reply(code, status, tuple(lines))


def multiline(code: int, status: str, lines: Iterable[str]) -> Reply:
    """A reply built from a screener's refusal (code + status repeated on every line)."""
    return Reply(code, status, tuple(lines))


# --- Connection ------------------------------------------------------------------------------
def greeting(hostname: str) -> Reply:
    return reply(220, "", f"{hostname} ESMTP conduct-gateway ready")


def ehlo(hostname: str, extensions: Iterable[str]) -> Reply:
    return Reply(250, "", (hostname, *extensions))


def helo(hostname: str) -> Reply:
    return reply(250, "", hostname)


CLOSING = reply(221, "2.0.0", "Bye")
TOO_MANY_CONNECTIONS = reply(421, "4.7.0", "Too many connections to this server; try again later")
TOO_MANY_CONNECTIONS_FROM_YOU = reply(
    421, "4.7.0", "Too many connections from your address; close some and try again"
)
SHUTTING_DOWN = reply(421, "4.3.2", "Service shutting down; try again later")
TIMEOUT = reply(421, "4.4.2", "Timeout waiting for your mail program; closing the connection")
TOO_MANY_ERRORS = reply(421, "4.7.0", "Too many errors on this connection; closing it")
MADE_ROOM = reply(
    421, "4.7.0", "Too many connections waiting to log in; closing this idle one to make room for others"
)
TOO_MANY_SESSIONS = reply(421, "4.7.0", "Too many members logged in at once; try again in a few minutes")
LOGIN_TOO_SLOW = reply(421, "4.7.0", "Took too long to log in; closing the connection")
TOO_MANY_COMMANDS_BEFORE_LOGIN = reply(
    421, "4.7.0", "Too many commands without logging in; closing the connection"
)
SESSION_TOO_LONG = reply(
    421, "4.7.0", "This connection has been open too long; closing it, your mail program will reconnect"
)
DATA_TOO_SLOW = reply(
    421,
    "4.4.2",
    "The message is arriving too slowly; closing the connection, the message was not accepted",
)

# --- Simple commands -------------------------------------------------------------------------
OK = reply(250, "2.0.0", "Ok")
HELP = reply(214, "2.0.0", "This is a mail submission server (RFC 6409); ask your administrator")
CANNOT_VRFY = reply(252, "2.5.0", "Cannot verify addresses; send the message and delivery will be tried")
NOT_IMPLEMENTED = reply(502, "5.5.1", "Command not implemented")
UNRECOGNIZED = reply(500, "5.5.2", "Command not recognized")
LINE_TOO_LONG = reply(500, "5.5.2", "Command line too long")
BAD_COMMAND_BYTES = reply(500, "5.5.2", "Command contains characters that are not allowed")
BAD_UTF8 = reply(501, "5.5.2", "Command argument is not valid UTF-8")
SEND_EHLO_FIRST = reply(503, "5.5.1", "Send EHLO first")


def syntax(usage: str) -> Reply:
    return reply(501, "5.5.4", f"Syntax: {usage}")


# --- TLS -------------------------------------------------------------------------------------
READY_FOR_TLS = reply(220, "2.0.0", "Ready to start TLS")
TLS_ALREADY_ACTIVE = reply(503, "5.5.1", "TLS is already active")
TLS_NOT_AVAILABLE = reply(454, "4.7.0", "TLS not available on this port")
STARTTLS_REQUIRED = reply(530, "5.7.0", "Must issue a STARTTLS command first")

# --- AUTH (RFC 4954) -------------------------------------------------------------------------
AUTH_OK = reply(235, "2.7.0", "Authentication successful")
AUTH_FAILED = reply(535, "5.7.8", "Authentication credentials invalid")
AUTH_REQUIRED = reply(530, "5.7.0", "Authentication required")
AUTH_ENCRYPTION_REQUIRED = reply(538, "5.7.11", "Encryption required for requested authentication mechanism")
AUTH_ALREADY = reply(503, "5.5.1", "Already authenticated")
AUTH_IN_TRANSACTION = reply(503, "5.5.1", "AUTH is not allowed during a mail transaction")
AUTH_UNKNOWN_MECHANISM = reply(504, "5.5.4", "Unrecognized authentication type; use PLAIN or LOGIN")
AUTH_CANCELLED = reply(501, "5.7.0", "Authentication cancelled")
AUTH_BAD_BASE64 = reply(501, "5.5.2", "Cannot decode base64 authentication data")
AUTH_BAD_PLAIN = reply(501, "5.5.2", "Malformed PLAIN authentication data")
AUTH_LINE_TOO_LONG = reply(500, "5.5.6", "Authentication exchange line is too long")
AUTH_AUTHZID = reply(535, "5.7.8", "Authorization identity must be empty or equal to the login")
AUTH_THROTTLED = reply(
    454, "4.7.0", "Too many failed logins from your address; wait a few minutes before trying again"
)
AUTH_TOO_MANY_FAILURES = reply(421, "4.7.0", "Too many failed logins on this connection; closing it")
AUTH_CHALLENGE_USERNAME = "334 VXNlcm5hbWU6"  # base64("Username:")
AUTH_CHALLENGE_PASSWORD = "334 UGFzc3dvcmQ6"  # noqa: S105 -- base64("Password:"), a prompt
AUTH_CHALLENGE_EMPTY = "334 "

# --- Envelope --------------------------------------------------------------------------------
SENDER_OK = reply(250, "2.1.0", "Sender ok")
RECIPIENT_OK = reply(250, "2.1.5", "Recipient ok")
NESTED_MAIL = reply(503, "5.5.1", "Nested MAIL command; send RSET first")
NEED_MAIL = reply(503, "5.5.1", "Send MAIL first")
NEED_RCPT = reply(503, "5.5.1", "Send RCPT first")
UNKNOWN_PARAMETER = reply(555, "5.5.4", "Parameter not recognized or not implemented")
BAD_BODY_PARAMETER = reply(501, "5.5.4", "BODY must be 7BIT or 8BITMIME")
SMTPUTF8_NEEDED = reply(553, "5.6.7", "Address is not ASCII; your mail program must use SMTPUTF8")


# RFC 3463 X.3.1 "mail system full", temporary: the client retries once there is room again.
INSUFFICIENT_STORAGE = reply(
    452, "4.3.1", "Insufficient system storage: the server's disk is nearly full; try again later"
)


def sender_not_yours(sender: str, member: str) -> Reply:
    shown = f"<{sender}>" if sender else "The null sender <>"
    return reply(
        553, "5.7.1", f"{shown} is not one of your addresses; send as {member} or one of its aliases"
    )


def odd_forward_path(why: str) -> Reply:
    return reply(553, "5.1.3", f"Recipient address refused: {why}; use a plain address like name@example.org")


def too_many_recipients(limit: int) -> Reply:
    return reply(452, "4.5.3", f"Too many recipients (at most {limit} per message); send the rest separately")


def message_size_exceeds(limit: int) -> Reply:
    return reply(552, "5.3.4", f"Message too big: this server accepts at most {limit} bytes")


# --- DATA ------------------------------------------------------------------------------------
START_DATA = reply(354, "", "End data with <CR><LF>.<CR><LF>")
BARE_LINE_ENDING = reply(
    550, "5.5.2", "Message refused: it contains a bare CR or LF; every line must end with CRLF"
)
NUL_IN_DATA = reply(550, "5.5.2", "Message refused: it contains a NUL byte")


def line_too_long(limit: int) -> Reply:
    return reply(
        550,
        "5.6.0",
        f"Message refused: a line is longer than {limit} bytes;"
        " have your mail program wrap it or use quoted-printable",
    )


HEADER_MALFORMED = reply(
    550, "5.6.0", "Message refused: the header section has a line that is not a header field"
)
HEADER_FROM_MISSING = reply(550, "5.6.0", "Message refused: it has no From header")
HEADER_FROM_DUPLICATE = reply(550, "5.6.0", "Message refused: it has more than one From header")
HEADER_FROM_UNREADABLE = reply(550, "5.6.0", "Message refused: the From header has no readable address")
HEADER_SENDER_DUPLICATE = reply(550, "5.6.0", "Message refused: it has more than one Sender header")


def header_malformed(field: str, problem: str) -> Reply:
    """A header field the gateway's parser cannot read: the sender's mistake, refused for good."""
    return reply(550, "5.6.0", f"Message refused: the {field} header is malformed: {problem}")


def header_address_not_yours(field: str, address: str, member: str) -> Reply:
    return reply(
        550,
        "5.7.1",
        f"Message refused: {field}: <{address}> is not one of your addresses; use {member} or an alias",
    )


def queued(queue_id: str, changes: Iterable[str] = ()) -> Reply:
    return Reply(250, "2.0.0", (*(f"Changed: {change}" for change in changes), f"Ok: queued as {queue_id}"))


INTERNAL_ERROR = reply(451, "4.3.0", "Internal error; the message was not accepted, please try again later")
STORE_FAILED = reply(
    451, "4.3.0", "Could not store the message safely; it was not accepted, please try again later"
)


# --- Review: holds that cannot be made, replies to a review address ---------------------------
REVIEW_NEEDS_LOGIN = reply(
    550,
    "5.7.1",
    "Review decisions are accepted only from a logged-in member: send your reply with your mail "
    "program's login (authenticated submission), not unauthenticated",
)


def hold_refused(why: str, reference: str) -> Reply:
    """A message the policy holds, but too few members may review it (``why`` names the numbers)."""
    return reply(550, "5.7.1", why, f"Reference: {reference}")


def review_reply_to_others(reference: str) -> Reply:
    return reply(
        550,
        "5.7.1",
        "Not sent: a reply to a review address goes to the gateway only. Send your decision to "
        "the review address alone, and write to other people in a separate message.",
        f"Reference: {reference}",
    )


def review_not_a_member(reference: str) -> Reply:
    return reply(
        550,
        "5.7.1",
        "Not accepted: only committee members named in the policy can review held messages, "
        "and only from their own address.",
        f"Reference: {reference}",
    )


def review_one_address_at_a_time(reference: str) -> Reply:
    return reply(
        550,
        "5.7.1",
        "Not accepted: send one decision to one review address at a time.",
        f"Reference: {reference}",
    )


def review_address_unknown(reference: str) -> Reply:
    return reply(
        550,
        "5.7.1",
        "Not accepted: this review address is not valid (mistyped, altered, or the held message "
        "is gone). Reply to the review request or hold notice exactly as received.",
        f"Reference: {reference}",
    )


def review_not_understood(reference: str) -> Reply:
    return reply(
        550,
        "5.6.0",
        "Not understood: write approve, reject <reason> or (as the sender) cancel as the "
        "first line of your reply, above any quoted text.",
        f"Reference: {reference}",
    )


def review_reply_automatic(reference: str) -> Reply:
    return reply(
        550,
        "5.7.1",
        "Not accepted: this reply is marked as sent automatically (Auto-Submitted), for example an "
        "out-of-office answer, and an automatic reply never decides a held message. Reply to the "
        "review request yourself.",
        f"Reference: {reference}",
    )


def review_of_own_message(reference: str) -> Reply:
    return reply(
        550,
        "5.7.1",
        f"Not accepted: you sent message {reference}, so you cannot review it; another "
        "committee member must. To withdraw it, reply cancel to your hold notice.",
        f"Reference: {reference}",
    )


def review_claim_refused(reference: str, why: str) -> Reply:
    return reply(550, "5.7.1", f"Not accepted: {why}.", f"Reference: {reference}")


def review_cancel_by_sender_only(reference: str) -> Reply:
    return reply(
        550,
        "5.7.1",
        f"Not accepted: only the sender can cancel message {reference}; reviewers reply "
        "approve or reject <reason>.",
        f"Reference: {reference}",
    )


def review_address_of_another(reference: str) -> Reply:
    return reply(
        550,
        "5.7.1",
        "Not accepted: this review address was sent to another committee member. Use the one in "
        "the review request sent to you.",
        f"Reference: {reference}",
    )


def review_reason_missing(reference: str) -> Reply:
    return reply(
        550,
        "5.6.0",
        "Not understood: write the reason on the same line, e.g. 'reject names a witness in "
        "paragraph 2'. The sender is told the reason.",
        f"Reference: {reference}",
    )


def accepted_as(lines: Iterable[str]) -> Reply:
    """A 250 whose text the decision wrote (a held message, a review decision) instead of "queued as"."""
    return Reply(250, "2.0.0", tuple(lines))


# --- The policy's replies (their texts are composed in gateway.mail.verdict_replies) ---------------
def refused_by_policy(lines: Iterable[str]) -> Reply:
    """550 5.7.1: the policy (or a review decision's checks) does not let the message go out."""
    return Reply(550, "5.7.1", tuple(lines))


def malformed_for_policy(lines: Iterable[str]) -> Reply:
    """550 5.6.0: the message can be read in more than one way, so the policy cannot judge it."""
    return Reply(550, "5.6.0", tuple(lines))


def too_complex_to_check(lines: Iterable[str]) -> Reply:
    """552 5.3.4: checking the message used up its CPU budget (permanent: a retry would too)."""
    return Reply(552, "5.3.4", tuple(lines))


def not_checked_yet(lines: Iterable[str]) -> Reply:
    """451 4.3.0: the policy could not be applied (our fault); the client will retry."""
    return Reply(451, "4.3.0", tuple(lines))
