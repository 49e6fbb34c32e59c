"""The policy file's pydantic models: frozen, ``extra="forbid"``, rule entries as a discriminated union."""

from __future__ import annotations

import datetime
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union, cast

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    create_model,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from gateway.policy.audiences import Role
from gateway.policy.model import IdentityKind
from gateway.policy.registry import RULES, RuleModule, documentation, finding_codes
from gateway.policy.value_types import DomainName, EmailAddress, Shown
from gateway.policy.variants import DEFAULT_TITLES

CodeName = Annotated[
    str,
    StringConstraints(strip_whitespace=True, pattern=r"^[a-z0-9]+(?:[ -][a-z0-9]+)*$", max_length=60),
    Shown("code name (lower-case words)"),
]
Identifier = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=2, max_length=200),
    Shown("text (2+ characters)"),
]
Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500), Shown("text")]
RuleAction = Literal["reject", "rewrite", "hold", "warn", "audit"]
FindingCode = Annotated[str, StringConstraints(pattern=r"^[A-Z][A-Z0-9_]*$"), Shown("finding code")]
RoleName = Role  # shown in the reference as its values (see gateway.policy.reference)


class PolicyModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Member(PolicyModel):
    """A committee member: their name, the name banners use, and every address they send or receive mail with.

    Once the users file exists, a member counts as inside the committee only while one of their
    addresses holds an account (or with `receive_only`): `conduct-gateway user remove` makes them an
    outsider at once, with every address listed here.
    """

    name: Identifier = Field(description='The member\'s display name, e.g. "Ada Quill".')
    addresses: tuple[EmailAddress, ...] = Field(
        min_length=1,
        description="Every address of this member; all count as inside the committee while they do.",
    )
    banner_name: Identifier | None = Field(
        None,
        description=(
            'The name `[+ Name]` / `[- Name]` banners use for this member, e.g. "Ada (committee)" '
            "(omitted: `name`). A banner naming them by `name` or address is accepted too."
        ),
    )
    receive_only: bool = Field(
        False,
        description=(
            "A member without an account who never sends through the gateway: inside the committee "
            "without one. Otherwise a member without an account counts as outside once the users file exists."
        ),
    )


class Organisation(PolicyModel):
    """Who the committee is."""

    conduct_address: EmailAddress = Field(
        description="The committee's shared address, e.g. conduct@example.org; always copied on mail."
    )
    members: tuple[Member, ...] = Field(min_length=1, description="The committee members.")
    internal_domains: tuple[DomainName, ...] = Field(
        (), description="Domains of the organisation itself (informational; later used for audiences)."
    )


class AudienceGroup(PolicyModel):
    """Who belongs to one audience: addresses, and whole domains (a domain covers its subdomains)."""

    addresses: tuple[EmailAddress, ...] = Field(
        (), description="Addresses of this audience (a sub-address such as name+tag@ counts too)."
    )
    domains: tuple[DomainName, ...] = Field(
        (), description="Domains whose every address belongs to this audience, subdomains included."
    )


class AudienceLists(PolicyModel):
    """The community's administrators, moderators and event organisers, who get anonymised mail only.

    Case reporters, witnesses and reported parties are recognised from the cases' addresses; the
    committee from the members' addresses. Everyone else is `other`.
    """

    admins: AudienceGroup = Field(
        default_factory=AudienceGroup,
        description="Administrators of the community's platforms (role `admin`).",
    )
    moderators: AudienceGroup = Field(
        default_factory=AudienceGroup, description="Moderators of forums, chats, lists (role `moderator`)."
    )
    organisers: AudienceGroup = Field(
        default_factory=AudienceGroup, description="Organisers of events and meet-ups (role `organiser`)."
    )


AUDIENCE_ROLES = (("admins", Role.ADMIN), ("moderators", Role.MODERATOR), ("organisers", Role.ORGANISER))


