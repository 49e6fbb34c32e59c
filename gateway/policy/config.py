"""The policy file admins edit: pydantic models, loading with file/line/key errors, schema and reference."""

from __future__ import annotations

import datetime
import json
import re
import types
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union, cast, get_args, get_origin

from email_validator import EmailNotValidError, validate_email
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticUndefined

from gateway.errors import ConfigError
from gateway.policy.audiences import Role
from gateway.policy.matcher import patterns_for
from gateway.policy.model import IdentityKind, ProtectedIdentity
from gateway.policy.registry import RULES, RuleModule, documentation, finding_codes
from gateway.policy.variants import DEFAULT_TITLES
from gateway.yamlsource import LoadedYaml, format_loc, parse_yaml_text

Loc = tuple[str | int, ...]


@dataclass(frozen=True)
class _Shown:
    """How the policy reference names a constrained type (e.g. "email address")."""

    text: str


def _valid_address(value: str) -> str:
    value = value.strip()
    try:
        # Reserved test domains (*.test) are allowed: examples and test policies use them.
        validate_email(value, check_deliverability=False, test_environment=True)
    except EmailNotValidError as exc:
        raise ValueError(f"not a valid email address: {exc}") from None
    return value


def _valid_domain(value: str) -> str:
    value = value.strip().lower().rstrip(".")
    try:
        validate_email(f"postmaster@{value}", check_deliverability=False, test_environment=True)
    except EmailNotValidError as exc:
        raise ValueError(f"not a valid domain name: {exc}") from None
    return value


EmailAddress = Annotated[str, AfterValidator(_valid_address), _Shown("email address")]
DomainName = Annotated[str, AfterValidator(_valid_domain), _Shown("domain name")]
CodeName = Annotated[
    str,
    StringConstraints(strip_whitespace=True, pattern=r"^[a-z0-9]+(?:[ -][a-z0-9]+)*$", max_length=60),
    _Shown("code name (lower-case words)"),
]
Identifier = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=2, max_length=200),
    _Shown("text (2+ characters)"),
]
Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500), _Shown("text")]
RuleAction = Literal["reject", "rewrite", "hold", "warn", "audit"]
FindingCode = Annotated[str, StringConstraints(pattern=r"^[A-Z][A-Z0-9_]*$"), _Shown("finding code")]
RoleName = Role  # shown in the reference as its values (see _type_text)


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


class RuleEntryBase(PolicyModel):
    """One rule in force: its name, what its findings lead to, and its options."""

    rule: Annotated[str, _Shown("rule name")] = Field(
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
    )
    return model


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
    _Shown("number (1+) or `majority`"),
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


# --- loading -----------------------------------------------------------------------------------


def load_policy(path: Path) -> PolicyDocument:
    """Read and validate a policy file; any problem is a ConfigError naming file, line and key."""
    return read_policy(path)[0]


def read_policy(path: Path) -> tuple[PolicyDocument, bytes]:
    """Read a policy file once: the validated document and the exact bytes (for ``compile_policy``)."""
    try:
        source = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        text = source.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    return parse_policy_text(text, path), source


def parse_policy_text(text: str, path: Path) -> PolicyDocument:
    """Validate policy YAML text; ``path`` is only used in error messages."""
    loaded = parse_yaml_text(text, path)
    data = loaded.data if loaded.data is not None else {}
    try:
        document = PolicyDocument.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, loaded)) from None
    problems = list(_semantic_problems(document))
    if problems:
        raise ConfigError(
            "\n".join(f"{loaded.where(loc)}, key {format_loc(loc)}: {msg}" for loc, msg in problems)
        )
    return document


def _describe(exc: ValidationError, loaded: LoadedYaml) -> str:
    problems = []
    for error in exc.errors(include_url=False, include_input=False):
        loc = _user_loc(error["loc"])
        message = error["msg"]
        context = error.get("ctx") or {}
        if error["type"] == "extra_forbidden":
            message = "unknown key (check the spelling; see the policy reference)"
        elif error["type"] == "union_tag_invalid":
            message = f"unknown rule {context.get('tag')!r}; the rules are: {', '.join(RULE_NAMES)}"
        elif error["type"] == "too_short" and context.get("min_length") == 1:
            message = "must list at least one entry"
        elif error["type"] == "union_tag_not_found":
            message = f"missing key 'rule' (one of: {', '.join(RULE_NAMES)})"
        problems.append(f"{loaded.where(loc)}, key {format_loc(loc)}: {message}")
    return "\n".join(problems)


def _user_loc(loc: Sequence[str | int]) -> Loc:
    """The location the user wrote: without pydantic's union tags and dict-key markers."""
    parts: list[str | int] = []
    for index, part in enumerate(loc):
        if isinstance(part, str) and (part.startswith("function-") or "[" in part):
            continue
        if index == 2 and loc[0] == "rules" and part in RULE_NAMES:
            continue
        parts.append(part)
    return tuple(parts)


