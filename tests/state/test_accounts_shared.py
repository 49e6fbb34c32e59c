"""Accounts through the state's port on either backend, and shared by several gateways on PostgreSQL."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from click.testing import CliRunner

from gateway.cli import main
from gateway.decision.policy_source import PolicySource, ReloadResult
from gateway.settings import GatewaySettings
from gateway.state.opening import State, open_state
from gateway.state.postgresql.opening import close_shared_databases

POLICY = """\
organisation:
  conduct_address: conduct@example.org
  members:
    - name: Ada Member
      addresses: [ada@example.org]
    - name: Ben Member
      addresses: [ben@example.org]
rules:
  - rule: conduct-cc
    action: rewrite
"""


def test_no_accounts_until_one_is_added_then_an_empty_roster_once_all_are_gone(state: State) -> None:
    assert not state.accounts.exists()
    assert state.accounts.roster() is None  # not in use: the policy's members are the committee
    before = state.accounts.seen()
    state.accounts.open().add("ada@example.org", "a long password", aliases=["ada@home.example.net"])
    assert state.accounts.exists()
    assert state.accounts.seen() != before
    roster = state.accounts.roster()
    assert roster is not None
    assert roster.owner_of("ADA@home.example.net") == "ada@example.org"
    state.accounts.open().remove("ada@example.org")
    roster = state.accounts.roster()
    assert roster is not None and roster.accounts == ()


def _yaml(settings: GatewaySettings, folder: Path) -> Path:
    postgresql = settings.state.postgresql
    config = folder / "gateway.yaml"
    config.write_text(
        f"state_dir: {settings.state_dir}\n"
        f"policy:\n  path: {folder / 'policy.yaml'}\n"
        f"registry:\n  key_env: null\n  key_file: {settings.registry.key_file}\n"
        "state:\n  backend: postgresql\n  postgresql:\n"
        f'    dsn: "{postgresql.dsn}"\n    password_file: {postgresql.password_file}\n'
    )
    return config


@pytest.fixture
def two_gateways(postgresql_settings: GatewaySettings, tmp_path: Path) -> tuple[State, State, Path]:
    """Two gateways' states on one database (each its own State, as on two hosts), and the CLI's
    settings file. The users file named by the settings is never made."""
    (tmp_path / "policy.yaml").write_text(POLICY)
    config = _yaml(postgresql_settings, tmp_path)
    return open_state(postgresql_settings), open_state(postgresql_settings), config


def _user(config: Path, *args: str) -> None:
    result = CliRunner().invoke(main, ["user", *args, "--config", str(config)], input="a long password\n")
    assert result.exit_code == 0, result.output


def test_an_account_added_on_one_gateway_logs_in_on_the_other_without_restart(
    two_gateways: tuple[State, State, Path], postgresql_settings: GatewaySettings
) -> None:
    first, second, config = two_gateways
    on_first, on_second = first.accounts.open(), second.accounts.open()
    _user(config, "add", "ada@example.org", "--password-stdin")
    assert on_first.members() == [] and on_second.members() == []  # as of when they were opened
    on_second.reload_if_changed()  # what the gateway's poll does every two seconds
    assert on_second.verify("ada@example.org", "a long password") == "ada@example.org"
    _user(config, "remove", "ada@example.org")
    on_first.reload_if_changed()
    on_second.reload_if_changed()
    assert on_first.members() == [] and on_second.members() == []
    assert not postgresql_settings.auth.users_file.exists()  # nothing went to a users file


def test_on_an_event_loop_the_accounts_never_wait_on_the_database(
    two_gateways: tuple[State, State, Path],
) -> None:
    gateway, _other, config = two_gateways
    accounts = gateway.accounts.open()
    _user(config, "add", "ada@example.org", "--password-stdin")

    async def on_the_loop() -> tuple[list[str], list[str]]:
        accounts.reload_if_changed()  # returns at once: no query on the loop
        skipped = accounts.members()
        await asyncio.to_thread(accounts.reload_if_changed)  # the poll, on a thread
        return skipped, accounts.members()

    skipped, polled = asyncio.run(on_the_loop())
    assert skipped == [] and polled == ["ada@example.org"]


def test_the_committee_in_force_follows_the_shared_accounts_on_every_gateway(
    two_gateways: tuple[State, State, Path], tmp_path: Path
) -> None:
    first, second, config = two_gateways
    policy = tmp_path / "policy.yaml"
    _user(config, "add", "ada@example.org", "--password-stdin")
    on_second = PolicySource.load(policy, second.cases, second.accounts)
    assert "ada@example.org" in on_second.policy.committee
    assert "ben@example.org" not in on_second.policy.committee  # no account: an outsider
    _user(config, "add", "ben@example.org", "--password-stdin")  # through "the other host's" CLI
    assert on_second.reload_if_changed() is ReloadResult.RELOADED
    assert "ben@example.org" in on_second.policy.committee
    on_first = PolicySource.load(policy, first.cases, first.accounts)
    assert on_first.policy.version == on_second.policy.version  # the same accounts, the same version
    close_shared_databases()


def test_two_gateways_starting_at_once_make_one_demo_account(
    postgresql_settings: GatewaySettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gateway import app

    first = app.create_demo_account(postgresql_settings)
    assert first is not None
    # The second gateway looked before the first made it (both saw no accounts yet).
    monkeypatch.setattr(app, "wants_demo_account", lambda settings: True)
    assert app.create_demo_account(postgresql_settings) is None
    accounts = open_state(postgresql_settings).accounts.open()
    assert accounts.members() == [app.DEMO_ADDRESS]
    assert accounts.verify(app.DEMO_ADDRESS, first.password) == app.DEMO_ADDRESS  # the first one's
    close_shared_databases()
