"""One decision about one submission, as a value: what to answer, spool, confirm, record and undo.

The screener and the review desk turn each submission into a frozen ``Disposition``;
``gateway.decision.commit`` is the only code that applies one (holds, spool group commit, audit
flush, ledger), so what a decision does can be read, compared and tested without running it.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.mail.messages import Outgoing
from gateway.policy.model import Address, ParsedMessage
from gateway.replies import Reply
from gateway.state.audit import DecisionRecord


@dataclass(frozen=True)
class Relay:
    """The submission as it is spooled: possibly rewritten content, and its envelope recipients."""

    content: bytes
    rcpt_tos: tuple[str, ...]


@dataclass(frozen=True)
class ThreadStep:
    """A relayed message's place in its thread, as the ledger records it (metadata only)."""

    message_id: str | None
    in_reply_to: tuple[str, ...]
    references: tuple[str, ...]
    from_: tuple[Address, ...]
    to: tuple[Address, ...]
    cc: tuple[Address, ...]

    @classmethod
    def of(cls, message: ParsedMessage, added_cc: tuple[Address, ...] = ()) -> ThreadStep:
        present = {address.address.lower() for address in message.cc}
        cc = message.cc + tuple(a for a in added_cc if a.address.lower() not in present)
        return cls(message.message_id, message.in_reply_to, message.references, message.from_, message.to, cc)


@dataclass(frozen=True)
class LedgerStep:
    """A relayed message's place in its thread, for the thread ledger (metadata only)."""

    queue_id: str
    thread: ThreadStep
    case: str | None


@dataclass(frozen=True)
class Disposition:
    """What a decision does.

    ``reply`` is what the client hears once everything else is durable. ``relay`` (essential) and
    ``outgoing`` (the gateway's own messages: notices, review requests, a released held message;
    each says whether it is essential) are spooled in one group commit. ``hold`` is the transaction
    key of a hold or review decision the review desk has stored: confirmed once the messages are
    spooled, undone when an essential one could not be (the client then gets 451 instead). ``audit``
    records and ``ledger`` steps are written once the messages are spooled; a refusal's record was
    appended when it was decided (its reply depends on whether it could be), and is flushed
    before the reply like any other.
    """

    reply: Reply
    rcpt_tos: tuple[str, ...] = ()  # whom an accepted message goes to (a held one: once released)
    relay: Relay | None = None
    outgoing: tuple[Outgoing, ...] = ()
    hold: str | None = None
    audit: tuple[DecisionRecord, ...] = ()
    ledger: tuple[LedgerStep, ...] = ()

    @property
    def accepted(self) -> bool:
        return self.reply.is_success

    @property
    def essential_outgoing(self) -> bool:
        """Whether a generated message must be stored for the transaction to succeed."""
        return any(outgoing.essential for outgoing in self.outgoing)

    @property
    def undo(self) -> str | None:
        """The review desk's transaction key to roll back when an essential message was not stored."""
        return self.hold


def refused(reply: Reply) -> Disposition:
    """Answer with ``reply``; nothing is spooled."""
    return Disposition(reply)
