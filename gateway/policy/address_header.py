"""Address header fields (From, To, Cc...) read without ever raising: a malformed one is named.

The standard library's address parsers raise on hostile input (``IndexError`` for ``Name <``,
``RecursionError`` for thousands of nested comments) or silently read half an address. A sender's
malformed header is the sender's mistake and must get a permanent refusal that says what is wrong,
never the gateway's "internal error" that makes the client retry for days. :func:`address_problem`
scans a value once, in linear time, for the structural faults that make readers disagree (an
unclosed ``<``, quoted name or comment); :func:`read_mailboxes` parses what passes and turns any
parser failure into :class:`MalformedAddressHeader` with a plain reason that quotes nothing.
"""

from __future__ import annotations

from email.utils import getaddresses

# Comments nested deeper than this are refused: no mail client writes them, and the standard
# library's parser recurses once per level (thousands of levels exhaust the stack).
MAX_COMMENT_DEPTH = 20


class MalformedAddressHeader(ValueError):
    """An address header field that cannot be read as a list of addresses; ``str()`` says why."""


def address_problem(value: str) -> str | None:
    """What makes ``value`` (one unfolded address header field) malformed, or None if nothing does.

    Quoted strings and comments are followed with their backslash escapes, as RFC 5322 defines
    them; angle brackets must pair up outside them.
    """
    quoted = False
    escaped = False
    depth = 0  # comment nesting
    angle = False
    for char in value:
        if escaped:
            escaped = False
        elif char == "\\" and (quoted or depth):
            escaped = True
        elif quoted:
            quoted = char != '"'
        elif depth:
            if char == "(":
                depth += 1
                if depth > MAX_COMMENT_DEPTH:
                    return f"comments in parentheses are nested more than {MAX_COMMENT_DEPTH} deep"
            elif char == ")":
                depth -= 1
        elif char == '"':
            quoted = True
        elif char == "(":
            depth = 1
        elif char == ")":
            return 'a ")" closes a comment that was never opened'
        elif char == "<":
            if angle:
                return 'an address has a "<" inside another "<...>"'
            angle = True
        elif char == ">":
            if not angle:
                return 'a ">" closes an address that was never opened with "<"'
            angle = False
    if quoted:
        return "a quoted name is not closed"
    if depth:
        return "a comment (in parentheses) is not closed"
    if angle:
        return 'an address is not closed with ">"'
    return None


def read_mailboxes(values: tuple[str, ...]) -> list[tuple[str, str]]:
    """(display name, address) pairs of the fields ``values``; MalformedAddressHeader if one is malformed."""
    for value in values:
        problem = address_problem(value)
        if problem is not None:
            raise MalformedAddressHeader(problem)
    try:
        return getaddresses(list(values))
    except RecursionError:
        raise MalformedAddressHeader("it is nested too deeply to read") from None
    except Exception:  # the parser has raised IndexError, AttributeError... on hostile input
        raise MalformedAddressHeader("it cannot be read as a list of addresses") from None
