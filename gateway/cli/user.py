"""`conduct-gateway user add|list|remove|password`: manage committee members' accounts."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from gateway.cli import config_option
from gateway.cli.tables import json_option
from gateway.errors import AccountError, GatewayError
from gateway.settings import load_settings
from gateway.state.opening import open_state
from gateway.state.ports import AccountsPort

password_stdin_option = click.option(
    "--password-stdin",
    is_flag=True,
    help="Read the password from the first line of standard input (for scripts) instead of asking.",
)


@click.group()
def user() -> None:
    """Manage the accounts of committee members (the users file, argon2 hashes, mode 0600; with
    state.backend postgresql, the database every gateway shares).

    A running gateway picks changes up within seconds (or at once on SIGHUP), on every host.
    """


def _accounts(config_path: Path | None) -> AccountsPort:
    return open_state(load_settings(config_path)).accounts.open()


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            raise AccountError("--password-stdin: standard input held no password")
        return password
    entered: str = click.prompt(
        "Password", hide_input=True, confirmation_prompt="Repeat the password", show_default=False
    )
    return entered


@user.command()
@click.argument("address")
@click.option(
    "--alias",
    "aliases",
    multiple=True,
    metavar="ADDRESS",
    help="Another address this member may send as (repeat for several).",
)
@password_stdin_option
@config_option
def add(address: str, aliases: tuple[str, ...], password_stdin: bool, config_path: Path | None) -> None:
    """Add the member ADDRESS (also the login name). Asks for the password twice."""
    accounts = _accounts(config_path)
    password = _read_password(password_stdin)
    accounts.add(address, password, aliases)
    added = accounts.addresses_of(address)
    extra = (
        f" (also sends as {', '.join(sorted(added - {address.strip().lower()}))})" if len(added) > 1 else ""
    )
    click.echo(f"Added {address.strip().lower()}{extra} to {accounts.path}.")
    _name_differences(config_path, added)


def _name_differences(config_path: Path | None, addresses: frozenset[str]) -> None:
    """Warn where the new account and the policy's members disagree (best effort: the account is made)."""
    # Imported here: loading the policy pulls in the whole policy core, which `user list` never needs.
    from gateway.decision.policy_source import load_policy_for

    try:
        policy, _stamp = load_policy_for(load_settings(config_path))
    except GatewayError:
        return  # no usable policy (or registry key) here: `config validate` names the problem
    for note in policy.committee_notes:
        if any(address in note for address in addresses):
            click.echo(f"warning: {note}", err=True)


@user.command("list")
@json_option
@config_option
def list_(as_json: bool, config_path: Path | None) -> None:
    """List members' addresses (never their password hashes)."""
    accounts = _accounts(config_path)
    members = accounts.members()
    if as_json:
        listed = [{"address": member, "aliases": list(accounts.aliases_of(member))} for member in members]
        click.echo(json.dumps(listed, indent=2))
        return
    if not members:
        click.echo(
            f"No accounts in {accounts.path}. Add one with: conduct-gateway user add ADDRESS", err=True
        )
        return
    for member in members:
        aliases = accounts.aliases_of(member)
        click.echo(f"{member}  (also: {', '.join(aliases)})" if aliases else member)


@user.command()
@click.argument("address")
@config_option
def remove(address: str, config_path: Path | None) -> None:
    """Remove the member ADDRESS: they can no longer log in, send or review held messages, and they
    count as outside the committee for the policy (at every address the policy lists for them).

    Mail already accepted is still delivered. A running gateway notices within seconds (at once on
    SIGHUP): mail naming a protected person to any of their addresses is treated as mail to an
    outsider, the member's review reply addresses stop working, their approvals of messages still
    held stop counting, and those messages are sent for review again to the remaining eligible members.
    """
    accounts = _accounts(config_path)
    accounts.remove(address)
    click.echo(
        f"Removed {address.strip().lower()} from {accounts.path}. They can no longer send or review, and "
        "for the policy they are outside the committee from the next message on, at every address "
        "organisation.members lists for them; held messages awaiting their review go to the remaining "
        "members. Remove them from organisation.members too, to keep the two lists in step."
    )


@user.command()
@click.argument("address")
@password_stdin_option
@config_option
def password(address: str, password_stdin: bool, config_path: Path | None) -> None:
    """Set a new password for the member ADDRESS. Asks for it twice."""
    accounts = _accounts(config_path)
    if address.strip().lower() not in accounts.members():
        raise AccountError(f"{address} is not a member")
    accounts.set_password(address, _read_password(password_stdin))
    click.echo(f"Changed the password of {address.strip().lower()}.")
