"""Mail to the audiences the guidelines name goes out only after a second committee member's review.

The guidelines say: *when communicating with administrators, moderators, or the reported party,
carefully anonymize all identifying information about the reporter and witnesses [...] have a second
working group member review for potentially identifying information before sending.*

Every envelope recipient has a role (see the `audiences` section of the policy): `conduct`,
`committee`, `reporter`, `witness`, `reported`, `admin`, `moderator`, `organiser` or `other`. This
rule reports each recipient whose role is one of `roles` (by default a case's reported party,
administrators, moderators and event organisers); with `action: hold` the gateway keeps the message
until another committee member approves it. Bcc and envelope-only recipients count like visible ones.

- `NEEDS_SECOND_REVIEW`: the message goes to a recipient of a reviewed role. The finding names the
  recipients and the role (and the case, for a case's reported party, reporter or witness).

What the sender is told, e.g. *Mail to a moderator (mods@forum.example.net) is sent only after a
second committee member has reviewed it for anything that could identify a reporter or witness.*
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from gateway.policy.audiences import ROLE_NOUNS, Membership, Role
from gateway.policy.model import Envelope, Finding, ParsedMessage, RuleContext

NAME = "audience-review"

CODES = {
    "NEEDS_SECOND_REVIEW": (
        "A recipient is of a role whose mail a second committee member must review (by default a case's "
        "reported party, an administrator, a moderator or an event organiser)."
    ),
}


class Params(BaseModel):
    """Options of the audience-review rule."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    roles: tuple[Role, ...] = Field(
        (Role.REPORTED, Role.ADMIN, Role.MODERATOR, Role.ORGANISER),
        min_length=1,
        description="Recipient roles whose mail needs a second member's review.",
    )


def check(message: ParsedMessage, envelope: Envelope, context: RuleContext, params: Params) -> list[Finding]:
    """One finding per reviewed role (and case) among the envelope recipients."""
    wanted = frozenset(params.roles)
    groups: dict[Membership, dict[str, str]] = {}
    for recipient in envelope.rcpt_tos:
        for membership in context.memberships_of(recipient):
            if membership.role in wanted:
                groups.setdefault(membership, {}).setdefault(recipient.lower(), recipient)
    return [
        _finding(membership, tuple(recipients.values())) for membership, recipients in sorted(groups.items())
    ]


def _finding(membership: Membership, recipients: tuple[str, ...]) -> Finding:
    return Finding(
        rule=NAME,
        code="NEEDS_SECOND_REVIEW",
        where="envelope",
        kind=membership.role.value,
        advice=(
            f"Mail to {ROLE_NOUNS[membership.role]} ({', '.join(recipients)}) is sent only after a second "
            "committee member has reviewed it for anything that could identify a reporter or witness."
        ),
        recipients=recipients,
        case=membership.case,
    )
