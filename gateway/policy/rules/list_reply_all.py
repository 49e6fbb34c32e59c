"""A reply-all to a mailing list that drops the committee from a case thread is held, never relayed.

The accident this catches: a committee member answers a thread that reached a public list (or a
list address was on the thread all along), presses "reply all", trims the conduct address or a
colleague, and sends committee business to everyone on the list. The gateway does not guess which
recipients the sender meant: it holds the message for a second member (``action: hold``), and the
notice to the sender says why. It never rewrites such a message into something to relay.

The rule fires when all of these hold:

- the message replies to a **committee thread** the ledger knows: a thread of a case, or one whose
  parent copied the conduct address;
- a committee address that was on the parent (the conduct address or a member's, other than the
  sender's own) is **not** among this message's recipients (To, Cc, Bcc or envelope);
- a recipient is a **mailing list**: an address in ``addresses``, an address at one of ``domains``
  (subdomains included), or an address the journal has seen a list distribute mail from (its
  ``List-Post``, or the To/Cc address its ``List-Id`` names).

``LIST_REPLY_DROPS_COMMITTEE``: the reply goes to a list and leaves out the committee. Use
``action: hold`` (the shipped policy) or ``reject``; a rewrite cannot fix it (the gateway never adds
the conduct address back and relays to a list), so ``rewrite`` refuses the message instead.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from gateway.policy.audiences import mailbox_key
from gateway.policy.mailing_lists import is_configured_list, recipients_of
from gateway.policy.model import Envelope, Finding, ParsedMessage, RuleContext
from gateway.policy.value_types import DomainName, EmailAddress

NAME = "list-reply-all"

CODES = {
    "LIST_REPLY_DROPS_COMMITTEE": (
        "A reply on a committee thread goes to a mailing list and no longer copies the conduct address "
        "or a committee member who was on the thread."
    ),
}


class Params(BaseModel):
    """Options of the list-reply-all rule: the mailing lists the gateway knows without the journal."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    addresses: tuple[EmailAddress, ...] = Field(
        (), description="Mailing list addresses, e.g. dev@lists.example.org (a sub-address counts too)."
    )
    domains: tuple[DomainName, ...] = Field(
        (), description="Domains of mailing lists only, e.g. lists.example.org (subdomains too)."
    )
    learnt: bool = Field(
        True,
        description="Also treat as lists the addresses the journal has seen lists distribute mail from.",
    )


def check(message: ParsedMessage, envelope: Envelope, context: RuleContext, params: Params) -> list[Finding]:
    """Report a reply to a list that leaves out a committee address the thread's parent had."""
    thread = context.thread
    if not thread.parent_known:
        return []
    parent = {mailbox_key(address.address) for address in thread.parent_participants}
    committee_before = {address for address in parent if context.is_committee(address)}
    if thread.case is None and context.conduct_address not in parent:
        return []
    recipients = recipients_of(message, envelope.rcpt_tos)
    # The sender is not on their own recipients list, and is not left out of anything.
    senders = {mailbox_key(a) for a in (envelope.mail_from, envelope.authenticated_as) if a}
    senders.update(mailbox_key(mailbox.address) for mailbox in message.from_)
    dropped = committee_before - recipients - senders
    if not dropped:
        return []
    lists = sorted(
        address
        for address in recipients
        if not context.is_committee(address)
        and (
            is_configured_list(address, params.addresses, params.domains)
            or (params.learnt and address in thread.list_recipients)
        )
    )
    if not lists:
        return []
    conduct_dropped = context.conduct_address in dropped
    members = len(dropped) - (1 if conduct_dropped else 0)
    left_out = ", ".join(
        part
        for part in (
            context.conduct_address if conduct_dropped else "",
            f"{members} committee member address(es)" if members else "",
        )
        if part
    )
    return [
        Finding(
            rule=NAME,
            code="LIST_REPLY_DROPS_COMMITTEE",
            where="recipients",
            kind="address",
            recipients=tuple(lists),
            case=thread.case,
            advice=(
                f"This reply on a committee thread goes to the mailing list {', '.join(lists)} and leaves "
                f"out {left_out}, who were on the thread: a reply-all to a list is held for a second "
                "member's review, never relayed as it is. If the list should not get it, cancel it and "
                "send it again to the committee only; to write to the list, start a new message."
            ),
        )
    ]
