"""Python's email parser for a raw message, with fast paths for a single part and for a plain multipart."""

from __future__ import annotations

import re
from email import message_from_bytes
from email.message import Message
from email.parser import Parser
from email.policy import compat32

from gateway.policy.mime_split import split_multipart

# An empty line after a line ending in LF or CRLF. The feedparser splits lines as io.StringIO(newline="")
# does: after "\r\n", "\n", or a "\r" not followed by "\n" (never at the other breaks str.splitlines
# knows), so a match ends a line and its last line is empty. (A "\n" at the start of the match keeps the
# search on a literal: an empty line at the very start or after a bare CR is missed, see single_part.)
_EMPTY_LINE = re.compile(r"\n(?:\r\n|\r|\n)")
# A multipart or message/* type, seen before parsing the header block (a miss only costs time).
_COMPOUND_TYPE = re.compile(r"^content-type:\s*(?:multipart|message)/", re.IGNORECASE | re.MULTILINE)


def parse_email(raw: bytes) -> Message:
    """``message_from_bytes(raw, policy=compat32)``, cheaper for a single part and a plain multipart."""
    text = raw.decode("ascii", "surrogateescape")  # as email.parser.BytesParser decodes
    message = single_part(text)
    if message is None:
        message = split_multipart(text)
    return Parser(policy=compat32).parsestr(text) if message is None else message


def single_part(text: str) -> Message | None:
    """Parse only the header block when the body needs no parsing; None when unsure.

    The feedparser walks a body line by line, but for a type other than multipart/* and message/* it
    only joins those lines back into the payload: the payload is the text after the header block.
    """
    separator = _EMPTY_LINE.search(text)
    if separator is None:
        return None
    head = text[: separator.end()]
    if _COMPOUND_TYPE.search(head):
        return None  # spare a multipart a second parse of its headers
    # Up to the end of that empty line the feedparser sees the same lines as in the whole text, so it
    # reads the same headers, unixfrom and defects. The payload is empty only if the header block ended
    # at that line: not earlier (at a line that is not a header, or an empty line the search missed),
    # and with no "From " line pushed back into the body. Defects would be the same in the full parse,
    # but headers that odd are rare: not worth reasoning about.
    message = Parser(policy=compat32).parsestr(head)
    if (
        message.defects
        or vars(message).get("_payload") != ""
        or message.get_content_maintype() in ("multipart", "message")  # bodies the feedparser parses
    ):
        return None
    message.set_payload(text[separator.end() :])
    return message


def parse_fully(raw: bytes) -> Message:
    """The reference :func:`parse_email` must agree with (tests compare them)."""
    return message_from_bytes(raw, policy=compat32)
