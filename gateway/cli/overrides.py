"""`conduct-gateway override list|show`: the overrides senders made, with their justifications."""

from __future__ import annotations

import datetime
import json
from pathlib import Path

import click

from gateway.cli import config_option
from gateway.cli.tables import emit, json_option
from gateway.errors import ConfigError
from gateway.settings import load_settings
from gateway.state.opening import open_state
from gateway.state.ports import OverridesPort


@click.group()
def override() -> None:
    """Overrides of `overridable` rules: who, which rules, and why (committee eyes only)."""


def _store(config_path: Path | None) -> OverridesPort | None:
    opener = open_state(load_settings(config_path)).overrides
    return opener.open() if opener.exists() else None


def _time(at: float) -> str:
    return datetime.datetime.fromtimestamp(at, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S")


@override.command("list")
@click.option("--days", default=30, show_default=True, type=click.IntRange(1, 3660), help="How far back.")
@json_option
@config_option
def list_overrides(days: int, as_json: bool, config_path: Path | None) -> None:
    """The overrides of the last DAYS days: reference, time, member, rules (no justification)."""
    store = _store(config_path)
    since = datetime.datetime.now(datetime.UTC).timestamp() - days * 86400
    records = store.since(since) if store is not None else []
    if store is not None:
        store.close()
    rows = [(r.reference, _time(r.at), r.sender, ", ".join(r.rules)) for r in records]
    emit(
        ("REFERENCE", "TIME (UTC)", "MEMBER", "RULES"),
        rows,
        [
            {"reference": r.reference, "time": _time(r.at), "member": r.sender, "rules": list(r.rules)}
            for r in records
        ],
        as_json,
    )
    if not as_json and not rows:
        click.echo(f"No overrides in the last {days} days.")


@override.command("show")
@click.argument("reference")
@config_option
def show(reference: str, config_path: Path | None) -> None:
    """One override with the member's justification (which may name people: keep it in the committee)."""
    store = _store(config_path)
    record = store.find(reference) if store is not None else None
    if store is not None:
        store.close()
    if record is None:
        raise ConfigError(f"no override with reference {reference}")
    click.echo(
        json.dumps(
            {
                "reference": record.reference,
                "time": _time(record.at),
                "member": record.sender,
                "rules": list(record.rules),
                "queue_id": record.queue_id,  # the message it let through
                "case": record.case,  # its thread's case (code name), if any
                "justification": record.justification,
            },
            indent=2,
            ensure_ascii=False,
        )
    )
