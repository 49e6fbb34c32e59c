"""Header fields as the decoder reads them: the names it may echo, singletons, message ids and addresses."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from gateway.policy.address_header import read_mailboxes
from gateway.policy.charsets import decode_encoded_words
from gateway.policy.model import Address


def _words(text: str) -> frozenset[str]:
    """A set of words written as one string (keeps long vocabulary tables readable)."""
    return frozenset(text.split())


TOP_SINGLETONS = (
    "from", "sender", "reply-to", "to", "cc", "bcc", "subject", "date", "message-id",
    "in-reply-to", "references", "mime-version",
)  # fmt: skip
PART_SINGLETONS = ("content-type", "content-transfer-encoding", "content-disposition")
ADDRESS_HEADERS = ("from", "to", "cc", "bcc")

# Header names shown in locations. Any other name is sender-chosen text and is not echoed.
KNOWN_HEADERS = {
    name.lower(): name
    for name in _words("""From Sender Reply-To To Cc Bcc Subject Date Message-ID In-Reply-To References
    MIME-Version Content-Type Content-Transfer-Encoding Content-Disposition Content-Description
    Content-ID Content-Language Content-Location Content-Base Content-MD5 Comments Keywords
    Received Return-Path Delivered-To Resent-From Resent-Sender Resent-To Resent-Cc Resent-Bcc
    Resent-Date Resent-Message-ID Resent-Reply-To Organization User-Agent X-Mailer Importance
    Priority X-Priority Sensitivity Thread-Topic Thread-Index List-Id List-Post List-Help
    List-Unsubscribe List-Subscribe List-Owner List-Archive Precedence Auto-Submitted
    Disposition-Notification-To Return-Receipt-To Errors-To Mail-Followup-To Mail-Reply-To
    DKIM-Signature Authentication-Results ARC-Seal ARC-Message-Signature
    ARC-Authentication-Results Received-SPF Autocrypt Openpgp Face X-Face Newsgroups
    Followup-To Original-Recipient Final-Recipient Reporting-MTA Action Status
    Remote-MTA Diagnostic-Code Last-Attempt-Date Arrival-Date X-Original-To
    Accept-Language""")
}


# What an encoded-word must not decode to in a header: a line break (CR, LF, or the Unicode line and
# paragraph separators) or another C0 control character (tab is allowed). Another reader would start
# a new header line there, or show something other than what was checked. (C1 controls are left
# alone: Latin-1 labels on Windows-1252 text, which real mail is full of, decode to them.)
HEADER_CONTROL = re.compile("[\x00-\x08\x0a-\x1f\x7f\u2028\u2029]")
_MESSAGE_IDS = re.compile(r"<[^<>\s]*>")


@dataclass
class Header:
    """One header field, as written, as the decoder sees it raw, and fully decoded."""

    name: str  # as written (decoded)
    raw: str  # unfolded, 8-bit decoded, encoded-words left as they are
    text: str  # fully decoded


def message_ids(text: str) -> tuple[str, ...]:
    found = _MESSAGE_IDS.findall(text)
    return tuple(found) if found else tuple(text.split())


def addresses(headers: list[Header]) -> tuple[Address, ...]:
    """The mailboxes of one address header's fields (MalformedAddressHeader if they cannot be read)."""
    values = tuple(header.raw for header in headers)
    if sum(len(value) for value in values) <= _CACHED_ADDRESS_CHARS:
        return _cached_mailboxes(values)
    return _mailboxes(values)


# From, To and Cc values recur from message to message, and email.utils.getaddresses is one of the
# costliest steps of parsing: remember recent results. Long values (big recipient lists) are parsed
# every time, which keeps the cache small.
_CACHED_ADDRESS_CHARS = 1000


@lru_cache(maxsize=1024)
def _cached_mailboxes(values: tuple[str, ...]) -> tuple[Address, ...]:
    return _mailboxes(values)


def _mailboxes(values: tuple[str, ...]) -> tuple[Address, ...]:
    """The mailboxes of address header values (one header's fields, unfolded)."""
    mailboxes: list[Address] = []
    for name, address in read_mailboxes(values):
        if name or address:
            mailboxes.append(Address(name=decode_encoded_words(name).strip(), address=address.strip()))
    return tuple(mailboxes)
