"""`conduct-gateway review` on the PostgreSQL backend: a hold made by one gateway is listed, approved
and released from another host's command line, into the shared queue, exactly once."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from gateway.cli import main
from gateway.decision.policy_screener import PolicyScreener
from gateway.decision.screening import Accept, Submission
from gateway.settings import load_settings
from gateway.state.layout import StateLayout
from gateway.state.opening import open_state
from gateway.state.postgresql.opening import close_shared_databases
from gateway.state.spool import QueueState
from tests.cli.conftest import write_config
from tests.cli.test_review_cli import MESSAGE, POLICY
from tests.postgresql import ScratchDatabase


def host_config(folder: Path, database: ScratchDatabase) -> Path:
    folder.mkdir()
    policy = folder / "policy.yaml"
    policy.write_text(POLICY, encoding="utf-8")
    secret = folder / "pg-password"
    secret.write_text(database.password)
    secret.chmod(0o600)
    return write_config(
        folder,
        f"""
        policy:
          path: {policy}
        state:
          backend: postgresql
          postgresql:
            dsn: "{database.dsn}"
            password_file: {secret}
        """,
    )


@pytest.fixture
def hosts(tmp_path: Path, pg_database: ScratchDatabase) -> Iterator[tuple[Path, Path]]:
    """Two gateways' settings on one database; the first has held message Q1."""
    first, second = host_config(tmp_path / "a", pg_database), host_config(tmp_path / "b", pg_database)
    try:
        with PolicyScreener.from_settings(load_settings(first)) as screener:
            submission = Submission(
                "Q1", "ada@example.org", ("olive@example.net",), "ada@example.org", MESSAGE
            )
            result = screener.screen(submission)
            assert isinstance(result, Accept)
            screener.accepted(submission, result)
        key = StateLayout(load_settings(second).state_dir).fingerprint_key
        key.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(StateLayout(load_settings(first).state_dir).fingerprint_key, key)
        yield first, second
    finally:
        close_shared_databases()


def run(config: Path, *args: str) -> Result:
    return CliRunner().invoke(main, ["review", *args, "--config", str(config)])


def test_a_hold_from_one_gateway_is_approved_from_another_hosts_command_line_once(
    hosts: tuple[Path, Path],
) -> None:
    first, second = hosts
    listed = run(second, "list")
    assert listed.exit_code == 0, listed.output
    assert "Q1" in listed.output and "held" in listed.output

    approved = run(second, "approve", "Q1", "--as", "ben@example.org")
    assert approved.exit_code == 0, approved.output
    assert "Approved: message Q1 released" in approved.output
    again = run(first, "approve", "Q1", "--as", "ben@example.org")
    assert again.exit_code == 0 and "Already decided" in again.output

    queue = open_state(load_settings(first)).queue.open()
    released = [
        queue.load(e.queue_id)
        for e in queue.entries(QueueState.INCOMING)
        if e.envelope is not None and e.envelope.mail_from == "ada@example.org"
    ]
    assert len(released) == 1
    assert released[0].content.startswith(b"X-Conduct-Gateway-Approved-By: Ben Ink <ben@example.org>\r\n")
    record = open_state(load_settings(first)).holds.open().get("Q1")
    assert record.status == "released" and record.released and record.decisions[0].via == "cli"
