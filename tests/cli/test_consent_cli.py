"""`conduct-gateway case consent [--expires] [--withdraw]`: recorded, relied on, withdrawn, all audited."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.decision.policy_screener import PolicyScreener
from gateway.decision.policy_source import ReloadResult
from gateway.decision.screening import Accept
from gateway.replies import Reply
from gateway.settings import load_settings
from gateway.state.audit import audit_dir
from gateway.state.audit_reading import read_entries
from tests.cli.test_case_registry_cli import (
    NAME,
    OUTSIDER,
    add_reporter,
    assert_no_identity,
    case_entries,
    cli,
    new_case,
    ok,
    registry_of,
    submission,
)

REFERENCE = f"{NAME}'s mail of 2025-01-02, case folder"  # admins do write names in references


def record(config: Path, code: str, person: str, *extra: str) -> str:
    args = ["--recipient", OUTSIDER, "--reference", REFERENCE, "--date", "2025-01-02", *extra]
    out = ok(cli(config, "consent", code, person, *args)).stdout
    assert_no_identity(out)
    return out.split("Recorded consent ", 1)[1].split(" ", 1)[0]


def decision_findings(config: Path) -> list[dict[str, object]]:
    state = load_settings(config).state_dir
    return [
        finding
        for entry in read_entries(audit_dir(state))
        if entry.fields["event"] == "decision"
        for finding in entry.fields["findings"]
    ]


def test_a_consent_relied_on_then_withdrawn_is_audited_by_key_and_date(config_file: Path) -> None:
    code = new_case(config_file)
    person = add_reporter(config_file, code)
    key = record(config_file, code, person, "--expires", "2099-01-01")
    settings = load_settings(config_file)
    with PolicyScreener.from_settings(settings) as screener:
        relied = screener.screen(submission("Hello", f"{NAME} agreed to be named.", OUTSIDER, "Q1"))
        assert isinstance(relied, Accept), relied
        assert "consent:CONSENT_RELIED_ON" in relied.findings
        screener.accepted(submission("Hello", f"{NAME} agreed to be named.", OUTSIDER, "Q1"), relied)
        screener.flush_decisions()

        withdrawn = ok(cli(config_file, "consent", code, person, "--recipient", OUTSIDER, "--withdraw"))
        assert f"Withdrew 1 consent(s) of {person} in case {code} ({key})" in withdrawn.stdout
        assert screener.reload_if_changed() is ReloadResult.RELOADED
        refused = screener.screen(submission("Hello", f"{NAME} agreed to be named.", OUTSIDER, "Q2"))
        assert isinstance(refused, Reply) and refused.code == 550
        screener.review_housekeeping()  # case actions queued while the gateway holds the trail

    consent_findings = [f for f in decision_findings(config_file) if f["rule"] == "consent"]
    assert [(f["code"], f["consent"], f["consent_date"], f["action"]) for f in consent_findings] == [
        ("CONSENT_RELIED_ON", key, "2025-01-02", "audit"),
        ("CONSENT_WITHDRAWN", key, "2025-01-02", "audit"),
    ]
    actions = [
        (e["action"], e.get("consent"), e.get("consents"), e.get("expires"))
        for e in case_entries(config_file)
    ]
    assert ("consent", key, None, "2099-01-01") in actions
    assert ("consent-withdrawn", None, [key], None) in actions
    state = load_settings(config_file).state_dir
    trail = b"".join(path.read_bytes() for path in audit_dir(state).iterdir())
    assert_no_identity(trail)
    assert REFERENCE.encode() not in trail and b"case folder" not in trail
    [stored] = [c for c in registry_of(config_file).cases() if c.code == code]
    assert stored.consents[0].withdrawn is not None and stored.consents[0].expires is not None


def test_an_expired_consent_lifts_nothing(config_file: Path) -> None:
    code = new_case(config_file)
    person = add_reporter(config_file, code)
    record(config_file, code, person, "--expires", "2025-02-01")  # long past
    with PolicyScreener.from_settings(load_settings(config_file)) as screener:
        refused = screener.screen(submission("Hello", f"{NAME} agreed to be named.", OUTSIDER, "Q1"))
        assert isinstance(refused, Reply) and refused.code == 550
    assert [f["code"] for f in decision_findings(config_file) if f["rule"] == "consent"] == [
        "CONSENT_EXPIRED"
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(["--withdraw"], "no consent of", id="nothing-to-withdraw"),
        pytest.param(["--withdraw", "--reference", "r"], "--withdraw takes no", id="withdraw-with-reference"),
        pytest.param(["--reference", "r"], "give --reference and --date", id="record-without-date"),
        pytest.param(
            ["--reference", "r", "--date", "2025-01-02", "--expires", "2025-01-01"],
            "expires must be later than date",
            id="expiry-before-the-date",
        ),
    ],
)
def test_mistakes_are_one_clear_paragraph(config_file: Path, args: list[str], message: str) -> None:
    code = new_case(config_file)
    person = add_reporter(config_file, code)
    result = cli(config_file, "consent", code, person, "--recipient", OUTSIDER, *args)
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output, (
        result.output
    )
