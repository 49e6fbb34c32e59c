"""`conduct-gateway case add-report|list`: teach the gateway a case's protected messages."""

from __future__ import annotations

from pathlib import Path

import click

from gateway.cli import config_option
from gateway.cli.check import as_submitted
from gateway.errors import GatewayError
from gateway.fingerprints import FingerprintStore
from gateway.policy.config import Case
from gateway.policy.mime import parse_message
from gateway.policy_screener import load_compiled_policy
from gateway.settings import load_settings


class UnknownCase(GatewayError):
    """The case named on the command line is not in the policy."""


@click.group()
def case() -> None:
    """Cases' protected content: reporters' and witnesses' own messages, kept as fingerprints only."""


def _find_case(cases: tuple[Case, ...], code: str, policy_path: Path) -> Case:
    wanted = " ".join(code.lower().split())
    for candidate in cases:
        if candidate.code == wanted:
            return candidate
    known = ", ".join(repr(c.code) for c in cases) or "none yet"
    raise UnknownCase(
        f"there is no case {code!r} in {policy_path} (the cases are: {known}). Add the case to the "
        "policy first, with its reporters and witnesses, then add the report."
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

    The gateway keeps only fingerprints (keyed hashes of 8-word sequences), never the text: outgoing
    mail to anyone outside the committee that repeats a passage of it is then refused by the
    protected-content rule. Quoted lines and the signature of its plain-text body are left out.
    A running gateway uses the new fingerprints for the next message, without a restart.
    """
    settings = load_settings(config_path)
    policy, _stamp = load_compiled_policy(settings.policy.path)
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
    with FingerprintStore.open(settings.state_dir) as store:
        learnt = store.learn_message(found.code, message, person=person, source="add-report")
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
@config_option
def list_cases(config_path: Path | None) -> None:
    """Each case of the policy, with how many protected messages the gateway holds fingerprints of."""
    settings = load_settings(config_path)
    policy, _stamp = load_compiled_policy(settings.policy.path)
    with FingerprintStore.open(settings.state_dir) as store:
        counts = store.cases()
    for item in policy.document.cases:
        click.echo(f"{item.code}: {counts.pop(item.code, 0)} protected message(s)")
    for code, count in sorted(counts.items()):
        click.echo(f"{code}: {count} protected message(s) (case no longer in the policy)")
