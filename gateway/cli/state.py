"""`conduct-gateway state migrate|check|import|export`: the shared state's schema, reach, moves."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from gateway.cli import config_option
from gateway.errors import GatewayError
from gateway.settings import GatewaySettings, load_settings
from gateway.state.maintenance import (
    chain_head,
    check_state,
    export_to_files,
    import_files_state,
    migrate_state,
)


@click.group()
def state() -> None:
    """Where the gateway keeps its state (files, or PostgreSQL shared by several gateways)."""


@state.command("migrate")
@config_option
def migrate_command(config_path: Path | None) -> None:
    """Bring the PostgreSQL schema to this version's; safe to run again, and from two hosts at once.

    A database migrated by a newer conduct-gateway is refused, unchanged (exit 2).
    """
    settings = load_settings(config_path)
    if settings.state.backend != "postgresql":
        click.echo(f"state.backend is files ({settings.state_dir}): nothing to migrate.")
        return
    result = migrate_state(settings)
    if result.applied:
        click.echo(f"{result.where}: applied {', '.join(result.applied)}; schema version {result.version}.")
    else:
        click.echo(f"{result.where}: schema version {result.version}, already current.")


@state.command("check")
@config_option
def check_command(config_path: Path | None) -> None:
    """Check that the state can be reached, its schema is this version's, and show the audit chain head.

    Exit status 0 when the gateway can run on it, 1 when it cannot (the message says what to do).
    """
    settings = load_settings(config_path)
    report = check_state(settings)
    click.echo(f"backend:  {report.backend} ({report.where})")
    if report.backend == "postgresql":
        click.echo(f"reach:    {'ok' if report.reachable else 'FAILED'}")
        click.echo(f"schema:   {report.schema}" + (f" (version {report.version})" if report.version else ""))
    if not report.ok:
        click.echo(report.explanation, err=True)
        sys.exit(1)
    try:
        head = _chain_head(settings)
    except GatewayError as exc:
        click.echo(f"audit:    cannot be read: {exc}", err=True)
        sys.exit(1)
    click.echo(f"audit:    {head}")


@state.command("import")
@config_option
def import_command(config_path: Path | None) -> None:
    """Copy a files installation (the stores under state_dir) into the new PostgreSQL database.

    Moves the audit trail (same chain, same head), the thread ledger, the fingerprints, the case
    registry (still encrypted), the accounts, the queue (every message with its delivery status),
    the holds (with their review tokens) and the overrides (tokens, justifications), all or nothing;
    the files are left in place. Stop the
    gateway first; migrate the database first.
    """
    settings = load_settings(config_path)
    done = import_files_state(settings)
    click.echo(
        f"Imported from {settings.state_dir}: {done.audit_entries} audit entries (chain head "
        f"{done.audit_head[:16]}...), {done.later_entries} waiting action(s) appended, "
        f"{done.ledger_messages} ledger messages, {done.fingerprint_documents} fingerprinted documents, "
        f"{'the case registry' if done.cases_registry else 'no case registry'}, {done.accounts} account(s), "
        f"{done.queued_messages} queued message(s), {done.holds} hold(s), {done.overrides} override(s)."
    )
    if done.unreadable_messages:
        click.echo(
            f"{done.unreadable_messages} message(s) the files queue had set aside as unreadable "
            f"were not moved: they stay under {settings.state_dir} for you to inspect."
        )
    click.echo(
        "Copy fingerprints.key to every gateway's state folder and give every gateway the case "
        "registry's key; then run: conduct-gateway state check"
    )


@state.command("export")
@config_option
def export_command(config_path: Path | None) -> None:
    """Copy the PostgreSQL database back into a files installation (the counterpart of `state import`).

    Writes the same stores `state import` moves (the audit trail with the same chain head, the
    thread ledger, the fingerprints, the case registry still encrypted, the accounts as the users
    file, the queue with each message's delivery status, the holds with their review tokens, the
    override store) under
    state_dir and the users file and registry paths, all or nothing. Refused while gateways run on
    the database and when any of those files already exists. The database is left as it was; then
    set state.backend to files.
    """
    settings = load_settings(config_path)
    done = export_to_files(settings)
    click.echo(
        f"Exported into {settings.state_dir}: {done.audit_entries} audit entries (chain head "
        f"{done.audit_head[:16]}...), {done.ledger_messages} ledger messages, "
        f"{done.fingerprint_documents} fingerprinted documents, "
        f"{'the case registry' if done.cases_registry else 'no case registry'}, {done.accounts} account(s), "
        f"{done.queued_messages} queued message(s), {done.holds} hold(s), {done.overrides} override(s)."
    )
    if done.unreadable_messages:
        click.echo(
            f"{done.unreadable_messages} message(s) PostgreSQL had set aside as unreadable were not "
            "exported: they stay in the database (conduct-gateway queue list --state corrupt)."
        )
    click.echo("Set state.backend to files (keep state_dir), then run: conduct-gateway state check")


def _chain_head(settings: GatewaySettings) -> str:
    head = chain_head(settings)
    if head is None:
        return "no entries yet"
    return f"chain head at entry {head[0]} ({head[1][:16]}...)"
