"""`conduct-gateway case rekey|new-key`: the case registry's encryption key.

Registered on the `case` group by ``gateway.cli``; kept apart from the commands that edit cases.
"""

from __future__ import annotations

from pathlib import Path

import click

from gateway.cli import config_option
from gateway.cli.auditing import record_case_action
from gateway.cli.case import count_of
from gateway.errors import GatewayError
from gateway.settings import load_settings
from gateway.state.opening import open_state
from gateway.state.registry import CaseRegistry, write_key_file


@click.command("rekey")
@click.argument("new_key_file", metavar="NEW_KEY_FILE", type=click.Path(path_type=Path, dir_okay=False))
@config_option
def rekey(new_key_file: Path, config_path: Path | None) -> None:
    """Re-encrypt the case registry with the key in NEW_KEY_FILE (made with `case new-key`).

    Afterwards point registry.key_file at NEW_KEY_FILE (or put its content in the key's environment
    variable) and restart the gateway. Until then a running gateway cannot read the re-encrypted
    registry: it keeps the cases it has in force and logs that the registry cannot be decrypted.
    """
    settings = load_settings(config_path)
    registry = open_state(settings).cases
    new_key = CaseRegistry.key_from_file(new_key_file)
    if new_key.secret == registry.key().secret:
        raise GatewayError(f"{new_key_file} holds the key the registry is already encrypted with")
    count = registry.rekey(new_key)
    record_case_action(settings, "rekey", "*", cases=count)
    click.echo(
        f"Re-encrypted the case registry {registry.path} ({count_of(count, 'case', 'cases')}) with the key "
        f"in {new_key_file}. Now set registry.key_file to {new_key_file} (or put its content in the "
        f"{settings.registry.key_env or 'key'} environment variable) and restart the gateway. Destroy the "
        "old key once no backup you keep needs it."
    )


@click.command("new-key")
@click.argument("key_file", metavar="FILE", type=click.Path(path_type=Path, dir_okay=False))
def new_key(key_file: Path) -> None:
    """Write a new random registry key to FILE (0600; never overwrites). Point registry.key_file at it,
    or put its content in the CONDUCT_REGISTRY_KEY environment variable."""
    write_key_file(key_file)
    click.echo(
        f"Wrote a new case registry key to {key_file} (mode 0600). "
        "Keep a copy apart from the registry's backups."
    )
