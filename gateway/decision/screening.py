"""The seam between SMTP intake and the policy: a submission goes in, accept or refuse comes out.

The SMTP layer knows nothing about rules; it hands every complete, well-formed submission to a
``Screener`` before answering DATA, and either spools what the screener accepted (possibly
rewritten content and recipients) or sends the screener's refusal to the client.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


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


@dataclass(frozen=True)
class Accept:
    """Spool and relay ``content`` to ``rcpt_tos``. ``changes`` says, in plain words, what changed.

    ``extra`` messages are spooled in the same transaction, before the 250. With
    ``spool_submission=False`` the submission itself is not spooled (a held message, or a review
    decision the gateway consumed); ``reply_lines``, when set, replace the "queued as" text of the 250.
    """

    content: bytes
    rcpt_tos: tuple[str, ...]
    changes: tuple[str, ...] = ()
    verdict: str = "deliver"
    findings: tuple[str, ...] = field(default=())
    extra: tuple[Outgoing, ...] = ()
    spool_submission: bool = True
    reply_lines: tuple[str, ...] = ()


@dataclass(frozen=True)
class Refuse:
    """Answer the client with this SMTP reply instead of accepting the message.

    ``lines`` are the reply's text lines (ASCII, each short enough for RFC 5321); the SMTP layer
    joins them into a multi-line reply with ``code`` and the enhanced ``status`` on every line.
    """

    code: int
    status: str
    lines: tuple[str, ...]


class Screener(Protocol):
    """Decides what happens to a submission. Must not block the event loop for long."""

    def screen(self, submission: Submission) -> Accept | Refuse:
        """Decide; record refusals (audit) before returning them."""
        ...

    def accepted(self, submission: Submission, accept: Accept) -> None:
        """Called once an accepted message is durably spooled: record it (thread ledger, audit)."""
        ...

    # Optional (looked up with getattr): ``not_stored(submission, accept)`` is called when an
    # acceptance could not be stored (the client gets 451), so the screener can undo what
    # ``screen`` prepared for it (a hold, a review decision). ``refused_at_intake(submission,
    # code, status, reason)`` records a refusal the SMTP layer made before screening (malformed,
    # too big, From not the member's); if it raises, the client gets 451 instead.
    # ``async screen_async(submission)``, when present, is awaited instead of ``screen`` (same
    # contract): a screener that evaluates in other processes lets the event loop serve meanwhile.
    # ``flush_decisions()`` (blocking) makes recorded decisions durable; the SMTP layer runs it off
    # the event loop before it answers. With it, ``can_record_off_loop(accept)`` returning True lets
    # the SMTP layer call ``accepted`` and ``flush_decisions`` on the spool's I/O thread, in the batch
    # that stores the message.


class PassThrough:
    """Accept everything unchanged (relay core without a policy, and the bare-relay benchmarks)."""

    def screen(self, submission: Submission) -> Accept | Refuse:
        return Accept(content=submission.content, rcpt_tos=submission.rcpt_tos)

    def accepted(self, submission: Submission, accept: Accept) -> None:
        return None
