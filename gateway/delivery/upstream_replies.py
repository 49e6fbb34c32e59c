"""Strict reading of upstream replies: each reply matched to the command that asked for it, or out of step.

aiosmtplib reads one reply per command. Bytes that arrive together with a reply stay in its buffer
and answer the *next* command; bytes that arrive while no command waits (between commands, or while
a parsed reply waits to be picked up) are quietly dropped. Either way an upstream, or a middlebox,
that sends one line too many shifts every later reply by one: a stray ``250`` after the 354 was read
as the reply to the final dot while the real reply, 451, answered the next MAIL, and messages the
upstream never took were recorded as delivered.

So on a delivery connection: ``watch`` notes bytes that arrive with no command waiting;
``ensure_in_step`` refuses to send a command while such bytes, or unread ones, are there; ``expect``
refuses a reply of the wrong kind for its command (354 to MAIL, 250 to DATA, anything but 250 to
NOOP); ``settled`` refuses bytes left over once every expected reply was read. Each raises
``OutOfStep``: the delivery drops the connection, defers the message and counts the event. The proof
that the reply to the final dot is really that reply is a NOOP sent after the dot (in the same write
when pipelining): if the 2xx was a stray line, the real reply to the dot answers the NOOP.

This uses three of aiosmtplib's protocol internals (``_buffer``, ``_response_pending``,
``_response_waiter``), besides those ``upstream_pipelining`` uses; ``supported()`` says whether they
are there, and the upstream transport refuses to start without them rather than deliver unchecked.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final, Literal

import aiosmtplib
from aiosmtplib import SMTPResponse

Phase = Literal["greeting", "mail", "rcpt", "data", "dot", "noop", "rset", "idle"]

_INTERNALS: Final = ("_buffer", "_response_pending", "_response_waiter")
_STRAY: Final = "_conduct_gateway_stray"  # set on the protocol when bytes arrived unasked
_WATCHED: Final = "_conduct_gateway_watched"

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


class OutOfStep(Exception):
    """The upstream's replies no longer match the commands sent: nothing read on this connection
    since the last proven reply can be trusted."""

    def __init__(self, phase: Phase, detail: str) -> None:
        super().__init__(detail)
        self.phase = phase
        self.detail = detail


def supported(client: aiosmtplib.SMTP) -> bool:
    """Whether aiosmtplib still has what strict reading needs (checked on a connected client)."""
    protocol = client.protocol
    return protocol is not None and all(hasattr(protocol, name) for name in _INTERNALS)


def watch(client: aiosmtplib.SMTP) -> None:
    """From now on, note bytes that arrive on ``client``'s connection when no reply is awaited."""
    protocol: Any = client.protocol
    if protocol is None or getattr(protocol, _WATCHED, False):
        return
    received = protocol.data_received

    def data_received(data: bytes) -> None:
        waiter = protocol._response_waiter
        if waiter is not None and (not protocol._response_pending or waiter.done()):
            setattr(protocol, _STRAY, True)  # aiosmtplib is about to drop these bytes
        received(data)

    protocol.data_received = data_received
    setattr(protocol, _WATCHED, True)


def ensure_in_step(client: aiosmtplib.SMTP, phase: Phase) -> None:
    """Raise OutOfStep if bytes arrived unasked or are still unread on ``client``'s connection."""
    protocol: Any = client.protocol
    if protocol is None:
        return  # closed: sending fails on its own, as SMTPServerDisconnected
    if getattr(protocol, _STRAY, False):
        raise OutOfStep(phase, "the upstream sent a reply when no command was waiting for one")
    if protocol._buffer:
        raise OutOfStep(phase, "the upstream sent more replies than commands")


def settled(client: aiosmtplib.SMTP, phase: Phase) -> None:
    """After the last reply expected for now: raise OutOfStep if anything more is there."""
    ensure_in_step(client, phase)


def expect(phase: Phase, response: SMTPResponse) -> SMTPResponse:
    """``response`` if it is a reply ``phase`` can get; OutOfStep otherwise."""
    allowed = _ALLOWED.get(phase)
    if allowed is not None and not allowed(response.code):
        raise OutOfStep(phase, f"the upstream answered {_NAMES.get(phase, phase)} with {response.code}")
    return response
