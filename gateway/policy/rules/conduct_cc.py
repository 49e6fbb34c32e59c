"""The conduct address must be a visible recipient (To or Cc) of every outgoing message.

The guidelines say: *always cc the conduct address on communication*. This rule checks the
message's ``To`` and ``Cc`` headers and its envelope (the recipients the mail is actually sent to):

- The conduct address counts only as a real mailbox in ``To`` or ``Cc``. An address that is only in
  ``Bcc``, only in the envelope, or only inside a display name (``"conduct@example.org" <x@example.net>``)
  does not count: the other recipients would not see that the committee is copied.
- ``CONDUCT_ADDRESS_MISSING``: the address is not in ``To``/``Cc``. With ``action: rewrite`` the gateway
  adds it to ``Cc`` (and to the envelope if needed); with ``reject`` the sender is asked to add it.
- ``CONDUCT_ADDRESS_NOT_RECIPIENT``: the address is in ``To``/``Cc`` but the message is not actually being
  sent to it (a client that drops a recipient, or a hand-made envelope). With ``action: rewrite`` the
  gateway adds it to the envelope; nothing in the message changes.

``scope: all`` (the default) checks every message; ``scope: outside`` only messages with at least one
envelope recipient outside the committee (not a member address and not the conduct address).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from gateway.policy.model import Address, Envelope, Finding, ParsedMessage, Rewrite, RuleContext

NAME = "conduct-cc"

CODES = {
    "CONDUCT_ADDRESS_MISSING": "The conduct address is not in To or Cc (rewrite: added to Cc and envelope).",
    "CONDUCT_ADDRESS_NOT_RECIPIENT": (
        "The conduct address is in To or Cc but not an envelope recipient (rewrite: added to the envelope)."
    ),
}


class Params(BaseModel):
    """Options of the conduct-cc rule."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    scope: Literal["all", "outside"] = Field(
        "all",
        description=(
            "`all`: every message must copy the conduct address; `outside`: only messages with an "
            "envelope recipient outside the committee."
        ),
    )
    display_name: str = Field(
        "",
        max_length=100,
        description='Display name used when the gateway adds the conduct address, e.g. "Conduct Committee".',
    )


def check(message: ParsedMessage, envelope: Envelope, context: RuleContext, params: Params) -> list[Finding]:
    """Report a conduct address missing from To/Cc, or present there but missing from the envelope."""
    conduct = context.conduct_address
    envelope_recipients = {recipient.lower() for recipient in envelope.rcpt_tos}
    if params.scope == "outside" and all(context.is_committee(r) for r in envelope_recipients):
        return []
    visible = {mailbox.address.lower() for mailbox in (*message.to, *message.cc)}
    in_envelope = conduct in envelope_recipients
    if conduct not in visible:
        where_instead = _where_instead(message, conduct, in_envelope)
        return [
            Finding(
                rule=NAME,
                code="CONDUCT_ADDRESS_MISSING",
                where="header Cc",
                kind="address",
                advice=(
                    f"Put {conduct} in Cc (or To) so every recipient sees that the committee is "
                    f"copied{where_instead}."
                ),
                rewrite=Rewrite(
                    add_cc=(Address(name=params.display_name, address=conduct),),
                    add_envelope_recipients=() if in_envelope else (conduct,),
                ),
            )
        ]
    if not in_envelope:
        return [
            Finding(
                rule=NAME,
                code="CONDUCT_ADDRESS_NOT_RECIPIENT",
                where="envelope",
                kind="address",
                advice=(
                    f"{conduct} is in the message's To or Cc but the message was not sent to it; "
                    "send it to every address in To and Cc."
                ),
                rewrite=Rewrite(add_envelope_recipients=(conduct,)),
            )
        ]
    return []


def _where_instead(message: ParsedMessage, conduct: str, in_envelope: bool) -> str:
    # Say why an address the sender believes they added does not count.
    if any(mailbox.address.lower() == conduct for mailbox in message.bcc) or in_envelope:
        return "; Bcc does not count because the other recipients cannot see it"
    if any(conduct in mailbox.name.lower() for mailbox in (*message.to, *message.cc)):
        return "; the address only appears in a display name, not as a recipient"
    return ""
