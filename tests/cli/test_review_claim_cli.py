"""`review claim` and `review approve --comment`: claims are listed and shown, comments reach the sender."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from gateway.cli import main
from gateway.decision.policy_screener import PolicyScreener
from gateway.review.rights import account_check
from gateway.settings import AuthSettings, GatewaySettings, PolicySettings, ServerSettings
from gateway.state.accounts import Accounts
from gateway.state.audit_reading import read_entries
from gateway.state.holds import HoldStore
from gateway.state.layout import StateLayout
from gateway.state.spool import Spool
from gateway.state.spool_records import QueueState
from tests.cli.conftest import write_config
from tests.test_offboarding import FAST, MEMBERS, POLICY, hold

COMMENT = "Approved, but mind the dates next time"


def prepare(tmp_path: Path) -> tuple[GatewaySettings, Path]:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY.replace("severity: severe", "severity: normal"), encoding="utf-8")
    users = tmp_path / "users.passwd"
    accounts = Accounts.load(users, FAST)
    for name in MEMBERS:
        accounts.add(f"{name}@example.org", "a long password")
    settings = GatewaySettings(
        state_dir=tmp_path / "state",
        policy=PolicySettings(path=policy),
        server=ServerSettings(hostname="gateway.example.test"),
        auth=AuthSettings(users_file=users),
    )
    with PolicyScreener.from_settings(settings, has_account=account_check(accounts)) as screener:
        hold(screener)
    return settings, write_config(tmp_path, f"policy:\n  path: {policy}\n")


def spooled_to(settings: GatewaySettings, address: str) -> list[bytes]:
    spool = Spool(settings.state_dir / "spool")
    messages = [spool.load(e.queue_id) for e in spool.entries(QueueState.INCOMING)]
    return [m.content for m in messages if m.envelope.rcpt_tos == (address,)]


def test_a_claim_from_the_cli_is_listed_shown_and_told_to_the_other_reviewers(tmp_path: Path) -> None:
    settings, config = prepare(tmp_path)
    runner = CliRunner()
    claimed = runner.invoke(
        main, ["review", "claim", "Q1", "--as", "ben@example.org", "--config", str(config)]
    )
    assert claimed.exit_code == 0 and claimed.output.startswith("Claimed:"), claimed.output
    listed = runner.invoke(main, ["review", "list", "--json", "--config", str(config)])
    assert json.loads(listed.stdout)[0]["claimed_by"] == "ben@example.org"
    shown = runner.invoke(main, ["review", "show", "Q1", "--config", str(config)])
    assert "Claimed by:  Ben Member <ben@example.org>" in shown.output
    told = [m for m in spooled_to(settings, "cleo@example.org") if b"X-Conduct-Gateway-Notice: claimed" in m]
    assert len(told) == 1
    assert not [m for m in spooled_to(settings, "ada@example.org") if b"Notice: claimed" in m]
    refused = runner.invoke(
        main, ["review", "claim", "Q1", "--as", "ada@example.org", "--config", str(config)]
    )
    assert refused.exit_code == 2 and "cannot review it" in refused.output


def test_unclaim_from_the_cli_gives_the_hold_back_and_tells_the_other_reviewers(tmp_path: Path) -> None:
    settings, config = prepare(tmp_path)
    runner = CliRunner()

    def review(command: str, member: str) -> str:
        result = runner.invoke(main, ["review", command, "Q1", "--as", member, "--config", str(config)])
        assert result.exit_code == 0, result.output
        return result.output

    review("claim", "ben@example.org")
    assert review("unclaim", "cleo@example.org").startswith("Nothing to give back: Ben Member claimed it")
    assert review("unclaim", "ben@example.org").startswith("Unclaimed:")
    assert HoldStore.in_state_dir(settings.state_dir).get("Q1").claims == ()
    told = [m for m in spooled_to(settings, "cleo@example.org") if b"Notice: unclaimed" in m]
    assert len(told) == 1
    events = [e.fields.get("review") for e in read_entries(StateLayout(settings.state_dir).audit)]
    assert events[-2:] == ["claim", "unclaim"]


def test_an_approval_comment_from_the_cli_reaches_the_sender_and_not_the_audit_trail(tmp_path: Path) -> None:
    settings, config = prepare(tmp_path)
    runner = CliRunner()
    approved = runner.invoke(
        main,
        ["review", "approve", "Q1", "--as", "ben@example.org", "--comment", COMMENT, "--config", str(config)],
    )
    assert approved.exit_code == 0, approved.output
    assert HoldStore.in_state_dir(settings.state_dir).get("Q1").status == "released"
    letters = [m for m in spooled_to(settings, "ada@example.org") if b"Notice: approved" in m]
    assert len(letters) == 1 and COMMENT in " ".join(letters[0].decode().split())
    entries = list(read_entries(StateLayout(settings.state_dir).audit))
    assert any(e.fields.get("review") == "approve" for e in entries)  # the trail was read
    assert "mind the dates" not in repr(entries)
