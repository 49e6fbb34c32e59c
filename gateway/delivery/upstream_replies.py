"""Strict reading of upstream replies: each reply matched to the command that asked for it, or out of step.

An upstream, or a middlebox, that sends one line too many shifts every later reply by one if the
client reads one reply per command from whatever arrived: a stray ``250`` after the 354 was once read
as the reply to the final dot while the real reply, 451, answered the next MAIL, and messages the
upstream never took were recorded as delivered.

So on a delivery connection (``smtp_client.SMTPConnection``, which counts the replies it awaits):
``check_in_step`` refuses to send a command while bytes that arrived with no command waiting, or
unread ones, are there, and refuses bytes left over once every expected reply was read; ``expect``
refuses a reply of the wrong kind for its command (354 to MAIL, 250 to DATA, anything but 250 to
NOOP). Each raises ``OutOfStep``: the delivery drops the connection, defers the message and counts the
event. The proof that the reply to the final dot is really that reply is a NOOP sent after the dot (in
the same write when pipelining): if the 2xx was a stray line, the real reply to the dot answers the
NOOP.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final, Literal, NamedTuple

Phase = Literal["greeting", "mail", "rcpt", "data", "dot", "noop", "rset", "idle"]


# The replies each command may get (RFC 5321 §4.3.2); anything else means the replies are out of step.
# 421 (closing) is a 4xx and fits everywhere. 2xx to MAIL other than 250, and to RCPT other than 250
# or 251, is not in the RFC: taken as acceptance it could mark a recipient delivered without DATA.
_REFUSAL = range(400, 600)
_ALLOWED: Final[dict[str, Callable[[int], bool]]] = {
    "mail": lambda code: code == 250 or code in _REFUSAL,
    "rcpt": lambda code: code in (250, 251) or code in _REFUSAL,
    "data": lambda code: code == 354 or code in _REFUSAL,
    "dot": lambda code: 200 <= code < 300 or code in _REFUSAL,
    "noop": lambda code: code == 250,
    "rset": lambda code: 200 <= code < 300 or code in _REFUSAL,
}

_NAMES: Final = {"mail": "MAIL", "rcpt": "RCPT", "data": "DATA", "dot": "the final dot", "noop": "NOOP"}


class Reply(NamedTuple):
    """One reply: its code and its text (the lines of a multi-line reply joined by newlines)."""

    code: int
    message: str


class OutOfStep(Exception):
    """The upstream's replies no longer match the commands sent: nothing read on this connection
    since the last proven reply can be trusted."""

    def __init__(self, phase: Phase, detail: str) -> None:
        super().__init__(detail)
        self.phase = phase
        self.detail = detail


def expect(phase: Phase, response: Reply) -> Reply:
    """``response`` if it is a reply ``phase`` can get; OutOfStep otherwise."""
    allowed = _ALLOWED.get(phase)
    if allowed is not None and not allowed(response.code):
        raise OutOfStep(phase, f"the upstream answered {_NAMES.get(phase, phase)} with {response.code}")
    return response