def _semantic_problems(document: PolicyDocument) -> Iterator[tuple[Loc, str]]:
    """Problems a schema cannot see: duplicates, dangling references."""
    organisation = document.organisation
    conduct = organisation.conduct_address.lower()
    seen_addresses: dict[str, str] = {}
    seen_names: set[str] = set()
    for m_index, member in enumerate(organisation.members):
        if member.name.casefold() in seen_names:
            yield ("organisation", "members", m_index, "name"), f"two members are named {member.name!r}"
        seen_names.add(member.name.casefold())
        for a_index, address in enumerate(member.addresses):
            loc: Loc = ("organisation", "members", m_index, "addresses", a_index)
            lowered = address.lower()
            if lowered == conduct:
                yield loc, "this is the conduct address; list only members' own addresses"
            elif lowered in seen_addresses:
                yield loc, f"{address} is already listed for {seen_addresses[lowered]}"
            seen_addresses.setdefault(lowered, member.name)

    for key, _role in AUDIENCE_ROLES:
        group: AudienceGroup = getattr(document.audiences, key)
        for a_index, address in enumerate(group.addresses):
            lowered = address.lower()
            if lowered == conduct or lowered in seen_addresses:
                yield (
                    ("audiences", key, "addresses", a_index),
                    f"{address} is inside the committee; list only addresses outside it",
                )

    seen_rules: set[str] = set()
    for r_index, entry in enumerate(document.rules):
        if entry.rule in seen_rules:
            yield ("rules", r_index, "rule"), f"rule {entry.rule!r} is listed twice; keep one entry"
        seen_rules.add(entry.rule)

    seen_codes: set[str] = set()
    for c_index, case in enumerate(document.cases):
        if case.code in seen_codes:
            yield ("cases", c_index, "code"), f"two cases have the code name {case.code!r}"
        seen_codes.add(case.code)
        yield from _case_problems(c_index, case)
        for k_index, address in enumerate(case.conflicts):
            if address.lower() not in seen_addresses:
                # A misspelt conflict would silently let the member see the case: refuse it.
                yield (
                    ("cases", c_index, "conflicts", k_index),
                    f"{address} is not an address of a committee member (organisation.members)",
                )


IDENTITY_FIELDS = (
    ("names", IdentityKind.NAME),
    ("aliases", IdentityKind.ALIAS),
    ("addresses", IdentityKind.ADDRESS),
    ("usernames", IdentityKind.USERNAME),
)


def _case_problems(c_index: int, case: Case) -> Iterator[tuple[Loc, str]]:
    ids: set[str] = set()
    for group in ("reporters", "witnesses", "reported"):
        people: tuple[Person, ...] = getattr(case, group)
        for p_index, person in enumerate(people):
            if person.id in ids:
                yield ("cases", c_index, group, p_index, "id"), f"id {person.id!r} is used twice in this case"
            ids.add(person.id)
    for group in ("reporters", "witnesses"):
        for p_index, person in enumerate(getattr(case, group)):
            for key, kind in IDENTITY_FIELDS:
                for v_index, value in enumerate(getattr(person, key)):
                    identity = ProtectedIdentity(case=case.code, person=person.id, kind=kind, value=value)
                    if not patterns_for(identity):
                        yield (
                            ("cases", c_index, group, p_index, key, v_index),
                            "too short to recognise once normalised; give a longer form",
                        )
    protected = {person.id for person in case.protected()}
    reported = {person.id for person in case.reported}
    for k_index, consent in enumerate(case.consents):
        loc: Loc = ("cases", c_index, "consents", k_index, "person")
        if consent.person in reported:
            yield (
                loc,
                f"{consent.person!r} is a reported party; consent is recorded for reporters and witnesses",
            )
        elif consent.person not in protected:
            yield loc, f"no reporter or witness with id {consent.person!r} in case {case.code!r}"


# --- cases kept outside the policy file (the case registry) ---------------------------------------


@dataclass(frozen=True)
class RegistryCases:
    """Cases read from the case registry, to be merged into a policy document by ``merge_cases``.

    ``digest`` identifies the registry's version (it goes into the policy version); ``origin`` names
    the registry in error messages.
    """

    cases: tuple[Case, ...]
    digest: str
    origin: str = "case registry"


def merge_cases(document: PolicyDocument, registry: RegistryCases) -> PolicyDocument:
    """The policy with the registry's cases added, checked like the policy's own cases.

    A case listed in both with identical content counts once (so the policy's cases can be copied
    into the registry before they are removed from the policy); different content under one code
    name is an error. Error messages name case code names and keys, never identities.
    """
    in_policy = {case.code: case for case in document.cases}
    added: list[Case] = []
    for case in registry.cases:
        if case.code not in in_policy:
            added.append(case)
        elif in_policy[case.code] != case:
            raise ConfigError(
                f"{registry.origin}: case {case.code!r} is also in the policy file, with different "
                "content; keep it in one place (`conduct-gateway case import-policy "
                "--remove-from-policy` moves the policy's cases into the registry)"
            )
    if not added:
        return document
    merged = document.model_copy(update={"cases": document.cases + tuple(added)})
    first = len(document.cases)
    problems = [
        (loc, message)
        for loc, message in _semantic_problems(merged)
        if len(loc) > 1 and loc[0] == "cases" and isinstance(loc[1], int) and loc[1] >= first
    ]
    if problems:
        raise ConfigError(
            "\n".join(
                f"{registry.origin}, case {merged.cases[int(loc[1])].code!r}, "
                f"key {format_loc(loc[2:])}: {message}"
                for loc, message in problems
            )
        )
    return merged


