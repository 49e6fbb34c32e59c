"""`conduct-gateway case expunge CODE`: remove a case's identities from every store, for good."""

from __future__ import annotations

from pathlib import Path

import click

from gateway.cli import config_option
from gateway.decision.expunge import Stores, expunge_case
from gateway.policy.loader import read_policy
from gateway.settings import load_settings
from gateway.state.opening import open_state


@click.command("expunge")
@click.argument("code")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation (for scripts).")
@config_option
def expunge(code: str, yes: bool, config_path: Path | None) -> None:
    """Expunge case CODE now: its people's names, aliases, addresses and usernames are removed.

    From the case registry (replaced by "Expunged"), the protected-content fingerprints, the
    thread ledger, held messages and delivered mail kept in the spool; the audit trail keeps its
    entries (`audit verify` still passes) but their identifying digests become unreadable. The
    case's code name stays. This cannot be undone. A case past its `expunge_on` date is expunged
    by the running gateway on its own.
    """
    settings = load_settings(config_path)
    policy_cases = read_policy(settings.policy.path)[0].cases
    if not yes:
        click.confirm(
            f"Expunge case {code!r}? Its identities are removed from every store for good.", abort=True
        )
    stores = Stores(open_state(settings))
    report = expunge_case(code, stores, policy_cases=policy_cases)
    for line in report.lines():
        click.echo(line)
