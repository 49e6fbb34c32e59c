"""`conduct-gateway serve`: run the gateway in the foreground until SIGTERM or Ctrl-C."""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path

import click

from gateway.cli import config_option
from gateway.errors import GatewayError
from gateway.logs import configure, log_event, raised_at
from gateway.settings import find_config, load_settings

log = logging.getLogger("gateway.app")


@click.command()
@config_option
def serve(config_path: Path | None) -> None:
    """Run the SMTP listeners, delivery and the metrics endpoint until SIGTERM or Ctrl-C.

    SIGTERM and Ctrl-C stop gracefully: no new connections, transactions in flight may finish within
    shutdown_grace, delivery finishes its attempts, the spool is left consistent, exit status 0.
    A second signal stops at once (the spool stays consistent; unfinished work resumes at the next
    start). SIGHUP re-reads the users file. An invalid settings file stops with exit status 2.
    """
    # Imported here so that `user` and `queue` commands do not load the whole service.
    from gateway.app import Gateway

    config_path = find_config(config_path)
    settings = load_settings(config_path)
    configure(settings.log_level, settings.logging.format)
    # Hints name the program as it was started (`.venv/bin/conduct-gateway`), so they can be pasted.
    program = sys.argv[0] if Path(sys.argv[0]).name == "conduct-gateway" else "conduct-gateway"
    gateway = Gateway(settings, config_path=config_path, program=program)
    try:
        asyncio.run(gateway.run())
    except (asyncio.CancelledError, KeyboardInterrupt):
        # A second SIGTERM/Ctrl-C, or Ctrl-C before the handlers were in place.
        click.echo("conduct-gateway: stopped without waiting for work in flight", err=True)
        sys.exit(1)
    except ExceptionGroup as group:
        # Failures inside the task group arrive wrapped: show ours like any other (one paragraph, exit
        # 2), and an unexpected one with its traceback in the log.
        first = _leaf(group)
        if isinstance(first, GatewayError):
            # Where it came from goes to the log on one line (an operator's report needs it); the
            # terminal gets the one paragraph.
            log_event(log, "gateway_stopped", logging.ERROR, error=str(first), raised_at=raised_at(first))
            raise first from None
        log.error("the gateway stopped on an internal error", exc_info=group)
        sys.exit(1)
    except OSError as exc:
        click.echo(f"conduct-gateway: cannot start: {exc}", err=True)
        sys.exit(1)


def _leaf(group: BaseExceptionGroup[BaseException]) -> BaseException:
    first = group.exceptions[0]
    return _leaf(first) if isinstance(first, BaseExceptionGroup) else first
