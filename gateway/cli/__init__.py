"""The one console script, ``conduct-gateway``: every subcommand is registered here."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from gateway import __version__
from gateway.errors import GatewayError


class GatewayGroup(click.Group):
    """A click group that shows our own errors as one clear paragraph, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except GatewayError as exc:
            click.echo(f"conduct-gateway: {exc}", err=True)
            sys.exit(2)


config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    envvar="CONDUCT_GATEWAY_CONFIG",
    help=(
        "Settings file (default: $CONDUCT_GATEWAY_CONFIG, else ./config/gateway.yaml, "
        "else /etc/conduct-gateway/gateway.yaml)."
    ),
)


@click.group(cls=GatewayGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="conduct-gateway")
def main() -> None:
    """conduct-gateway: an SMTP policy gateway for people who handle sensitive reports."""


def _register() -> None:
    # Explicit registration: a misspelt or missing command fails loudly at import, never silently.
    from gateway.cli import (
        audit,
        case,
        case_keys,
        case_upkeep,
        check,
        config,
        consent,
        digest,
        expunge,
        milter,
        overrides,
        policy,
        queue,
        review,
        serve,
        state,
        status,
        user,
    )

    for command in (
        serve.serve,
        milter.milter,
        config.config,
        user.user,
        queue.queue,
        check.check,
        audit.audit,
        digest.digest,
        status.status,
    ):
        main.add_command(command)
    case.case.add_command(expunge.expunge)  # `case expunge`: gateway.decision.expunge
    case.case.add_command(consent.consent)  # `case consent` (recording and withdrawing): its own module
    case.case.add_command(case_keys.rekey)  # `case rekey` and `case new-key`: the registry's key
    case.case.add_command(case_keys.new_key)
    for upkeep in (case_upkeep.edit_person, case_upkeep.remove_person, case_upkeep.severity):
        case.case.add_command(upkeep)  # a case's upkeep: its own module
    main.add_command(case.case)
    main.add_command(review.review)
    main.add_command(state.state)
    main.add_command(policy.policy)
    main.add_command(overrides.override)


_register()
