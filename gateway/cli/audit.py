"""`conduct-gateway audit verify|show`: check the audit trail's hash chain, and list decisions."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Mapping
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

import click

from gateway.cli import config_option
from gateway.errors import ConfigError
from gateway.settings import load_settings
from gateway.state.audit_format import (
    EXPUNGED,
    StoredEntry,
    digest_matches,
    normalise_address,
    normalise_message_id,
)
from gateway.state.opening import audit_folder, open_state
from gateway.state.ports import AuditPort

MAX_PROBLEMS_SHOWN = 50
VERDICTS = ("deliver", "rewrite", "reject", "hold", "tempfail")

audit_dir_option = click.option(
    "--audit-dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Audit folder to read (default: <state_dir>/audit from the settings), e.g. a backup copy.",
)


def _trail(config_path: Path | None, explicit: Path | None) -> tuple[str, AuditPort]:
    """A name for messages, and the trail: ``--audit-dir``, else the one the settings configure."""
    if explicit is not None:
        directory, trail = explicit, audit_folder(explicit)
    else:
        settings = load_settings(config_path)
        state = open_state(settings)
        if settings.state.backend == "postgresql":
            return "the shared audit trail (PostgreSQL)", state.audit
        directory, trail = state.layout.audit, state.audit
    if not directory.is_dir():
        raise ConfigError(f"{directory}: no audit trail here (the gateway has not recorded anything yet?)")
    return str(directory), trail


@click.group()
def audit() -> None:
    """The tamper-evident record of every decision: verify it, or list entries."""


@audit.command("verify")
@audit_dir_option
@config_option
def verify_command(audit_dir: Path | None, config_path: Path | None) -> None:
    """Check that no entry was edited, reordered, deleted or cut from the end.

    Exit status 0 when the chain is intact, 1 when it was tampered with (each problem names the
    entry), 2 when the trail cannot be found or read.
    """
    directory, trail = _trail(config_path, audit_dir)
    result = trail.verify()
    if result.ok:
        click.echo(
            f"OK: {result.entries} entries, hash chain intact up to entry {result.last_seq} "
            f"({result.last_hash[:16]}...), checkpoint matches."
        )
        return
    click.echo(f"TAMPERED: {directory} fails verification ({len(result.problems)} problems):")
    for problem in result.problems[:MAX_PROBLEMS_SHOWN]:
        click.echo(f"  {problem}")
    if len(result.problems) > MAX_PROBLEMS_SHOWN:
        click.echo(f"  ... and {len(result.problems) - MAX_PROBLEMS_SHOWN} more")
    sys.exit(1)


def _date_or_time(ctx: click.Context, param: click.Parameter, value: str | None) -> date | datetime | None:
    """A date (YYYY-MM-DD: a whole UTC day) or an ISO 8601 date and time (UTC if no offset)."""
    if value is None:
        return None
    text = value.strip()
    try:
        if len(text) == 10:
            return date.fromisoformat(text)
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(
            f"{text!r}: use a date like 2025-03-01 or a time like 2025-03-01T14:00Z"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _start(value: date | datetime) -> datetime:
    if isinstance(value, datetime):
        return value
    return datetime.combine(value, time.min, tzinfo=UTC)


def _end(value: date | datetime) -> datetime:
    # --until 2025-03-01 includes the whole of that day.
    if isinstance(value, datetime):
        return value
    return datetime.combine(value + timedelta(days=1), time.min, tzinfo=UTC)


def _cases(fields: Mapping[str, object]) -> list[str]:
    """The cases an entry concerns: a decision's or review's ``cases``, a case action's ``case``."""
    listed = fields.get("cases")
    if isinstance(listed, list):
        return [str(name) for name in listed]
    single = fields.get("case")
    return [str(single)] if isinstance(single, str) and fields.get("event") == "case" else []