# --- schema and reference ----------------------------------------------------------------------


def policy_json_schema() -> dict[str, Any]:
    """JSON Schema of the policy file, for editors (policies/schema.json)."""
    schema = PolicyDocument.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "conduct-gateway policy"
    return schema


def policy_json_schema_text() -> str:
    """The schema as written to policies/schema.json (stable key order, trailing newline)."""
    return json.dumps(policy_json_schema(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


_SECTIONS: tuple[tuple[str, type[BaseModel]], ...] = (
    ("Top level", PolicyDocument),
    ("organisation", Organisation),
    ("organisation.members[]", Member),
    ("audiences", AudienceLists),
    ("audiences.admins / moderators / organisers", AudienceGroup),
    ("rules[]", RuleEntryBase),
    ("rules[].when", When),
    ("review", ReviewPolicy),
    ("review.approvals", ApprovalCounts),
    ("name_forms", NameForms),
    ("cases[]", Case),
    ("person", Person),
    ("cases[].consents[]", ConsentRecord),
)


def policy_reference_markdown() -> str:
    """The policy file reference and the rule reference, generated from field descriptions and docstrings."""
    out = ["## Policy file reference", ""]
    headings: dict[type[BaseModel], str] = {
        PolicyDocument: "Top level",
        Person: "A person (`reporters[]`, `witnesses[]`, `reported[]`)",
    }
    for title, model in _SECTIONS:
        heading = headings.get(model, f"`{title}`")
        out += [f"### {heading}", "", _first_paragraph(model.__doc__), "", *_field_table(model), ""]
    out += ["## Rule reference", ""]
    for module in RULES:
        out += [f"### {module.NAME}", "", documentation(module), ""]
        if module.Params.model_fields:
            out += ["Options (`params`):", "", *_field_table(module.Params), ""]
        codes = finding_codes(module)
        if codes:
            out += ["| Finding code | Meaning |", "| --- | --- |"]
            out += [f"| `{code}` | {_cell(text)} |" for code, text in codes.items()]
            out.append("")
    return "\n".join(out).rstrip("\n") + "\n"


def _first_paragraph(doc: str | None) -> str:
    return " ".join((doc or "").strip().split("\n\n", 1)[0].split())


def _field_table(model: type[BaseModel]) -> list[str]:
    rows = ["| Key | Type | Default | Description |", "| --- | --- | --- | --- |"]
    for name, info in model.model_fields.items():
        shown = _type_text(info.annotation, info.metadata)
        rows.append(
            f"| `{name}` | {_cell(shown)} | {_cell(_default_text(info))} | {_cell(info.description or '')} |"
        )
    return rows


_LONG_DEFAULT = 200


def _default_text(info: Any) -> str:
    if info.is_required():
        return "required"
    if info.default_factory is not None:
        value = info.default_factory()
        return "{}" if isinstance(value, dict | BaseModel) else repr(value)
    default = info.default
    if default is PydanticUndefined:
        return "required"
    if isinstance(default, bool):
        return f"`{str(default).lower()}`"
    if isinstance(default, tuple):
        if not default:
            return "`[]`"
        shown = f"`{list(default)}`"
        # A long list (the built-in patterns) would swamp the table; the rule's source has it.
        return (
            shown
            if len(shown) <= _LONG_DEFAULT
            else f"{len(default)} built-in entries (see the rule's source)"
        )
    if isinstance(default, str):
        return f'`"{default}"`' if default == "" else f"`{default}`"
    return f"`{default}`"


def _type_text(annotation: Any, metadata: Sequence[Any] = ()) -> str:
    for item in metadata:
        if isinstance(item, _Shown):
            return item.text
    origin = get_origin(annotation)
    args = get_args(annotation)
    if origin is Annotated:
        return _type_text(args[0], args[1:])
    if origin is Literal:
        return " | ".join(f"`{value}`" for value in args)
    if origin in (tuple, list):
        return f"list of {_type_text(args[0])}"
    if origin is dict:
        return f"mapping of {_type_text(args[0])} to {_type_text(args[1])}"
    if origin in (Union, types.UnionType):
        if len(args) > 2 or not any(arg is type(None) for arg in args):
            return "`rules[]` entry"
        return _type_text(next(arg for arg in args if arg is not type(None))) + " (optional)"
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return " | ".join(f"`{member.value}`" for member in annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        titles = {model: title for title, model in _SECTIONS}
        return f"`{titles[annotation]}`" if annotation in titles else "mapping (see the rule reference)"
    simple = {
        bool: "true/false",
        str: "text",
        int: "number",
        float: "number",
        datetime.date: "date (YYYY-MM-DD)",
    }
    return simple.get(annotation, getattr(annotation, "__name__", str(annotation)))


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")
