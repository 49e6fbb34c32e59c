"""A policy document read and checked: file/line/key errors, checks a schema cannot make, registry cases."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from gateway.errors import ConfigError
from gateway.policy.config import (
    AUDIENCE_ROLES,
    IDENTITY_FIELDS,
    RULE_NAMES,
    AudienceGroup,
    Case,
    Person,
    PolicyDocument,
)
from gateway.policy.matcher import patterns_for
from gateway.policy.model import ProtectedIdentity
from gateway.yamlsource import LoadedYaml, format_loc, parse_yaml_text

Loc = tuple[str | int, ...]


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
