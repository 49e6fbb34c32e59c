"""`conduct-gateway review list|show|approve|reject|expire` on a real hold store and spool."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from gateway.cli import main
from gateway.decision.policy_screener import PolicyScreener
from gateway.decision.screening import Accept, Submission
from gateway.settings import load_settings
from gateway.state.holds import HoldStore
from gateway.state.ledger import Ledger, ledger_path
from gateway.state.spool import QueueState, Spool
from tests.cli.conftest import write_config

POLICY = """\
organisation:
  conduct_address: conduct@example.org
  members:
    - name: Ada Quill
      addresses: [ada@example.org]
    - name: Ben Ink
      addresses: [ben@example.org]
rules:
  - rule: reporter-protection
    action: hold
cases:
  - code: home shelf
    reporters:
      - id: quiet heron
        names: [Jin Park]
"""
MESSAGE = (
    b"From: Ada Quill <ada@example.org>\r\nTo: <olive@example.net>\r\nSubject: Secret subject words\r\n"
    b"Message-ID: <c1@example.org>\r\nDate: Sat, 01 Mar 2025 10:00:00 +0000\r\n\r\n"
    b"Jin Park reported it. Body words.\r\n"
)


@pytest.fixture
def config(tmp_path: Path) -> Path:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY, encoding="utf-8")
    path = write_config(tmp_path, f"policy:\n  path: {policy}\n")
    settings = load_settings(path)
    with PolicyScreener.from_settings(settings) as screener:
        submission = Submission("Q1", "ada@example.org", ("olive@example.net",), "ada@example.org", MESSAGE)
        result = screener.screen(submission)
        assert isinstance(result, Accept)
        screener.accepted(submission, result)
    return path


def run(config: Path, *args: str) -> Result:
    return CliRunner().invoke(main, ["review", *args, "--config", str(config)])


def test_list_shows_reference_sender_reasons_status(config: Path) -> None:
    result = run(config, "list")
    assert result.exit_code == 0, result.output
    assert (
        "Q1" in result.output and "ada@example.org" in result.output and "PROTECTED_IDENTITY" in result.output
    )
    assert "held" in result.output and "0/1" in result.output
    assert "Secret" not in result.output


def test_list_columns_never_run_together(config: Path) -> None:
    lines = run(config, "list").stdout.splitlines()
    assert lines[0].split() == [
        "REFERENCE",
        "STATUS",
        "AGE",
        "EXPIRES",
        "IN",
        "SENDER",
        "APPROVALS",
        "CLAIMED",  # issue 18: who claimed the hold ("-": nobody)
        "BY",
        "REASONS",
    ]
    reasons_at = lines[0].index("REASONS")
    assert lines[1][reasons_at - 2 : reasons_at] == "  "
    assert "0/1PROTECTED" not in lines[1]


def test_list_as_json(config: Path) -> None:
    result = run(config, "list", "--json")
    assert result.exit_code == 0, result.output
    (held,) = json.loads(result.stdout)
    assert held["reference"] == "Q1"
    assert held["status"] == "held"
    assert (held["approvals"], held["required_approvals"]) == (0, 1)
    assert held["sender"] == "ada@example.org"
    assert "PROTECTED_IDENTITY" in held["reasons"]
    assert "Secret" not in result.stdout


def test_show_hides_subject_and_body(config: Path) -> None:
    result = run(config, "show", "Q1")
    assert result.exit_code == 0, result.output
    assert "PROTECTED_IDENTITY" in result.output and "Ben Ink" in result.output
    assert "Subject: (hidden" in result.output
    assert "Secret" not in result.output and "Body words" not in result.output


def test_the_sender_cannot_approve(config: Path) -> None:
    result = run(config, "approve", "Q1", "--as", "ada@example.org")
    assert result.exit_code == 2 and "cannot review it" in result.output


def test_a_non_member_cannot_approve(config: Path) -> None:
    result = run(config, "approve", "Q1", "--as", "olive@example.net")
    assert result.exit_code == 2 and "not a committee member" in result.output


def test_approve_releases_into_the_spool_and_is_audited(config: Path) -> None:
    result = run(config, "approve", "Q1", "--as", "ben@example.org")
    assert result.exit_code == 0, result.output
    assert "Approved: message Q1 released" in result.output
    settings = load_settings(config)
    spool = Spool(settings.state_dir / "spool")
    messages = [spool.load(e.queue_id) for e in spool.entries(QueueState.INCOMING)]
    [release] = [m for m in messages if m.envelope.mail_from == "ada@example.org"]
    assert release.content.startswith(b"X-Conduct-Gateway-Approved-By: Ben Ink <ben@example.org>\r\n")
    assert release.envelope.rcpt_tos == ("olive@example.net",)
    assert [m.envelope.rcpt_tos for m in messages if m.envelope.mail_from == ""] == [("ada@example.org",)]
    record = HoldStore.in_state_dir(settings.state_dir).get("Q1")
    assert record.status == "released" and record.released and record.decisions[0].via == "cli"
    again = run(config, "reject", "Q1", "--as", "ben@example.org", "--reason", "late")
    assert again.exit_code == 0 and "Already decided" in again.output


def test_a_message_released_with_the_cli_joins_its_thread_in_the_ledger(config: Path) -> None:
    state = load_settings(config).state_dir
    with Ledger.open(ledger_path(state)) as ledger:
        assert not ledger.lookup_parent(("<c1@example.org>",), ()).parent_known  # held: not sent yet
    result = run(config, "approve", "Q1", "--as", "ben@example.org")
    assert result.exit_code == 0, result.output
    with Ledger.open(ledger_path(state)) as ledger:
        parent = ledger.lookup_parent(("<c1@example.org>",), ())
    assert parent.parent_known
    assert {a.address for a in parent.parent_participants} >= {"ada@example.org", "olive@example.net"}


def test_reject_needs_a_reason_and_tells_the_sender(config: Path) -> None:
    assert run(config, "reject", "Q1", "--as", "ben@example.org", "--reason", "  ").exit_code == 2
    result = run(config, "reject", "Q1", "--as", "ben@example.org", "--reason", "names the reporter")
    assert result.exit_code == 0, result.output
    listed = run(config, "list", "--all")
    assert "rejected" in listed.output


def test_unknown_reference(config: Path) -> None:
    result = run(config, "show", "NOPE")
    assert result.exit_code == 2 and "no held message" in result.output


def test_expire_with_nothing_due(config: Path) -> None:
    result = run(config, "expire")
    assert result.exit_code == 0 and "0 notice(s)" in result.output


def test_config_text_is_valid(tmp_path: Path) -> None:
    # The review section is accepted in a settings file (durations with units).
    path = write_config(tmp_path, textwrap.dedent("review:\n  expiry: 2h\n  notices_per_hour: 5\n"))
    assert load_settings(path).review.expiry == 7200.0
