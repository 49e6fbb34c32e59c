"""`conduct-gateway case edit-person|remove-person|severity`: a case's upkeep over months, audited.

Like every case command they print and audit code names and counts only, never a name, alias,
address or username: what an admin typed stays in their terminal. A running gateway picks each
change up from the case registry within seconds, without a restart (see ``PolicySource``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import click
from pydantic import ValidationError

from gateway.cli import config_option
from gateway.cli.auditing import record_case_action
from gateway.cli.case import ROLES, _RegistryEdit, _replace, _validation_problem, count_of
from gateway.errors import GatewayError
from gateway.policy.config import Case, Person
from gateway.settings import load_settings

# The identity fields a person has, by the word the options use.
_FIELDS = (("name", "names"), ("alias", "aliases"), ("address", "addresses"), ("username", "usernames"))


def _same(a: str, b: str) -> bool:
    # What the matcher would treat as one form: case and runs of spaces do not make a new one.
    return " ".join(a.lower().split()) == " ".join(b.lower().split())


def _find_person(item: Case, person: str) -> tuple[str, int]:
    """(role key, index) of ``person`` (a code name) in ``item``."""
    wanted = person.strip().lower()
    for key in ROLES.values():
        for index, candidate in enumerate(getattr(item, key)):
            if candidate.id == wanted:
                return key, index
    known = ", ".join(p.id for key in ROLES.values() for p in getattr(item, key)) or "none"
    raise GatewayError(f"case {item.code!r} has no person {person!r} (its people are: {known})")


def edited_person(
    person: Person,
    *,
    renames: Sequence[tuple[str, str]] = (),
    added: Sequence[tuple[str, str]] = (),
    removed: Sequence[tuple[str, str]] = (),
) -> tuple[Person, int, int]:
    """``person`` with names renamed, identities added and removed; (person, added, removed) counts.

    ``added`` and ``removed`` are (field word, value) pairs. A value to remove or rename that the
    person does not have is an error, so a typo never passes for a change.
    """
    values: dict[str, list[str]] = {plural: list(getattr(person, plural)) for _word, plural in _FIELDS}
    plurals = dict(_FIELDS)
    count_added = count_removed = 0
    for old, new in renames:
        names = values["names"]
        index = next((i for i, name in enumerate(names) if _same(name, old)), None)
        if index is None:
            raise GatewayError(f"person {person.id} has no such name to rename (see `case show --reveal`)")
        names[index] = new
        count_added += 1
        count_removed += 1
    for word, value in removed:
        plural = plurals[word]
        kept = [v for v in values[plural] if not _same(v, value)]
        if len(kept) == len(values[plural]):
            raise GatewayError(f"person {person.id} has no such {word} to remove (see `case show --reveal`)")
        count_removed += len(values[plural]) - len(kept)
        values[plural] = kept
    for word, value in added:
        plural = plurals[word]
        if not any(_same(v, value) for v in values[plural]):
            values[plural].append(value)
            count_added += 1
    try:
        return Person.model_validate({**person.model_dump(), **values}), count_added, count_removed
    except ValidationError as exc:
        raise _validation_problem(exc, f"person {person.id}") from None


@click.command("edit-person")
@click.argument("code", metavar="CASE")
@click.argument("person", metavar="PERSON")
@click.option("--rename", "renames", nargs=2, multiple=True, metavar="OLD NEW", help="Replace a full name.")
@click.option("--add-name", "add_names", multiple=True, metavar="TEXT", help="Add a full name.")
@click.option("--remove-name", "remove_names", multiple=True, metavar="TEXT", help="Remove a full name.")
@click.option("--add-alias", "add_aliases", multiple=True, metavar="TEXT")
@click.option("--remove-alias", "remove_aliases", multiple=True, metavar="TEXT")
@click.option("--add-address", "add_addresses", multiple=True, metavar="ADDR")
@click.option("--remove-address", "remove_addresses", multiple=True, metavar="ADDR")
@click.option("--add-username", "add_usernames", multiple=True, metavar="TEXT")
@click.option("--remove-username", "remove_usernames", multiple=True, metavar="TEXT")
@config_option
def edit_person(
    code: str,
    person: str,
    renames: tuple[tuple[str, str], ...],
    add_names: tuple[str, ...],
    remove_names: tuple[str, ...],
    add_aliases: tuple[str, ...],
    remove_aliases: tuple[str, ...],
    add_addresses: tuple[str, ...],
    remove_addresses: tuple[str, ...],
    add_usernames: tuple[str, ...],
    remove_usernames: tuple[str, ...],
    config_path: Path | None,
) -> None:
    """Correct PERSON (their code name) in CASE: rename them, add or remove a name, alias, address
    or username (every option repeatable, all combinable).

    A person keeps at least one identity (remove them with
    `case remove-person`). From the next message on the gateway looks for the new forms and no
    longer for the removed ones; prints counts only.
    """
    added = [
        *(("name", v) for v in add_names),
        *(("alias", v) for v in add_aliases),
        *(("address", v) for v in add_addresses),
        *(("username", v) for v in add_usernames),
    ]
    removed = [
        *(("name", v) for v in remove_names),
        *(("alias", v) for v in remove_aliases),
        *(("address", v) for v in remove_addresses),
        *(("username", v) for v in remove_usernames),
    ]
    if not (renames or added or removed):
        raise GatewayError("say what to change: --rename, --add-name, --remove-alias, ... (see --help)")
    edit = _RegistryEdit(load_settings(config_path))
    done: list[object] = []

    def change(cases: list[Case]) -> None:
        index = edit.find(cases, code)
        item = cases[index]
        key, position = _find_person(item, person)
        people = list(getattr(item, key))
        changed, count_added, count_removed = edited_person(
            people[position], renames=renames, added=added, removed=removed
        )
        people[position] = changed
        cases[index] = _replace(item, **{key: tuple(p.model_dump() for p in people)})
        done[:] = [item.code, changed.id, count_added, count_removed]

    edit.apply(change)
    case_code, person_id, count_added, count_removed = done
    assert isinstance(count_added, int) and isinstance(count_removed, int)
    record_case_action(
        edit.settings,
        "edit-person",
        str(case_code),
        person=str(person_id),
        added=count_added,
        removed=count_removed,
    )
    click.echo(
        f"Edited {person_id} in case {case_code}: {count_of(count_added, 'identity', 'identities')} added, "
        f"{count_removed} removed (in force on the running gateway within seconds)."
    )


@click.command("remove-person")
@click.argument("code", metavar="CASE")
@click.argument("person", metavar="PERSON")
@config_option
def remove_person(code: str, person: str, config_path: Path | None) -> None:
    """Remove PERSON (their code name) from CASE, with the consents they gave.

    From the next message on their names are no longer protected. Fingerprints of their own
    messages stay until the case is expunged (`case expunge`): content stays protected.
    """
    edit = _RegistryEdit(load_settings(config_path))
    done: list[object] = []

    def change(cases: list[Case]) -> None:
        index = edit.find(cases, code)
        item = cases[index]
        key, position = _find_person(item, person)
        removed = getattr(item, key)[position]
        people = tuple(p.model_dump() for p in getattr(item, key) if p.id != removed.id)
        consents = tuple(c.model_dump() for c in item.consents if c.person != removed.id)
        cases[index] = _replace(item, **{key: people, "consents": consents})
        role = next(word for word, plural in ROLES.items() if plural == key)
        done[:] = [item.code, removed.id, role, len(item.consents) - len(consents)]

    edit.apply(change)
    case_code, person_id, role, consents = done
    assert isinstance(consents, int)
    record_case_action(
        edit.settings,
        "remove-person",
        str(case_code),
        person=str(person_id),
        role=str(role),
        consents=consents,
    )
    click.echo(
        f"Removed {role} {person_id} from case {case_code}, with "
        f"{count_of(consents, 'consent', 'consents')} they gave."
    )


@click.command("severity")
@click.argument("code", metavar="CASE")
@click.argument("severity", type=click.Choice(["normal", "severe"]))
@config_option
def severity(code: str, severity: str, config_path: Path | None) -> None:
    """Set CASE's severity: `severe` needs more approvals for its held mail (`review.approvals`)."""
    edit = _RegistryEdit(load_settings(config_path))
    done: list[str] = []

    def change(cases: list[Case]) -> None:
        index = edit.find(cases, code)
        item = cases[index]
        cases[index] = _replace(item, severity=severity)
        done[:] = [item.code, item.severity]

    edit.apply(change)
    record_case_action(edit.settings, "severity", done[0], severity=severity, was=done[1])
    click.echo(f"Case {done[0]} is now {severity} (was {done[1]}).")
