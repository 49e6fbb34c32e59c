"""Which recorded consents a message relies on (or would, had they not lapsed): audit-only decisions.

A consent is *relied on* when the message names its person (any of their identities, anywhere the
matcher looks) and goes to its recipient, who is outside the committee for that case: exactly when
the consent keeps the person's identity from being a finding. Each one becomes a ``CONSENT_RELIED_ON``
decision with the action ``audit``, so the audit entry of the message names the consent (its key and
date, never its reference, which admins write and which often names the person). A consent that would
apply but was withdrawn or has expired becomes ``CONSENT_WITHDRAWN`` or ``CONSENT_EXPIRED`` (audit
only too: the identity itself is a finding of reporter-protection, since the rules never see a lapsed
consent).
"""

from __future__ import annotations

from collections.abc import Iterable

from gateway.policy.model import Action, Consent, Decision, Envelope, Finding, ParsedMessage, RuleContext

RULE = "consent"  # the rule name of these decisions in audit entries

_CODES = {
    "in-force": "CONSENT_RELIED_ON",
    "withdrawn": "CONSENT_WITHDRAWN",
    "expired": "CONSENT_EXPIRED",
}
_ADVICE = {
    "in-force": "A recorded consent allowed this person to be named to this recipient.",
    "withdrawn": "The consent to name this person to this recipient was withdrawn; it no longer applies.",
    "expired": "The consent to name this person to this recipient has expired; it no longer applies.",
}


def consent_decisions(
    message: ParsedMessage, envelope: Envelope, consents: Iterable[Consent], context: RuleContext
) -> list[Decision]:
    """One audit decision per consent (in force or lapsed) that this message would rely on.

    ``consents`` are all the policy's consents, lapsed ones included; ``context.today`` judges them.
    """
    recipients = {recipient.lower() for recipient in envelope.rcpt_tos}
    candidates = [
        consent
        for consent in consents
        if consent.recipient in recipients and not context.is_inside(consent.recipient, consent.case)
    ]
    if not candidates:
        return []  # the usual case: nothing to look for, no second pass over the message
    named = {
        (identity.case, identity.person)
        for segment in message.segments
        for identity in context.finder.find(segment.text)
    }
    decisions = []
    for consent in sorted(candidates, key=lambda c: (c.case, c.person, c.recipient, c.key)):
        if (consent.case, consent.person) not in named:
            continue
        status = consent.status(context.today)
        finding = Finding(
            rule=RULE,
            code=_CODES[status],
            where="message",
            kind="consent",
            advice=_ADVICE[status],
            recipients=(consent.recipient,),
            case=consent.case,
            consent=consent,
        )
        decisions.append(Decision(finding, Action.AUDIT))
    return decisions
