"""A multipart parser that finds boundaries with ``str.find``: the feedparser's Message tree, or None.

The stdlib feedparser reads a multipart line by line in Python and, after each part, searches the
whole part again for its last line break: most of the cost of reading a large message. This
parser finds each boundary line with one ``str.find`` per line that starts with the boundary, reads
each header block as the feedparser does (its header-line pattern, compat32's own
``header_source_parse``), and slices the bodies out of the text.

It reproduces the feedparser only where the feedparser's reading is plain, and answers None
(parse the whole message with the feedparser) on anything else: a bare CR line break, a header
block with a defect or with no empty line after it, a part with no headers that a digest would type
as message/rfc822, a delivery status, a multipart without a boundary, without its first or closing
boundary line, with two boundary lines in a row, with a boundary an enclosing multipart already
uses, or with a transfer encoding a multipart may not have, and nesting deeper than
:data:`MAX_NESTING`. Tests compare its trees with the feedparser's on generated and real mail.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from email.message import Message
from email.policy import compat32

MAX_NESTING = 32  # deeper trees are left to the feedparser (and refused by gateway.policy.mime)

# An empty line after a line break (bare CRs are refused beforehand): the end of a header block.
_EMPTY_LINE = re.compile(r"\n(?:\r\n|\n)")
_BARE_CR = re.compile(r"\r(?!\n)")
# What may follow the boundary on a boundary line (email.feedparser's pattern after the boundary).
_BOUNDARY_TAIL = re.compile(r"(?P<end>--)?(?P<ws>[ \t]*)(?P<linesep>\r\n|\r|\n)?$")
# A line the feedparser takes for a header line (email.feedparser.headerRE): a "From " line, a name
# of printable characters and a colon, or a continuation.
_HEADER_LINE = re.compile(r"^(From |[\041-\071\073-\176]*:|[\t ])")


class _Unusual(Exception):
    """Something this parser does not reproduce: the caller parses with the feedparser instead."""


def split_multipart(text: str) -> Message | None:
    """The feedparser's (compat32) tree for ``text``, a multipart or message/* message; None when unsure.

    ``text`` is the raw message decoded as ASCII with surrogateescape, as the stdlib's
    ``BytesParser`` decodes it.
    """
    if _BARE_CR.search(text):
        return None  # the feedparser also ends lines at a bare CR: not reproduced here
    try:
        message = _entity(text, 0, len(text), (), 0, trim=False)
    except _Unusual:
        return None
    return message if isinstance(vars(message).get("_payload"), list) else None


def _entity(
    text: str,
    start: int,
    end: int,
    enclosing: tuple[str, ...],
    depth: int,
    *,
    trim: bool,
    digest: bool = False,
) -> Message:
    """The message or part in ``text[start:end]`` (whole lines).

    ``trim``: the region is followed by a boundary line, which owns the region's last line break
    (RFC 2046): the feedparser removes it from the payload, or from a multipart's epilogue.
    ``digest``: the region is a part of a multipart/digest (whose parts default to message/rfc822).
    """
    if depth > MAX_NESTING or digest:
        raise _Unusual
    if text.startswith(("\r\n", "\n"), start, end):
        # No headers: the first line is the empty line that ends the (empty) header block.
        message = Message(policy=compat32)
        body_start = start + (2 if text.startswith("\r\n", start, end) else 1)
    else:
        separator = _EMPTY_LINE.search(text, start, end)
        if separator is None:
            raise _Unusual  # headers up to the end of the part: rare, left to the feedparser
        message = _header_block(text[start : separator.start() + 1])
        body_start = separator.end()
    maintype = message.get_content_maintype()
    if maintype == "message":
        if message.get_content_type() == "message/delivery-status":
            raise _Unusual  # blocks of headers, parsed differently
        # The body is a whole message, read with the same enclosing boundaries; the line break the
        # boundary owns comes off whatever that message ends with.
        message.set_payload([_entity(text, body_start, end, enclosing, depth + 1, trim=trim)])
        return message
    if maintype != "multipart":
        body_end = end - _final_break(text, body_start, end) if trim else end
        message.set_payload(text[body_start:body_end])
        return message
    _multipart(message, text, body_start, end, enclosing, depth, trim=trim)
    return message


def _header_block(head: str) -> Message:
    """A message with the header lines ``head`` (each ending in a line break), as the feedparser
    reads them when they hold no defect (compat32's own ``header_source_parse`` and ``set_raw``).

    What would make the feedparser record a defect or end the header block early raises
    :class:`_Unusual`: a line that is not a header, a continuation line first, a header with no
    name, a "From " line after the first line.
    """
    message = Message(policy=compat32)
    field: list[str] = []
    # Lines end at LF only (CR LF included): str.splitlines would also end them at VT, FF, U+0085...
    for number, line in enumerate(piece + "\n" for piece in head[:-1].split("\n")):
        if not _HEADER_LINE.match(line):
            raise _Unusual
        if line[0] in " \t":
            if not field:
                raise _Unusual
            field.append(line)
            continue
        if field:
            message.set_raw(*compat32.header_source_parse(field))
            field = []
        if line.startswith("From "):
            if number:
                raise _Unusual
            message.set_unixfrom(line[: len(line) - _final_break(line, 0, len(line))])
            continue
        if line[0] == ":":
            raise _Unusual
        field = [line]
    if field:
        message.set_raw(*compat32.header_source_parse(field))
    return message


def _final_break(text: str, start: int, end: int) -> int:
    """The length of the line break ending ``text[start:end]`` (0 if none)."""
    if text.endswith("\r\n", start, end):
        return 2
    return 1 if text.endswith("\n", start, end) else 0


def _multipart(
    message: Message, text: str, start: int, end: int, enclosing: tuple[str, ...], depth: int, *, trim: bool
) -> None:
    boundary = message.get_boundary()
    if boundary is None or boundary in enclosing:
        raise _Unusual
    if str(message.get("content-transfer-encoding", "8bit")).lower() not in ("7bit", "8bit", "binary"):
        raise _Unusual  # the feedparser records a defect
    lines = _boundary_lines(text, start, end, "--" + boundary)
    first = next(lines, None)
    if first is None or first[2]:
        raise _Unusual  # no first boundary line: the feedparser reads the body as text
    if first[0] > start:
        # The preamble; the line break before the boundary line belongs to the boundary.
        message.preamble = text[start : first[0] - _final_break(text, start, first[0])]
    inner = (*enclosing, boundary)
    digest = message.get_content_type() == "multipart/digest"
    parts: list[Message | str] = []  # the type Message.set_payload declares
    current = first
    while True:
        following = next(lines, None)
        if following is None:
            raise _Unusual  # no closing boundary line
        if following[0] == current[1]:
            raise _Unusual  # boundary lines in a row: the feedparser skips them
        parts.append(_entity(text, current[1], following[0], inner, depth + 1, trim=True, digest=digest))
        current = following
        if current[2]:
            break
    message.set_payload(parts)
    if not trim:
        message.epilogue = text[current[1] : end]
    elif current[1] < end:  # an empty epilogue before an enclosing boundary line is None
        message.epilogue = text[current[1] : end - _final_break(text, current[1], end)]


def _boundary_lines(text: str, start: int, end: int, separator: str) -> Iterator[tuple[int, int, bool]]:
    """(start, end, closing) of each boundary line in ``text[start:end]``, up to the closing one.

    A boundary line is the boundary, optionally ``--``, optionally blanks, and the line break: the
    feedparser's pattern (``--boundary`` then :data:`_BOUNDARY_TAIL`), matched against the same
    line. The boundary is a literal, so the tail is matched alone, with no pattern compiled per
    boundary (a message's boundaries are new to the regex cache).
    """
    needle = "\n" + separator
    at = start if text.startswith(separator, start, end) else _after(text.find(needle, start, end))
    while at >= 0:
        line_end = text.find("\n", at, end)
        line_end = end if line_end < 0 else line_end + 1
        # ``$`` matches at ``line_end``, or before its line break, as at the end of the line alone.
        match = _BOUNDARY_TAIL.match(text, at + len(separator), line_end)
        if match:
            closing = bool(match.group("end"))
            yield at, line_end, closing
            if closing:
                return
        if line_end >= end:
            return
        at = _after(text.find(needle, line_end - 1, end))


def _after(found: int) -> int:
    return found + 1 if found >= 0 else -1