class Person(PolicyModel):
    """Someone involved in a case, with every way they can be recognised in a message."""

    id: CodeName = Field(
        description="A code name for the person within the case (never their real name), e.g. quiet-heron."
    )
    names: tuple[Identifier, ...] = Field((), description="Full names, including former names.")
    aliases: tuple[Identifier, ...] = Field((), description="Nicknames, short names, other spellings.")
    addresses: tuple[EmailAddress, ...] = Field((), description="Email addresses.")
    usernames: tuple[Identifier, ...] = Field(
        (), description="Usernames or handles on the community's platforms (forum, chat, code hosting)."
    )
    weak_forms: bool = Field(
        True,
        description=(
            "Also look for this person's given name or surname on its own (a weak form, held for "
            "review); false when their name parts are everyday words. Strong forms are always looked for."
        ),
    )
    everyday_words: tuple[Identifier, ...] = Field(
        (),
        description=(
            'Parts of this person\'s names that are everyday words or very common names (e.g. "Robin", '
            '"Sam"): not looked for on their own; the rest of the name still is.'
        ),
    )

    @model_validator(mode="after")
    def _recognisable(self) -> Person:
        if not (self.names or self.aliases or self.addresses or self.usernames):
            raise ValueError("give at least one of names, aliases, addresses or usernames")
        return self


class ConsentRecord(PolicyModel):
    """Written permission from a reporter or witness to be named to one recipient."""

    person: CodeName = Field(description="The id of a reporter or witness of this case.")
    recipient: EmailAddress = Field(description="The one address that may receive their identity.")
    reference: Text = Field(
        description='Where the written permission is kept, e.g. "mail of 2024-03-02 in the case folder".'
    )
    date: datetime.date = Field(description="When the permission was given (YYYY-MM-DD).")
    expires: datetime.date | None = Field(
        None,
        description="From this date (YYYY-MM-DD) the consent no longer lifts anything (omitted: no expiry).",
    )
    withdrawn: datetime.date | None = Field(
        None,
        description=(
            "When the person withdrew it (YYYY-MM-DD; `case consent --withdraw`): a withdrawn consent "
            "lifts nothing from the next message on."
        ),
    )

    @model_validator(mode="after")
    def _dates_in_order(self) -> ConsentRecord:
        if self.expires is not None and self.expires <= self.date:
            raise ValueError("expires must be later than date")
        if self.withdrawn is not None and self.withdrawn < self.date:
            raise ValueError("withdrawn cannot be earlier than date")
        return self


class Case(PolicyModel):
    """A case: the people whose identities the gateway protects, and the consent they gave."""

    code: CodeName = Field(description='The case\'s code name, e.g. "home shelf"; used in logs and audit.')
    reporters: tuple[Person, ...] = Field(
        (), description="People who reported; their identities are protected."
    )
    witnesses: tuple[Person, ...] = Field((), description="Witnesses; their identities are protected.")
    reported: tuple[Person, ...] = Field(
        (), description="Reported parties (not protected; mail to their addresses has the role `reported`)."
    )
    consents: tuple[ConsentRecord, ...] = Field(
        (),
        description="Recorded written permissions; each lifts protection for one person and one recipient.",
    )
    severity: Literal["normal", "severe"] = Field(
        "normal",
        description=(
            "How grave the case is; sets how many committee members must approve its held mail "
            "(see `review.approvals`)."
        ),
    )
    conflicts: tuple[EmailAddress, ...] = Field(
        (),
        description=(
            "Addresses of committee members with a conflict of interest on this case: for this case "
            "they count as outside the committee, are not asked to review its mail and cannot approve it."
        ),
    )
    expunge_on: datetime.date | None = Field(
        None,
        description=(
            "From this date (YYYY-MM-DD) the case's identifying information is expunged from every "
            "store the gateway keeps (omitted: kept until `case expunge`)."
        ),
    )
    status: Literal["open", "closed"] = Field(
        "open",
        description="open, or closed once the committee has finished with it (protection stays in force).",
    )

    def protected(self) -> Iterator[Person]:
        """Reporters and witnesses."""
        yield from self.reporters
        yield from self.witnesses


class NameForms(PolicyModel):
    """How the gateway derives the forms people write a protected name in (see "Name forms")."""

    titles: tuple[Identifier, ...] = Field(
        DEFAULT_TITLES,
        description=(
            "Titles that, before a surname, make it a strong form (`Mx Haddad`); matched with or "
            "without a dot. Replaces the built-in list."
        ),
    )
    extra_titles: tuple[Identifier, ...] = Field(
        (), description="Titles added to `titles` (to keep the built-in list and add your own)."
    )

    def all_titles(self) -> tuple[str, ...]:
        """Every title in force."""
        return (*self.titles, *self.extra_titles)


