"""`conduct-gateway milter`: run the policy as a milter for an existing Postfix (or Sendmail)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import click

from gateway.cli import config_option
from gateway.logs import configure
from gateway.settings import find_config, load_settings


@click.command()
@config_option
@click.option(
    "--listen",
    default=None,
    metavar="SOCKET",
    help="inet:PORT@HOST or unix:PATH (default: milter.listen in the settings).",
)
def milter(config_path: Path | None, listen: str | None) -> None:
    """Serve the milter protocol until SIGTERM or Ctrl-C: every message Postfix passes on is judged by
    the same policy as in gateway mode (refused, rewritten, held in Postfix's hold queue, delivered).

    Point Postfix's smtpd_milters (and non_smtpd_milters, for sendmail and pickup) at it, with
    milter_default_action = tempfail, so nothing passes unscreened while it is down.
    """
    # Imported here so that other commands do not load the whole service.
    from gateway.milter_app import MilterGateway

    settings = load_settings(find_config(config_path))
    if listen is not None:
        settings = settings.model_copy(
            update={"milter": settings.milter.model_copy(update={"listen": listen})}
        )
    configure(settings.log_level, settings.logging.format)
    try:
        asyncio.run(MilterGateway(settings).run())
    except KeyboardInterrupt:
        click.echo("conduct-gateway: stopped", err=True)
        sys.exit(1)
    except OSError as exc:
        click.echo(f"conduct-gateway: cannot start the milter: {exc}", err=True)
        sys.exit(1)
