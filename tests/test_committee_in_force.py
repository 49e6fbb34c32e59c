"""Offboarding for the policy: `user remove` makes the member an outsider for the next message, no restart."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from argon2 import PasswordHasher
from click.testing import CliRunner

from gateway.cli import main
from gateway.decision.policy_screener import PolicyScreener
from gateway.decision.policy_source import ReloadResult, load_policy_for
from gateway.decision.screening import Accept, Submission
from gateway.replies import Reply
from gateway.settings import AuthSettings, GatewaySettings, PolicySettings, ReviewSettings, ServerSettings
from gateway.state.accounts import Accounts
from tests.cli.conftest import write_config

POLICY = """\
organisation:
  conduct_address: conduct@example.org
  members:
    - name: Ada Member
      addresses: [ada@example.org]
    - name: Ben Member
      addresses: [ben@example.org, ben@home.example.net]
rules:
  - rule: reporter-protection
    action: reject
cases:
  - code: home shelf
    reporters:
      - id: quiet-heron
        names: [Jin Park]
"""
FAST = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)


@pytest.fixture
def settings(tmp_path: Path) -> GatewaySettings:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY, encoding="utf-8")
    users = tmp_path / "users.passwd"
    accounts = Accounts.load(users, FAST)
    accounts.add("ada@example.org", "a long password")
    accounts.add("ben@example.org", "a long password")
    return GatewaySettings(
        state_dir=tmp_path / "state",
        policy=PolicySettings(path=policy),
        server=ServerSettings(hostname="gateway.example.test"),
        review=ReviewSettings(enabled=False),
        auth=AuthSettings(users_file=users),
    )


@pytest.fixture
def screener(settings: GatewaySettings) -> Iterator[PolicyScreener]:
    with PolicyScreener.from_settings(settings) as opened:
        yield opened


def naming_the_reporter(to: str, queue_id: str) -> Submission:
    content = (
        f"From: <ada@example.org>\r\nTo: <{to}>\r\nSubject: The report\r\n"
        f"Message-ID: <{queue_id}@example.org>\r\n\r\nJin Park reported it.\r\n"
    ).encode()
    return Submission(queue_id, "ada@example.org", (to,), "ada@example.org", content)


@pytest.mark.parametrize("address", ["ben@example.org", "ben@home.example.net"])
def test_user_remove_makes_every_address_of_the_member_an_outsider(
    settings: GatewaySettings, screener: PolicyScreener, address: str
) -> None:
    before = screener.screen(naming_the_reporter(address, "Q1"))
    assert isinstance(before, Accept), before  # Ben is on the committee: he may read the name

    config = write_config(settings.policy.path.parent, f"policy:\n  path: {settings.policy.path}\n")
    removed = CliRunner().invoke(main, ["user", "remove", "ben@example.org", "--config", str(config)])
    assert removed.exit_code == 0, removed.output
    assert "outside the committee from the next message on" in removed.output
    # What the running gateway does every few seconds (and at once on SIGHUP): no second edit.
    assert screener.reload_if_changed() is ReloadResult.RELOADED

    after = screener.screen(naming_the_reporter(address, "Q2"))
    assert isinstance(after, Reply) and after.code == 550, after
    # Policy workers load the policy themselves: they compile the same committee, the same version.
    assert load_policy_for(settings)[0].version == screener.policy_version


def test_a_member_added_back_is_inside_again(settings: GatewaySettings, screener: PolicyScreener) -> None:
    Accounts.load(settings.auth.users_file, FAST).remove("ben@example.org")
    assert screener.reload_if_changed() is ReloadResult.RELOADED
    assert isinstance(screener.screen(naming_the_reporter("ben@home.example.net", "Q1")), Reply)
    Accounts.load(settings.auth.users_file, FAST).add("ben@example.org", "another long password")
    assert screener.reload_if_changed() is ReloadResult.RELOADED
    assert isinstance(screener.screen(naming_the_reporter("ben@home.example.net", "Q2")), Accept)


def test_a_password_change_is_no_new_policy(settings: GatewaySettings, screener: PolicyScreener) -> None:
    version = screener.policy_version
    Accounts.load(settings.auth.users_file, FAST).set_password("ben@example.org", "a new long password")
    assert screener.reload_if_changed() is ReloadResult.UNCHANGED
    assert screener.policy_version == version


def test_a_users_file_that_disappears_leaves_nobody_inside(
    settings: GatewaySettings, screener: PolicyScreener
) -> None:
    # "No users file" must not mean "accounts not in use" for a running gateway: that would put
    # every member, removed ones included, back inside the committee.
    settings.auth.users_file.unlink()
    assert screener.reload_if_changed() is ReloadResult.RELOADED
    assert screener.source.policy.committee == frozenset()
    assert isinstance(screener.screen(naming_the_reporter("ada@example.org", "Q1")), Reply)


def test_a_broken_users_file_keeps_the_committee_in_force(
    settings: GatewaySettings, screener: PolicyScreener, caplog: pytest.LogCaptureFixture
) -> None:
    version = screener.policy_version
    settings.auth.users_file.write_text("this is not a users file\n", encoding="utf-8")
    with caplog.at_level(logging.ERROR):
        assert screener.reload_if_changed() is ReloadResult.REFUSED
    assert screener.policy_version == version
    assert "policy-reload-refused" in caplog.text


def test_a_difference_appearing_on_reload_is_logged(
    settings: GatewaySettings, screener: PolicyScreener, caplog: pytest.LogCaptureFixture
) -> None:
    Accounts.load(settings.auth.users_file, FAST).add("zed@example.org", "a long password")
    with caplog.at_level(logging.WARNING):
        assert screener.reload_if_changed() is ReloadResult.RELOADED
    assert "event=committee-differs-from-accounts" in caplog.text
    assert "account zed@example.org is not in organisation.members" in caplog.text