def _what(fields: Mapping[str, object]) -> str:
    """The verdict of a decision; ``case <action>`` for a case action; else the event's name."""
    if fields.get("event") == "case":
        return f"case {fields.get('action', '')}".strip()
    return str(fields.get("verdict", fields.get("event", "")))


def _selected(
    trail: AuditPort,
    *,
    member: str | None,
    case: str | None,
    verdict: str | None,
    since: date | datetime | None,
    until: date | datetime | None,
    message_id: str | None,
    recipient: str | None,
) -> Iterator[tuple[StoredEntry, bool]]:
    salts = trail.salts()
    for entry in trail.entries():
        fields = entry.fields
        if member is not None and str(fields.get("member", "")).lower() != member.lower():
            continue
        if case is not None and case not in _cases(fields):
            continue
        if verdict is not None and fields.get("verdict") != verdict:
            continue
        moment = entry.time
        if since is not None and (moment is None or moment < _start(since)):
            continue
        if until is not None and (moment is None or moment >= _end(until)):
            continue
        salt = salts.get(entry.seq)
        if message_id is not None and not digest_matches(
            entry, salt, "message_id", normalise_message_id(message_id)
        ):
            continue
        if recipient is not None and not digest_matches(
            entry, salt, "recipients", normalise_address(recipient)
        ):
            continue
        yield entry, salt is not None


@audit.command("show")
@click.option("--member", help="Only decisions on mail submitted by this member (login).")
@click.option("--case", help="Only decisions with a finding about this case (code name).")
@click.option("--verdict", type=click.Choice(VERDICTS), help="Only this verdict.")
@click.option("--since", callback=_date_or_time, help="From this date (UTC; YYYY-MM-DD or ISO time).")
@click.option("--until", callback=_date_or_time, help="Up to and including this date (UTC).")
@click.option("--message-id", help="Only the message with this Message-ID (matched via the salted digest).")
@click.option("--recipient", help="Only mail to this address (matched via the salted digests).")
@click.option(
    "--json", "as_json", is_flag=True, help="Print the matching entries as JSON objects, one per line."
)
@audit_dir_option
@config_option
def show(
    member: str | None,
    case: str | None,
    verdict: str | None,
    since: date | datetime | None,
    until: date | datetime | None,
    message_id: str | None,
    recipient: str | None,
    as_json: bool,
    audit_dir: Path | None,
    config_path: Path | None,
) -> None:
    """List recorded decisions, oldest first. Identifying values appear only as salted digests;
    --message-id and --recipient find entries by recomputing them (not after an expunge)."""
    _, trail = _trail(config_path, audit_dir)
    selected = _selected(
        trail,
        member=member,
        case=case,
        verdict=verdict,
        since=since,
        until=until,
        message_id=message_id,
        recipient=recipient,
    )
    if as_json:
        for entry, linkable in selected:
            fields = dict(entry.fields)
            if not linkable and isinstance(fields.get("digests"), dict):
                # Without its salt a digest links to nothing: say so instead of showing noise.
                fields["digests"] = dict.fromkeys(fields["digests"], EXPUNGED)
            click.echo(json.dumps(fields, ensure_ascii=False, separators=(",", ":")))
        return
    header = ("SEQ", "TIME (UTC)", "REFERENCE", "MEMBER", "VERDICT", "REPLY", "RCPTS", "RULES", "CASES")
    rows = [header]
    for entry, _ in selected:
        values = entry.fields
        rows.append(
            (
                str(entry.seq),
                str(values.get("time", ""))[:19].replace("T", " "),
                str(values.get("queue_id", "")),
                str(values.get("member", values.get("by", ""))),
                _what(values),
                str(values.get("reply", "")),
                str(values.get("recipient_count", "")),
                ",".join(str(rule) for rule in values.get("rules") or []) or "-",
                ",".join(_cases(values)) or "-",
            )
        )
    if len(rows) == 1:
        click.echo("No matching entries.")
        return
    widths = [max(len(row[column]) for row in rows) for column in range(len(header))]
    for row in rows:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    click.echo(f"{len(rows) - 1} entries.")
