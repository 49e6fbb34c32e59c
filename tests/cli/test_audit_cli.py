"""`conduct-gateway audit verify|show`."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from gateway.cli import main
from gateway.state.audit import AuditTrail, DecisionRecord, FindingRecord, audit_dir
from gateway.state.audit_format import LOG_NAME


class Clock:
    """Each entry one day later than the previous one, from 2025-03-01."""

    def __init__(self) -> None:
        self.day = 0

    def __call__(self) -> datetime:
        self.day += 1
        return datetime(2025, 3, self.day, 12, 0, tzinfo=UTC)


def record(
    queue_id: str, member: str, verdict: str, case: str | None, recipients: tuple[str, ...]
) -> DecisionRecord:
    findings = (
        (FindingRecord("reporter-protection", "PROTECTED_NAME", "name", "reject", case),) if case else ()
    )
    return DecisionRecord(
        queue_id=queue_id,
        member=member,
        verdict=verdict,
        reply="550 5.7.1" if verdict == "reject" else "250",
        policy_version="0123456789abcdef",
        findings=findings,
        message_id=f"<{queue_id.lower()}@example.org>",
        recipients=recipients,
        message=queue_id.encode(),
    )


@pytest.fixture
def trail_dir(config_file: Path) -> Path:
    """Four decisions on 1-4 March in the state folder of the settings file from tests/cli/conftest.py."""
    directory = audit_dir(config_file.parent / "state")
    with AuditTrail.open(directory, clock=Clock()) as trail:
        trail.record_decision(record("Q1", "ada@example.org", "deliver", None, ("olive@example.net",)))
        trail.record_decision(record("Q2", "ada@example.org", "reject", "home shelf", ("mod@example.net",)))
        trail.record_decision(record("Q3", "ben@example.org", "rewrite", None, ("olive@example.net",)))
        trail.record_decision(record("Q4", "ben@example.org", "reject", "stunned bulb", ("x@example.net",)))
    return directory


def audit(config_file: Path, *args: str) -> Result:
    return CliRunner().invoke(main, ["audit", *args, "--config", str(config_file)])


def shown(config_file: Path, *args: str) -> list[str]:
    result = audit(config_file, "show", "--json", *args)
    assert result.exit_code == 0, result.output
    return [json.loads(line)["queue_id"] for line in result.output.splitlines()]


def test_verify_ok(config_file: Path, trail_dir: Path) -> None:
    result = audit(config_file, "verify")
    assert result.exit_code == 0, result.output
    assert result.output.startswith("OK: 4 entries, hash chain intact up to entry 4")


def test_verify_names_the_edited_entry_and_exits_1(config_file: Path, trail_dir: Path) -> None:
    log = trail_dir / LOG_NAME
    lines = log.read_bytes().splitlines(keepends=True)
    lines[1] = lines[1].replace(b'"verdict":"reject"', b'"verdict":"deliver"')
    log.write_bytes(b"".join(lines))
    result = audit(config_file, "verify")
    assert result.exit_code == 1
    assert "TAMPERED" in result.output
    assert "entry 2 (line 2): content does not match its hash (edited)" in result.output


def test_verify_names_a_cut_tail(config_file: Path, trail_dir: Path) -> None:
    log = trail_dir / LOG_NAME
    log.write_bytes(b"".join(log.read_bytes().splitlines(keepends=True)[:2]))
    result = audit(config_file, "verify")
    assert result.exit_code == 1
    assert "entries 3-4: missing at the end of the log, which stops at entry 2" in result.output


def test_verify_without_a_trail_is_a_clear_error(config_file: Path) -> None:
    result = audit(config_file, "verify")
    assert result.exit_code == 2
    assert "no audit trail here" in result.output


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        pytest.param((), ["Q1", "Q2", "Q3", "Q4"], id="all"),
        pytest.param(("--member", "BEN@example.org"), ["Q3", "Q4"], id="member"),
        pytest.param(("--case", "home shelf"), ["Q2"], id="case"),
        pytest.param(("--verdict", "reject"), ["Q2", "Q4"], id="verdict"),
        pytest.param(("--since", "2025-03-02"), ["Q2", "Q3", "Q4"], id="since"),
        pytest.param(("--until", "2025-03-02"), ["Q1", "Q2"], id="until-inclusive"),
        pytest.param(("--since", "2025-03-02", "--until", "2025-03-03"), ["Q2", "Q3"], id="between"),
        pytest.param(("--since", "2025-03-03T11:00:00Z"), ["Q3", "Q4"], id="since-time"),
        pytest.param(("--verdict", "reject", "--member", "ada@example.org"), ["Q2"], id="combined"),
        pytest.param(("--recipient", "Olive@Example.net"), ["Q1", "Q3"], id="recipient"),
        pytest.param(("--message-id", "<q3@example.org>"), ["Q3"], id="message-id"),
    ],
)
def test_show_filters(config_file: Path, trail_dir: Path, args: tuple[str, ...], expected: list[str]) -> None:
    assert shown(config_file, *args) == expected


def test_show_table(config_file: Path, trail_dir: Path) -> None:
    result = audit(config_file, "show", "--case", "stunned bulb")
    assert result.exit_code == 0, result.output
    header, row, total = result.output.splitlines()
    assert header.split() == [
        "SEQ",
        "TIME",
        "(UTC)",
        "REFERENCE",
        "MEMBER",
        "VERDICT",
        "REPLY",
        "RCPTS",
        "RULES",
        "CASES",
    ]
    assert row.split()[:8] == [
        "4",
        "2025-03-04",
        "12:00:00",
        "Q4",
        "ben@example.org",
        "reject",
        "550",
        "5.7.1",
    ]
    assert row.endswith("reporter-protection  stunned bulb")
    assert total == "1 entries."
    assert "olive" not in result.output and "example.net" not in result.output


def test_show_bad_date_is_a_usage_error(config_file: Path, trail_dir: Path) -> None:
    result = audit(config_file, "show", "--since", "March")
    assert result.exit_code == 2
    assert "use a date like 2025-03-01" in result.output


def test_after_expunge_digests_read_expunged_and_verify_passes(config_file: Path, trail_dir: Path) -> None:
    with AuditTrail.open(trail_dir) as trail:
        trail.forget_salts([2])
    assert shown(config_file, "--recipient", "mod@example.net") == []
    result = audit(config_file, "show", "--json", "--case", "home shelf")
    entry = json.loads(result.output)
    assert set(entry["digests"].values()) == {"expunged"}
    assert audit(config_file, "verify").exit_code == 0


def test_audit_dir_option_reads_a_copy(trail_dir: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["audit", "verify", "--audit-dir", str(trail_dir)])
    assert result.exit_code == 0, result.output