class _Defaults(PolicyModel):
    """Stands for "the rule's default options" on the generic rule entry (each rule narrows it)."""


class When(PolicyModel):
    """When a rule applies: only to messages with at least one envelope recipient of these roles."""

    recipient_roles: tuple[RoleName, ...] = Field(
        description=(
            "The rule runs only when an envelope recipient has one of these roles; its findings then "
            "name those recipients, e.g. `[reported, admin, moderator, organiser]`."
        ),
    )

    # Not min_length: pydantic would then also call a list with one misspelt role "too short".
    @field_validator("recipient_roles")
    @classmethod
    def _some_role(cls, roles: tuple[Role, ...]) -> tuple[Role, ...]:
        if not roles:
            raise ValueError("list at least one role")
        return roles


# Rules that protect identities or protected content: no sender may override their findings, so the
# schema refuses ``overridable`` on them (a justification never outweighs a reporter's safety).
NEVER_OVERRIDABLE = frozenset({"reporter-protection", "protected-content", "code-names", "anonymisation"})


class OverrideQuota(PolicyModel):
    """How many overrides of one rule one sender may make in a period."""

    count: Annotated[int, Field(ge=1, le=1000)] = Field(3, description="Overrides allowed per period.")
    days: Annotated[int, Field(ge=1, le=366)] = Field(
        7, description="The period, in days (a sliding window)."
    )


class RuleEntryBase(PolicyModel):
    """One rule in force: its name, what its findings lead to, and its options."""

    rule: Annotated[str, Shown("rule name")] = Field(
        description="The rule's name: " + ", ".join(f"`{module.NAME}`" for module in RULES) + "."
    )
    enabled: bool = Field(True, description="false switches the rule off without deleting the entry.")
    action: RuleAction = Field(
        description=(
            "What a finding leads to: reject (refuse now), rewrite (deliver a corrected message), "
            "hold (keep for a second member's review), warn (deliver, tell the sender), audit (record only)."
        )
    )
    actions: dict[FindingCode, RuleAction] = Field(
        default_factory=dict,
        description="Per finding code actions overriding `action`, e.g. `UNINSPECTABLE_CONTENT: hold`.",
    )
    params: BaseModel = Field(
        default_factory=_Defaults,
        description="The rule's options; see the rule reference (omitted: defaults).",
    )
    when: When | None = Field(
        None,
        description="Limit the rule to messages with recipients of some roles (omitted: every message).",
    )
    overridable: bool = Field(
        False,
        description=(
            "true lets a committee member send a message this rule refused anyway, with a written "
            "justification and a one-time token from the refusal (audited, counted, limited by "
            "`override_quota`). Refused on " + ", ".join(f"`{n}`" for n in sorted(NEVER_OVERRIDABLE)) + "."
        ),
    )
    override_quota: OverrideQuota = Field(
        default_factory=OverrideQuota,
        description="Overrides of this rule allowed per sender and period (`count: 3, days: 7` unless set).",
    )

    @field_validator("overridable", mode="before")
    @classmethod
    def _never_for_identities(cls, overridable: object, info: ValidationInfo) -> object:
        rule = info.data.get("rule")
        if overridable is not False and rule in NEVER_OVERRIDABLE:
            raise PydanticCustomError(
                "never_overridable",
                f"{rule} protects identities or protected content and can never be overridden by a sender; "
                "remove `overridable` (a message it refuses must be changed, or go through review)",
            )
        return overridable

    def action_for(self, code: str) -> RuleAction:
        """The action configured for a finding code."""
        return self.actions.get(code, self.action)


def _class_name(rule_name: str) -> str:
    return "".join(part.capitalize() for part in re.split(r"[-_]", rule_name)) + "Rule"


def _has_defaults(model: type[BaseModel]) -> bool:
    return all(not info.is_required() for info in model.model_fields.values())


