"""`conduct-gateway policy diff`: what a policy edit would change, on mail the gateway has seen."""

from __future__ import annotations

import email
import email.policy
import sys
from collections.abc import Iterator
from email.utils import getaddresses, parseaddr
from pathlib import Path

import click

from gateway.cli import config_option
from gateway.cli.check import as_submitted
from gateway.cli.tables import emit, json_option
from gateway.decision.policy_diff import DiffReport, Replayed, replay
from gateway.decision.policy_source import load_compiled_policy
from gateway.decision.screening import Submission
from gateway.errors import ConfigError, GatewayError
from gateway.policy.model import NO_FINGERPRINTS
from gateway.settings import load_settings
from gateway.state.opening import State, open_state
from gateway.state.spool_records import QueueState

EXIT_SAME = 0
EXIT_CHANGED = 1
# 2: unusable input (an invalid policy or settings file, an unreadable folder), as every command.


@click.group()
def policy() -> None:
    """Try a policy edit before it is in force."""


@policy.command()
@click.argument("new_policy", metavar="NEW.yaml", type=click.Path(path_type=Path, dir_okay=False))
@click.option(
    "--eml-folder",
    "folders",
    multiple=True,
    type=click.Path(path_type=Path, file_okay=False),
    help="Also replay every *.eml file in this folder (repeat for more folders).",
)
@click.option(
    "--no-spool", is_flag=True, help="Replay only the --eml-folder files, not the spool's done folder."
)
@click.option(
    "--findings",
    "with_findings",
    is_flag=True,
    help="Also list messages whose verdict stays the same but whose findings change.",
)
@json_option
@config_option
def diff(
    new_policy: Path,
    folders: tuple[Path, ...],
    no_spool: bool,
    with_findings: bool,
    as_json: bool,
    config_path: Path | None,
) -> None:
    """Replay mail through the policy in force and NEW.yaml; list the messages whose verdict would change.

    The messages are those the spool's done folder still keeps (delivered mail, until
    `delivery.done_retention` prunes it; the gateway's own notices are left out) and the *.eml files
    of each --eml-folder. Each row names a message by queue id or file name, with the verdict in
    force, the new verdict, the rules whose findings differ and those findings (`-` only in force,
    `+` only in NEW.yaml) — never the message's content. Nothing is sent or recorded.

    Exit status: 0 when no verdict would change, 1 when at least one would (as diff(1)), 2 for
    unusable input (an invalid policy or settings file, an unreadable folder).
    """
    settings = load_settings(config_path)
    state = open_state(settings)
    in_force, _stamp = load_compiled_policy(settings.policy.path, state.cases, state.accounts)
    candidate, _stamp = load_compiled_policy(new_policy, state.cases, state.accounts)
    for folder in folders:
        if not folder.is_dir():
            raise ConfigError(f"{folder}: not a folder (--eml-folder)")
    ledger = state.ledger.open_read_only()
    fingerprints = state.fingerprints.open() if state.fingerprints.exists() else None
    try:
        messages = [*([] if no_spool else _spooled(state)), *(m for f in folders for m in _eml_files(f))]
        report = replay(
            messages,
            in_force,
            candidate,
            ledger,
            fingerprints.for_message() if fingerprints is not None else NO_FINGERPRINTS,
            findings=with_findings,
        )
    finally:
        if ledger is not None:
            ledger.close()
        if fingerprints is not None:
            fingerprints.close()
    _print(report, as_json, in_force.version, candidate.version)
    sys.exit(EXIT_CHANGED if report.verdicts_changed else EXIT_SAME)


def _print(report: DiffReport, as_json: bool, old_version: str, new_version: str) -> None:
    rows = [
        (r.name, r.old, r.new, ", ".join(r.rules) or "-", " ".join(r.findings) or "-") for r in report.rows
    ]
    records = [
        {"message": r.name, "old": r.old, "new": r.new, "rules": list(r.rules), "findings": list(r.findings)}
        for r in report.rows
    ]
    emit(("MESSAGE", "IN FORCE", "NEW", "RULES", "FINDINGS"), rows, records, as_json)
    if not as_json:
        click.echo(
            f"{report.replayed} message(s) replayed through policy {old_version} (in force) and "
            f"{new_version} (new): {report.verdicts_changed} verdict(s) would change."
        )


def _spooled(state: State) -> Iterator[Replayed]:
    """The done folder's messages as they were relayed, through the queue port; notices left out."""
    if not state.queue.exists():
        return
    spool = state.queue.open()
    for entry in spool.entries(QueueState.DONE):
        envelope = entry.envelope
        if envelope is None or not envelope.authenticated_as or not envelope.mail_from:
            continue  # unreadable, or the gateway's own mail (notices, review requests)
        try:
            message = spool.load(entry.queue_id)
        except GatewayError:
            continue  # pruned or moved since it was listed
        yield Replayed(
            entry.queue_id,
            Submission(
                queue_id=entry.queue_id,
                mail_from=envelope.mail_from,
                rcpt_tos=envelope.rcpt_tos,
                authenticated_as=envelope.authenticated_as,
                content=message.content,
            ),
        )


def _eml_files(folder: Path) -> Iterator[Replayed]:
    """Each *.eml file, with an envelope from its headers: From: is the sender and the login,
    To:, Cc: and Bcc: are the recipients."""
    for path in sorted(folder.glob("*.eml")):
        try:
            content = as_submitted(path.read_bytes())
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read the message: {exc.strerror}") from None
        headers = email.message_from_bytes(content, policy=email.policy.compat32)
        sender = parseaddr(str(headers.get("From", "")))[1]
        fields = [str(value) for name in ("To", "Cc", "Bcc") for value in headers.get_all(name, [])]
        recipients = tuple(dict.fromkeys(address for _name, address in getaddresses(fields) if address))
        if not sender or not recipients:
            click.echo(f"note: {path.name}: no From: or no recipient; left out", err=True)
            continue
        yield Replayed(
            path.name,
            Submission(
                queue_id=path.stem,
                mail_from=sender,
                rcpt_tos=recipients,
                authenticated_as=sender,
                content=content,
            ),
        )
