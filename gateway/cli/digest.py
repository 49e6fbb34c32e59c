"""`conduct-gateway digest show|send`: the committee digest on demand (the gateway sends it on schedule)."""

from __future__ import annotations

import asyncio
import datetime
from pathlib import Path

import click

from gateway.cli import config_option
from gateway.decision.digest import Period, Window, last_completed
from gateway.decision.digest_schedule import DigestSchedule, current_period
from gateway.decision.policy_source import load_policy_for
from gateway.errors import GatewayError
from gateway.settings import load_settings
from gateway.state.opening import open_state

_PERIOD = click.option(
    "--period",
    type=click.Choice(["daily", "weekly"]),
    default=None,
    help="Which period (default: digest.period in the settings).",
)
_CURRENT = click.option(
    "--current", is_flag=True, help="The period under way, so far (default: the last one ended)."
)


@click.group()
def digest() -> None:
    """The committee digest: counts of what the gateway did in a day or week, never any content."""


def _schedule(config_path: Path | None, period: str | None) -> DigestSchedule:
    settings = load_settings(config_path)
    kind = period or settings.digest.period
    if kind not in ("daily", "weekly"):
        raise GatewayError("digest.period is off in the settings: say which with --period daily or weekly")
    policy = load_policy_for(settings)[0]
    state = open_state(settings)
    chosen: Period = "daily" if kind == "daily" else "weekly"
    return DigestSchedule(
        chosen,
        audit=state.audit,
        spool=state.queue.open(),
        policy=lambda: policy,
        hostname=settings.server.hostname,
        recipients=settings.digest.to,
    )


def _window(schedule: DigestSchedule, current: bool) -> Window:
    now = datetime.datetime.now(datetime.UTC)
    return current_period(schedule.kind, now) if current else last_completed(schedule.kind, now)


@digest.command("show")
@_PERIOD
@_CURRENT
@config_option
def show(period: str | None, current: bool, config_path: Path | None) -> None:
    """Print the digest (what the committee's mail says), from the audit trail and the queue."""
    schedule = _schedule(config_path, period)
    click.echo(schedule.text(_window(schedule, current)))


@digest.command("send")
@_PERIOD
@_CURRENT
@config_option
def send(period: str | None, current: bool, config_path: Path | None) -> None:
    """Queue the digest for the committee now (the scheduled one still goes out when its period ends)."""
    schedule = _schedule(config_path, period)
    window = _window(schedule, current)
    if not asyncio.run(schedule.send(window, scheduled=False)):
        raise GatewayError("the digest could not be queued; see the log")
    click.echo(f"Queued the {schedule.kind} digest from {window.start.date()} for delivery.")