def _entry_model(module: RuleModule) -> type[RuleEntryBase]:
    codes = tuple(finding_codes(module))
    code_type: Any = Literal[codes] if codes else FindingCode
    params_field: Any = (
        Field(default_factory=module.Params, description="The rule's options; see the rule reference.")
        if _has_defaults(module.Params)
        else Field(description="The rule's options; see the rule reference.")
    )
    model: type[RuleEntryBase] = create_model(
        _class_name(module.NAME),
        __base__=RuleEntryBase,
        __doc__=documentation(module).split("\n", 1)[0],
        rule=(cast(Any, Literal[module.NAME]), Field(description="The rule's name.")),
        actions=(
            dict[code_type, RuleAction],
            Field(
                default_factory=dict,
                description="Actions for particular finding codes, overriding action.",
            ),
        ),
        params=(module.Params, params_field),
        **_never_overridable(module.NAME),
    )
    return model


def _never_overridable(rule_name: str) -> dict[str, Any]:
    """For a rule protecting identities: ``overridable`` can only be false (editors see it too)."""
    if rule_name not in NEVER_OVERRIDABLE:
        return {}
    description = (
        "Always false: this rule protects identities or protected content; no sender can override it."
    )
    return {"overridable": (Literal[False], Field(False, description=description))}


ENTRY_MODELS: tuple[type[RuleEntryBase], ...] = tuple(_entry_model(module) for module in RULES)
RULE_NAMES: tuple[str, ...] = tuple(module.NAME for module in RULES)

if TYPE_CHECKING:
    RuleEntry = RuleEntryBase
elif len(ENTRY_MODELS) == 1:
    RuleEntry = ENTRY_MODELS[0]
else:
    RuleEntry = Annotated[Union[ENTRY_MODELS], Field(discriminator="rule")]  # noqa: UP007


ApprovalCount = Annotated[
    Union[Annotated[int, Field(ge=1, le=50)], Literal["majority"]],  # noqa: UP007
    Shown("number (1+) or `majority`"),
]


class ApprovalCounts(PolicyModel):
    """How many distinct committee members must approve a held message, by its case's severity.

    A number, or `majority`: more than half of the members eligible to review that message (every
    member but the sender and those with a conflict of interest on its case). A message that concerns
    no case counts as normal; one that concerns several cases needs the most any of them asks for.
    """

    normal: ApprovalCount = Field(1, description="Approvals for a message whose cases are all normal.")
    severe: ApprovalCount = Field(2, description="Approvals for a message concerning a severe case.")


class ReviewPolicy(PolicyModel):
    """Second-member review of held messages: how many approvals release one."""

    approvals: ApprovalCounts = Field(
        default_factory=ApprovalCounts,
        description="Approvals needed, by case severity (`normal: 1, severe: 2` unless set).",
    )


class PolicyDocument(PolicyModel):
    """A policy file: the organisation, the rules in force and the cases."""

    organisation: Organisation = Field(description="The committee: conduct address and members.")
    audiences: AudienceLists = Field(
        default_factory=AudienceLists,
        description="Administrators, moderators and event organisers, by address or domain.",
    )
    on_error: Literal["tempfail", "reject", "hold"] = Field(
        "tempfail",
        description=(
            "What happens when a rule cannot check a message (an internal error): tempfail (451, the "
            "sender's server retries later), reject, or hold. A message is never passed unchecked."
        ),
    )
    rules: tuple[RuleEntry, ...] = Field(min_length=1, description="The rules in force, each at most once.")
    review: ReviewPolicy = Field(
        default_factory=ReviewPolicy,
        description="How many committee members must approve a held message (by case severity).",
    )
    name_forms: NameForms = Field(
        default_factory=NameForms,
        description="Titles used to recognise protected names (`Mx Haddad`); the built-in list unless set.",
    )
    cases: tuple[Case, ...] = Field(
        (),
        description=(
            "Cases written in the policy file (examples, small set-ups). Real cases belong in the "
            "encrypted case registry (`conduct-gateway case new`); the gateway merges both."
        ),
    )


IDENTITY_FIELDS = (
    ("names", IdentityKind.NAME),
    ("aliases", IdentityKind.ALIAS),
    ("addresses", IdentityKind.ADDRESS),
    ("usernames", IdentityKind.USERNAME),
)
