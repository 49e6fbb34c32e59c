"""`conduct-gateway case ...`: open, run and close cases in the encrypted case registry.

Commands that change a case print code names and counts only, never a name or address: their output
ends up in terminals' scrollback, shell histories of colleagues and tickets. Only `case show --reveal`
prints identities.
"""

from __future__ import annotations

import datetime
import io
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import click
from pydantic import ValidationError
from ruamel.yaml import YAML

from gateway.cli import config_option
from gateway.cli.auditing import record_case_action
from gateway.cli.check import as_submitted
from gateway.cli.tables import json_option, output_option, print_created
from gateway.code_names import new_code_name
from gateway.decision.policy_source import load_policy_for, write_policy_text
from gateway.errors import ConfigError, GatewayError
from gateway.policy.config import IDENTITY_FIELDS, Case, Person, PolicyDocument
from gateway.policy.loader import RegistryCases, merge_cases, read_policy
from gateway.policy.mime import parse_message
from gateway.policy.model import ProtectedIdentity
from gateway.policy.variants import described_forms
from gateway.settings import GatewaySettings, load_settings
from gateway.state.opening import open_state
from gateway.yamlsource import format_loc


class UnknownCase(GatewayError):
    """The case named on the command line is not in the policy."""


@click.group()
def case() -> None:
    """Cases in the encrypted case registry (code names, people, consent, conflicts) and their
    protected content (reporters' and witnesses' own messages, kept as fingerprints only)."""


def _find_case(cases: tuple[Case, ...], code: str, policy_path: Path) -> Case:
    wanted = " ".join(code.lower().split())
    for candidate in cases:
        if candidate.code == wanted:
            return candidate
    known = ", ".join(repr(c.code) for c in cases) or "none yet"
    raise UnknownCase(
        f"there is no case {code!r} in the case registry or {policy_path} (the cases are: {known}). "
        "Open it first with `conduct-gateway case new` and add its people with `case add-person`."
    )


