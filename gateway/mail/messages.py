"""A message as the gateway received it, and a message the gateway sends itself: plain values."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Submission:
    """One message as received: envelope, the exact bytes (CRLF line endings), who sent it."""

    queue_id: str
    mail_from: str
    rcpt_tos: tuple[str, ...]
    authenticated_as: str
    content: bytes
    client_address: str = ""


@dataclass(frozen=True)
class Outgoing:
    """A message the gateway itself sends (a notice, a review request, a released held message).

    ``mail_from`` "" is the null sender (like a DSN: nothing bounces back to it). ``essential``
    messages must be stored for the transaction to succeed; the others (notices) are best effort.
    """

    queue_id: str
    mail_from: str
    rcpt_tos: tuple[str, ...]
    content: bytes
    essential: bool = False
    authenticated_as: str = ""
