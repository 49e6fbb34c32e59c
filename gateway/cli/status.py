"""`conduct-gateway status`: every gateway on this state and the policy version each judges under."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path

import click

from gateway.cli import config_option
from gateway.cli.tables import emit, json_option
from gateway.decision.policy_source import load_policy_for
from gateway.errors import GatewayError
from gateway.settings import load_settings
from gateway.state.instances import InstanceRecord, policy_versions
from gateway.state.opening import open_state


@click.command()
@json_option
@config_option
def status(as_json: bool, config_path: Path | None) -> None:
    """List the gateways running on this state (PostgreSQL), each with its host, start time and the
    policy version it judges under, and say plainly when the versions differ.

    A gateway not seen for a minute is listed as not seen (it died, or lost the database) and left
    out of the comparison. The last line compares with the policy these settings' files compile to
    now. Exit status 0 when every live gateway runs the same version, 1 when they differ.
    """
    settings = load_settings(config_path)
    state = open_state(settings)
    try:
        here = load_policy_for(settings)[0].version
    except GatewayError as exc:
        here = f"cannot be loaded: {exc}"
    if not state.instances.shared:
        if as_json:
            emit((), (), [], as_json=True)
            return
        click.echo(
            f"state.backend is files ({settings.state_dir}): one gateway owns the state, no others to "
            f"compare with. Policy version from the files here: {here}."
        )
        return
    records = state.instances.instances()
    if as_json:
        emit((), (), [_record(r) for r in records], as_json=True)
    else:
        rows = [
            (
                r.instance,
                r.hostname,
                _when(r.started_at),
                r.policy_version or "-",
                r.version,
                "yes" if r.live else f"not seen for {r.seen_seconds_ago:.0f}s",
            )
            for r in records
        ]
        emit(("INSTANCE", "HOST", "STARTED", "POLICY VERSION", "SOFTWARE", "LIVE"), rows, (), as_json=False)
    versions = policy_versions(records)
    if as_json:
        sys.exit(1 if len(versions) > 1 else 0)
    if not records:
        click.echo("No gateway is running on this state.")
    elif len(versions) > 1:
        click.echo(
            f"The running gateways judge under DIFFERENT policy versions ({', '.join(sorted(versions))}): "
            "give every host the same policy files and case registry key, then reload them (SIGHUP)."
        )
    else:
        live = sum(r.live for r in records)
        click.echo(f"{live} live gateway(s), all on policy version {next(iter(versions), '-')}.")
    click.echo(f"Policy version from the files here: {here}.")
    if len(versions) > 1:
        sys.exit(1)


def _record(record: InstanceRecord) -> dict[str, object]:
    return {
        "instance": record.instance,
        "hostname": record.hostname,
        "started_at": _when(record.started_at),
        "policy_version": record.policy_version,
        "version": record.version,
        "seen_seconds_ago": round(record.seen_seconds_ago, 1),
        "live": record.live,
    }


def _when(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