@case.command("add-report")
@click.argument("code", metavar="CASE")
@click.argument(
    "message_file", metavar="FILE.eml", type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.option(
    "--person",
    metavar="ID",
    help="The reporter's or witness's id in the case (default: recognised from the message's From address).",
)
@config_option
def add_report(code: str, message_file: Path, person: str | None, config_path: Path | None) -> None:
    """Learn a reporter's or witness's message FILE.eml (as saved by a mail client) under CASE.

    The gateway keeps only fingerprints (keyed hashes of 4-word sequences), never the text: outgoing
    mail to anyone outside the committee that repeats a passage of it, even with a few words
    changed, is then refused by the protected-content rule. Quoted lines, attribution lines, the
    signature and a closing list footer or disclaimer of its plain-text body are left out. It also
    records which protected people the message names (ids only), so the committee may quote the
    author's own words back to them, names included. A running gateway uses the new fingerprints
    for the next message, without a restart.
    """
    settings = load_settings(config_path)
    policy, _stamp = load_policy_for(settings)
    found = _find_case(policy.document.cases, code, settings.policy.path)
    protected = {p.id: p for p in found.protected()}
    try:
        raw = message_file.read_bytes()
    except OSError as exc:
        raise GatewayError(f"{message_file}: cannot read: {exc.strerror}") from None
    message = parse_message(as_submitted(raw))
    if person is not None and person not in protected:
        known = ", ".join(sorted(protected)) or "none"
        raise UnknownCase(
            f"--person {person}: no reporter or witness with that id in case {found.code!r} "
            f"(they are: {known})"
        )
    if person is None:
        senders = {address.address.lower() for address in message.from_}
        matches = [p.id for p in protected.values() if senders & {a.lower() for a in p.addresses}]
        person = matches[0] if len(matches) == 1 else None
    with open_state(settings).fingerprints.open() as store:
        learnt = store.learn_message(
            found.code, message, person=person, source="add-report", finder=policy.finder
        )
    if not learnt.shingles:
        raise GatewayError(
            f"{message_file}: nothing to learn: the message has fewer than 8 words of its own text "
            "(outside quotes and signature)"
        )
    author = (
        f"written by {person}"
        if person
        else "author not recognised (give --person ID so the reporter may be quoted back to themselves)"
    )
    click.echo(
        f"Learnt {message_file.name} for case {found.code}: {learnt.shingles} fingerprints, {author}. "
        "Only fingerprints were stored; keep or delete the file as your procedures require."
    )


@case.command("list")
@json_option
@config_option
def list_cases(as_json: bool, config_path: Path | None) -> None:
    """Every case: code name, status, severity and counts (never names), and how many protected
    messages the gateway holds fingerprints of."""
    settings = load_settings(config_path)
    policy, _stamp = load_policy_for(settings)
    in_policy = {item.code for item in read_policy(settings.policy.path)[0].cases}
    with open_state(settings).fingerprints.open() as store:
        counts = store.cases()
    listed: list[dict[str, object]] = [
        {
            "code": item.code,
            "status": item.status,
            "severity": item.severity,
            "reporters": len(item.reporters),
            "witnesses": len(item.witnesses),
            "reported": len(item.reported),
            "consents": len(item.consents),
            "conflicts": len(item.conflicts),
            "protected_messages": counts.pop(item.code, 0),
            "where": "policy" if item.code in in_policy else "registry",
        }
        for item in policy.document.cases
    ]
    gone: list[dict[str, object]] = [
        {"code": code, "protected_messages": count, "where": None} for code, count in sorted(counts.items())
    ]
    if as_json:
        click.echo(json.dumps([*listed, *gone], indent=2))
        return
    for item, entry in zip(policy.document.cases, listed, strict=True):
        where = "in the policy file" if entry["where"] == "policy" else "in the registry"
        held = entry["protected_messages"]
        click.echo(f"{item.code}: {held} protected message(s); {_summary(item)}; {where}")
    for entry in gone:
        held = entry["protected_messages"]
        click.echo(f"{entry['code']}: {held} protected message(s) (case no longer in the policy)")


# --- the case registry ---------------------------------------------------------------------------


ROLES = {"reporter": "reporters", "witness": "witnesses", "reported": "reported"}


def count_of(number: int, singular: str, plural: str) -> str:
    return f"{number} {singular if number == 1 else plural}"


def _summary(item: Case) -> str:
    """Status, severity and counts: nothing that identifies anyone."""
    return ", ".join(
        (
            item.status,
            item.severity,
            count_of(len(item.reporters), "reporter", "reporters"),
            count_of(len(item.witnesses), "witness", "witnesses"),
            count_of(len(item.reported), "reported party", "reported parties"),
            count_of(len(item.consents), "consent", "consents"),
            count_of(len(item.conflicts), "conflict of interest", "conflicts of interest"),
        )
    )


def _normal_code(code: str) -> str:
    return " ".join(code.lower().split())


def _validation_problem(exc: ValidationError, what: str) -> GatewayError:
    # include_input=False: the rejected value may be a name, and this text can end up in a log.
    problems = "; ".join(
        f"{format_loc(tuple(error['loc'])) or what}: {error['msg']}"
        for error in exc.errors(include_url=False, include_input=False)
    )
    return GatewayError(f"{what}: {problems}")


class _RegistryEdit:
    """One change to the registry: validated against the policy before anything is written."""

    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        self.state = open_state(settings)
        self.registry = self.state.cases
        self.policy: PolicyDocument = read_policy(settings.policy.path)[0]

    def apply(self, change: Callable[[list[Case]], None]) -> tuple[Case, ...]:
        def changed(current: tuple[Case, ...]) -> Sequence[Case]:
            cases = list(current)
            change(cases)
            # The running gateway would refuse an invalid registry; refuse it here, before writing.
            merge_cases(
                self.policy, RegistryCases(tuple(cases), "pending", f"case registry {self.registry.path}")
            )
            return cases

        return self.registry.update(changed)

    def taken_codes(self, cases: Sequence[Case]) -> set[str]:
        taken = {item.code for item in (*cases, *self.policy.cases)}
        with self.state.fingerprints.open() as store:
            taken.update(store.cases())  # codes of old cases whose fingerprints are still kept
        return taken

    def find(self, cases: list[Case], code: str) -> int:
        wanted = _normal_code(code)
        for index, item in enumerate(cases):
            if item.code == wanted:
                return index
        if any(item.code == wanted for item in self.policy.cases):
            raise UnknownCase(
                f"case {wanted!r} is in the policy file {self.settings.policy.path}, not in the case "
                "registry: move it with `conduct-gateway case import-policy --remove-from-policy` first"
            )
        known = ", ".join(repr(item.code) for item in cases) or "none yet"
        raise UnknownCase(f"there is no case {code!r} in the case registry (the cases are: {known})")


def _replace(item: Case, **changes: object) -> Case:
    """``item`` with ``changes``, validated (model_copy would not validate)."""
    try:
        return Case.model_validate({**item.model_dump(), **changes})
    except ValidationError as exc:
        raise _validation_problem(exc, f"case {item.code!r}") from None


@case.command("new")
@click.option("--severity", type=click.Choice(["normal", "severe"]), default="normal", show_default=True)
@click.option("--code", "code", metavar="CODE", help="Use this code name instead of a random one.")
@click.option(
    "--expunge-on",
    type=click.DateTime(formats=["%Y-%m-%d"]),
    default=None,
    help="Date (YYYY-MM-DD) from which the case's identities are expunged.",
)
@output_option
@config_option
def new_case(
    severity: str,
    code: str | None,
    expunge_on: datetime.datetime | None,
    output: str,
    config_path: Path | None,
) -> None:
    """Open a new case under a random two-word code name (e.g. "home shelf") and print it.

    Use the code name, never people's names, in subjects, file names and discussion.
    """
    edit = _RegistryEdit(load_settings(config_path))
    chosen: list[str] = []

    def add(cases: list[Case]) -> None:
        taken = edit.taken_codes(cases)
        name = _normal_code(code) if code else new_code_name(taken)
        if name in taken:
            raise GatewayError(f"the code name {name!r} is already used; choose another")
        fields: dict[str, object] = {"code": name, "severity": severity}
        if expunge_on is not None:
            fields["expunge_on"] = expunge_on.date()
        try:
            cases.append(Case.model_validate(fields))
        except ValidationError as exc:
            raise _validation_problem(exc, "--code") from None
        chosen[:] = [name]

    edit.apply(add)
    record_case_action(edit.settings, "new", chosen[0], severity=severity)
    if print_created(output, chosen[0], {"code": chosen[0], "severity": severity}):
        return
    click.echo(f"Opened case {chosen[0]} ({severity}) in the case registry {edit.registry.path}.")
    click.echo(
        f"Add its people with: conduct-gateway case add-person '{chosen[0]}' --role reporter --name ..."
    )


@case.command("add-person")
@click.argument("code", metavar="CASE")
@click.option("--role", type=click.Choice(sorted(ROLES)), required=True)
@click.option("--name", "names", multiple=True, metavar="TEXT", help="Full name (repeatable).")
@click.option(
    "--alias", "aliases", multiple=True, metavar="TEXT", help="Nickname or short name (repeatable)."
)
@click.option("--address", "addresses", multiple=True, metavar="ADDR", help="Email address (repeatable).")
@click.option("--username", "usernames", multiple=True, metavar="TEXT", help="Platform handle (repeatable).")
@click.option("--id", "person_id", metavar="CODE", help="Use this person code name instead of a random one.")
@click.option(
    "--everyday-word",
    "everyday_words",
    multiple=True,
    metavar="WORD",
    help="A part of their name that is an everyday word or very common name: not looked for alone.",
)
@click.option("--no-weak-forms", is_flag=True, help="Never look for their given name or surname on its own.")
@output_option
@config_option
def add_person(
    code: str,
    role: str,
    names: tuple[str, ...],
    aliases: tuple[str, ...],
    addresses: tuple[str, ...],
    usernames: tuple[str, ...],
    person_id: str | None,
    everyday_words: tuple[str, ...],
    no_weak_forms: bool,
    output: str,
    config_path: Path | None,
) -> None:
    """Add a reporter, witness or reported party to CASE under a random person code name.

    Reporters' and witnesses' names, aliases, addresses and usernames are protected from the next
    message on (a running gateway picks the change up within seconds, without a restart). Prints
    the person's code name, never what was given.
    """
    edit = _RegistryEdit(load_settings(config_path))
    chosen: list[str] = []

    def add(cases: list[Case]) -> None:
        index = edit.find(cases, code)
        item = cases[index]
        taken = {person.id for other in cases for person in (*other.protected(), *other.reported)}
        person_code = person_id.strip().lower() if person_id else new_code_name(taken, joiner="-")
        if person_code in {p.id for p in (*item.protected(), *item.reported)}:
            raise GatewayError(f"case {item.code!r} already has a person {person_code!r}")
        try:
            person = Person(
                id=person_code,
                names=names,
                aliases=aliases,
                addresses=addresses,
                usernames=usernames,
                weak_forms=not no_weak_forms,
                everyday_words=everyday_words,
            )
        except ValidationError as exc:
            raise _validation_problem(exc, "the person") from None
        key = ROLES[role]
        cases[index] = _replace(item, **{key: (*getattr(item, key), person.model_dump())})
        chosen[:] = [item.code, person_code]

    edit.apply(add)
    count = len(names) + len(aliases) + len(addresses) + len(usernames)
    record_case_action(edit.settings, "add-person", chosen[0], role=role, person=chosen[1], identities=count)
    summary = {"case": chosen[0], "person": chosen[1], "role": role, "identities": count}
    if print_created(output, chosen[1], summary):
        return
    given = count_of(count, "identity", "identities")
    protected = "protected" if role != "reported" else "recorded (reported parties are not protected)"
    click.echo(f"Added {role} {chosen[1]} to case {chosen[0]}: {given} {protected}.")


@case.command("conflict")
@click.argument("code", metavar="CASE")
@click.argument("member", metavar="MEMBER_ADDRESS")
@click.option("--remove", is_flag=True, help="Withdraw the declaration instead.")
@config_option
def conflict(code: str, member: str, remove: bool, config_path: Path | None) -> None:
    """Declare that the committee member MEMBER_ADDRESS has a conflict of interest on CASE.

    For this case the member then counts as outside the committee: its protected identities and
    content are not sent to them, and they neither review nor approve its held mail.
    """
    edit = _RegistryEdit(load_settings(config_path))
    lowered = member.strip().lower()
    owner = next(
        (m for m in edit.policy.organisation.members if lowered in {a.lower() for a in m.addresses}), None
    )
    if owner is None:
        raise GatewayError(f"{member} is not a committee member's address in {edit.settings.policy.path}")
    # Every address of the member: a conflict follows the person, not one of their mailboxes.
    member_addresses = tuple(dict.fromkeys(a.lower() for a in owner.addresses))
    chosen: list[str] = []

    def change(cases: list[Case]) -> None:
        index = edit.find(cases, code)
        item = cases[index]
        current = tuple(a for a in item.conflicts if a.lower() not in member_addresses)
        updated = current if remove else (*current, *member_addresses)
        cases[index] = _replace(item, conflicts=updated)
        chosen[:] = [item.code]

    edit.apply(change)
    action = "conflict-withdrawn" if remove else "conflict"
    record_case_action(edit.settings, action, chosen[0], member=member_addresses[0])
    verb = "Withdrew the conflict of interest of" if remove else "Recorded a conflict of interest for"
    click.echo(f"{verb} {owner.name} on case {chosen[0]}.")


@case.command("close")
@click.argument("code", metavar="CASE")
@click.option("--reopen", is_flag=True, help="Open a closed case again.")
@config_option
def close(code: str, reopen: bool, config_path: Path | None) -> None:
    """Mark CASE closed. Its people stay protected until the case is expunged."""
    edit = _RegistryEdit(load_settings(config_path))
    chosen: list[str] = []

    def change(cases: list[Case]) -> None:
        index = edit.find(cases, code)
        cases[index] = _replace(cases[index], status="open" if reopen else "closed")
        chosen[:] = [cases[index].code]

    edit.apply(change)
    record_case_action(edit.settings, "reopen" if reopen else "close", chosen[0])
    if reopen:
        click.echo(f"Reopened case {chosen[0]}.")
    else:
        click.echo(
            f"Closed case {chosen[0]}. Its reporters and witnesses stay protected; expunge it when "
            "your retention rules say so."
        )


@case.command("show")
@click.argument("code", metavar="CASE")
@click.option("--reveal", is_flag=True, help="Required: confirms you mean to print identities.")
@config_option
def show(code: str, reveal: bool, config_path: Path | None) -> None:
    """Print everything recorded for CASE, identities included (admins only).

    Needs the registry key (the environment variable or key file: whoever can read it is an admin)
    and --reveal. Prints a warning to standard error first.
    """
    if not reveal:
        raise GatewayError(
            "case show prints the names and addresses of the people a case protects; add --reveal to "
            "confirm (and make sure nobody is looking at your screen)"
        )
    settings = load_settings(config_path)
    registry = open_state(settings).cases
    registry.key()  # no key, no identities: even for a case still kept in the policy file
    policy, _stamp = load_policy_for(settings)
    found = _find_case(policy.document.cases, code, settings.policy.path)
    # Fail closed: identities are shown only once the showing is on record.
    record_case_action(settings, "show-reveal", found.code)
    click.echo(
        f"WARNING: the identities of the people case {found.code} protects follow. Do not copy them into "
        "mail, tickets or chat; clear your terminal's scrollback afterwards.",
        err=True,
    )
    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    yaml.dump(found.model_dump(mode="json"), sys.stdout)
    click.echo(
        "# What the gateway looks for, per person (generated from the above, in any case and with\n"
        "# look-alike letters, letter-spacing or invisible characters): strong forms are refused to\n"
        "# outsiders (PROTECTED_IDENTITY), weak forms held for review (PROTECTED_NAME_PART)."
    )
    yaml.dump({"matched": _matched_forms(found, policy.document.name_forms.all_titles())}, sys.stdout)


def _matched_forms(item: Case, titles: tuple[str, ...]) -> dict[str, dict[str, list[str]]]:
    """Each protected person's generated forms, by strength."""
    return {
        person.id: described_forms(
            [
                ProtectedIdentity(item.code, person.id, kind, value, person.weak_forms, person.everyday_words)
                for key, kind in IDENTITY_FIELDS
                for value in getattr(person, key)
            ],
            titles,
        )
        for person in item.protected()
    }


@case.command("import-policy")
@click.option(
    "--remove-from-policy", is_flag=True, help="Also delete the cases from the policy file (recommended)."
)
@config_option
def import_policy(remove_from_policy: bool, config_path: Path | None) -> None:
    """Move the cases written in the policy file into the encrypted case registry.

    Cases already in the registry with the same content are skipped; a case with the same code name
    but different content is an error. Without --remove-from-policy the cases stay in the policy file
    too (the gateway counts identical copies once): delete them there afterwards.
    """
    settings = load_settings(config_path)
    edit = _RegistryEdit(settings)
    cases = edit.policy.cases
    if not cases:
        click.echo(f"The policy file {settings.policy.path} holds no cases: nothing to import.")
        if not remove_from_policy:
            return
    moved: list[str] = []

    def add(current: list[Case]) -> None:
        known = {item.code: item for item in current}
        for item in cases:
            if item.code not in known:
                current.append(item)
                moved.append(item.code)
            elif known[item.code] != item:
                raise GatewayError(
                    f"case {item.code!r} is in the registry already, with different content; "
                    "resolve it by hand (`case show --reveal`) before importing"
                )

    if cases:
        edit.apply(add)
        for code in moved:
            record_case_action(settings, "import-policy", code)
        click.echo(
            f"Imported {count_of(len(moved), 'case', 'cases')} into the case registry {edit.registry.path}"
            + (f": {', '.join(moved)}." if moved else " (all were there already).")
        )
    if remove_from_policy:
        _remove_cases_from_policy(settings.policy.path)
        click.echo(
            f"Removed the cases from {settings.policy.path}. Older copies of that file (backups, version "
            "control history) still hold the identities: purge them as your procedures require."
        )
    else:
        click.echo(
            f"The cases are still in {settings.policy.path}: delete them there "
            "(or rerun with --remove-from-policy)."
        )


def _remove_cases_from_policy(path: Path) -> None:
    """Drop the ``cases`` key from the policy file, keeping its other content and comments."""
    yaml = YAML()  # round-trip: comments and key order survive
    yaml.preserve_quotes = True
    yaml.width = 4096
    try:
        data = yaml.load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    if not isinstance(data, dict) or "cases" not in data:
        return
    del data["cases"]
    out = io.StringIO()
    yaml.dump(data, out)
    text = out.getvalue()
    write_policy_text(path, text)
