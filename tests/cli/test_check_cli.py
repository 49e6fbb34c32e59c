"""`conduct-gateway check`: the full policy on a file, nothing sent, nothing recorded."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from gateway.cli import main
from gateway.policy.model import Address
from gateway.state.ledger import Ledger, ledger_path

POLICY = textwrap.dedent(
    """\
    organisation:
      conduct_address: conduct@example.org
      members:
        - name: Ada Quill
          addresses: [ada@example.org]
    rules:
      - rule: conduct-cc
        action: rewrite
      - rule: recipient-banner
        action: reject
      - rule: reporter-protection
        action: reject
    cases:
      - code: home shelf
        reporters:
          - id: quiet heron
            names: [Jin Park]
            aliases: [JP]
            addresses: [jin.park@example.net]
            usernames: [jinpark]
        witnesses:
          - id: bright lamp
            names: [Sam Lee]
            usernames: [samlee]
    """
)


@pytest.fixture
def configured(config_file: Path) -> Path:
    """The settings file from tests/cli/conftest.py, pointing at our test policy."""
    (config_file.parent / "policy.yaml").write_text(POLICY, encoding="utf-8")
    text = config_file.read_text(encoding="utf-8")
    before, _, _ = text.partition("policy:\n")
    config_file.write_text(before + "policy:\n  path: policy.yaml\n", encoding="utf-8")
    return config_file


def write_message(
    folder: Path,
    *,
    subject: str = "Minutes",
    to: str = "Olive Out <olive@example.net>",
    cc: bool = True,
    extra: str = "",
    body: str = "",
) -> Path:
    lines = ["From: Ada Quill <ada@example.org>", f"To: {to}"]
    if cc:
        lines.append("Cc: conduct@example.org")
    lines += [f"Subject: {subject}", "Message-ID: <m1@example.org>", *filter(None, extra.split("\n"))]
    path = folder / "message.eml"
    # LF line endings, as a file saved from a mail client usually has.
    path.write_bytes(("\n".join(lines) + "\n\n" + (body or "Hello.\n")).encode())
    return path


def check(configured: Path, message: Path, *args: str) -> Result:
    return CliRunner().invoke(
        main,
        [
            "check",
            str(message),
            "--from",
            "ada@example.org",
            "--to",
            "olive@example.net",
            "--to",
            "conduct@example.org",
            "--config",
            str(configured),
            *args,
        ],
    )


def test_reject_shows_findings_with_the_matched_text_and_the_reply(configured: Path, tmp_path: Path) -> None:
    result = check(configured, write_message(tmp_path, subject="About Jin Park"))
    assert result.exit_code == 0, result.output
    out = result.output
    assert "Verdict: reject (a mail client would get 550 5.7.1)" in out
    assert "reporter-protection" in out
    assert "where: header Subject" in out
    assert "case: home shelf" in out
    assert "matched: " in out and "Jin Park" in out  # the sender's own message: the match may be shown
    assert "  550-5.7.1 Message not sent: " in out
    assert "  550 5.7.1 Reference: check" in out


def test_json_has_verdict_and_findings(configured: Path, tmp_path: Path) -> None:
    result = check(configured, write_message(tmp_path, subject="About Jin Park"), "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["verdict"] == "reject"
    assert data["findings"]
    assert all(
        {"rule", "action", "code", "where", "kind", "advice", "detail"} <= set(f) for f in data["findings"]
    )
    protected = [f for f in data["findings"] if f["rule"] == "reporter-protection"]
    assert protected and all(f["action"] == "reject" for f in protected)
    assert data["reply"]["code"] == 550
    assert data["policy_version"]


def test_deliver(configured: Path, tmp_path: Path) -> None:
    result = check(configured, write_message(tmp_path), "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["verdict"] == "deliver"
    assert data["findings"] == []
    assert data["reply"] == {"code": 250, "status": "2.0.0", "lines": ["Ok: queued as check"]}


def test_show_rewrite_prints_the_message_as_relayed(configured: Path, tmp_path: Path) -> None:
    message = write_message(tmp_path, cc=False)
    result = CliRunner().invoke(
        main,
        [
            "check",
            str(message),
            "--from",
            "ada@example.org",
            "--to",
            "olive@example.net",
            "--config",
            str(configured),
            "--show-rewrite",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "Verdict: rewrite" in result.output
    assert "Change: added conduct@example.org to Cc" in result.output
    assert "Recipients: olive@example.net, conduct@example.org" in result.output
    relayed = result.stdout_bytes.split(b"Message as it would be relayed:\n\n", 1)[1]
    # Exactly the bytes that would be relayed: CRLF line endings, the header on top, and the Date
    # the message lacked added as the gateway's intake adds it (RFC 6409 8.2).
    assert relayed.startswith(b"X-Conduct-Gateway: ref=check; changed=cc-added\r\nDate: ")
    assert b"\r\nFrom: " in relayed
    assert b"\r\nCc: conduct@example.org\r\n" in relayed.split(b"\r\n\r\n", 1)[0]
    assert b"\n" not in relayed.replace(b"\r\n", b"")
    data = json.loads(
        CliRunner()
        .invoke(
            main,
            [
                "check",
                str(message),
                "--from",
                "ada@example.org",
                "--to",
                "olive@example.net",
                "--config",
                str(configured),
                "--show-rewrite",
                "--json",
            ],
        )
        .stdout
    )
    assert data["verdict"] == "rewrite"
    assert data["recipients"] == ["olive@example.net", "conduct@example.org"]
    assert "Cc: conduct@example.org" in data["relayed"]


def test_mbox_from_line_is_dropped_like_an_mda_would(configured: Path, tmp_path: Path) -> None:
    message = write_message(tmp_path)
    message.write_bytes(b"From ada@example.org Sat Mar  1 10:00:00 2025\n" + message.read_bytes())
    result = check(configured, message, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["verdict"] == "deliver"


def test_uses_the_ledger_but_never_writes_it(configured: Path, tmp_path: Path) -> None:
    state = configured.parent / "state"
    with Ledger.open(ledger_path(state)) as ledger:
        ledger.record(
            "<parent@example.org>",
            from_=[Address("Ada Quill", "ada@example.org")],
            to=[Address("Olive Out", "olive@example.net")],
            cc=[Address("", "conduct@example.org")],
        )
    before = ledger_path(state).read_bytes()
    message = write_message(
        tmp_path,
        to="Olive Out <olive@example.net>, Max Mod <max@example.net>",
        extra="In-Reply-To: <parent@example.org>",
    )
    result = CliRunner().invoke(
        main,
        [
            "check",
            str(message),
            "--from",
            "ada@example.org",
            "--to",
            "olive@example.net",
            "--to",
            "max@example.net",
            "--to",
            "conduct@example.org",
            "--config",
            str(configured),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["thread"] == {"parent_known": True, "case": None}
    banner = [f for f in data["findings"] if f["rule"] == "recipient-banner"]
    assert banner and banner[0]["action"] == "reject"
    assert "[+ Max Mod]" in "\n".join(data["reply"]["lines"])
    assert ledger_path(state).read_bytes() == before
    with Ledger.open(ledger_path(state)) as ledger:
        assert ledger.count() == 1


def test_policy_option_checks_an_edit_before_it_goes_live(configured: Path, tmp_path: Path) -> None:
    edited = tmp_path / "edited.yaml"
    edited.write_text(POLICY.replace("names: [Jin Park]", "names: [Olive Out]"), encoding="utf-8")
    result = check(configured, write_message(tmp_path), "--policy", str(edited), "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["verdict"] == "reject"


def test_missing_file_is_a_clear_error(configured: Path, tmp_path: Path) -> None:
    result = check(configured, tmp_path / "nope.eml")
    assert result.exit_code == 2
    assert "nope.eml: cannot read the message" in result.output
    assert "Traceback" not in result.output


def test_bad_policy_names_file_line_and_key(configured: Path, tmp_path: Path) -> None:
    (configured.parent / "policy.yaml").write_text(
        POLICY.replace("action: rewrite", "action: rewrit"), encoding="utf-8"
    )
    result = check(configured, write_message(tmp_path))
    assert result.exit_code == 2
    assert "policy.yaml, line 8, key rules[0].action" in result.output
    assert "Traceback" not in result.output


def test_engine_crash_is_exit_3_without_traceback(
    configured: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gateway.cli import check as check_module

    def exploding(*args: object, **kwargs: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(check_module, "evaluate", exploding)
    result = check(configured, write_message(tmp_path))
    assert result.exit_code == 3
    assert "internal error in the policy engine (RuntimeError)" in result.output
    assert "Traceback" not in result.output


def test_real_mail_corpus_goes_through_check_without_false_positives(
    configured: Path, real_mail_dir: Path
) -> None:
    """Every real message, to an outsider, under a case protecting "Jin Park" (alias JP, as in
    ISO-2022-JP) and "Sam Lee" (common surnames): no internal error and no identity found.

    UNINSPECTABLE_CONTENT (a picture, an unreadable PDF or archive going outside) is the rule working
    as documented, not a false positive, so it is allowed here; every other reporter-protection
    finding fails.
    """
    files = sorted(real_mail_dir.rglob("*.eml"))
    assert len(files) == 334
    runner = CliRunner()
    failures = []
    uninspectable = 0
    for path in files:
        result = runner.invoke(
            main,
            [
                "check",
                str(path),
                "--from",
                "ada@example.org",
                "--to",
                "olive@example.net",
                "--config",
                str(configured),
                "--json",
            ],
        )
        if result.exit_code != 0:
            failures.append(f"{path.name}: exit {result.exit_code}: {result.output[-300:]}")
            continue
        data = json.loads(result.stdout)
        assert data["verdict"] in ("deliver", "rewrite", "reject", "hold"), path
        codes = [f["code"] for f in data["findings"] if f["rule"] == "reporter-protection"]
        uninspectable += "UNINSPECTABLE_CONTENT" in codes
        flagged = [
            f"{f['code']} {f['where']}: {f['detail']}"
            for f in data["findings"]
            if f["code"] == "PROTECTED_IDENTITY"
        ]
        if flagged:
            failures.append(f"{path.parent.name}/{path.name}: {flagged}")
    assert not failures, "\n".join(failures)
    assert uninspectable < 40  # messages with pictures, PDFs or archives, not a blanket refusal


def test_protected_content_learnt_by_the_gateway_is_consulted(config_file: Path, tmp_path: Path) -> None:
    """`check` must judge a quoted report the way the gateway would: with the learnt fingerprints."""
    from gateway.settings import load_settings
    from gateway.state.fingerprints import FingerprintStore

    report = (
        "At the evening social the organiser kept interrupting me whenever I tried to explain the "
        "accessibility problems with the venue, and later followed me to the coat room to repeat it"
    )
    state = load_settings(config_file).state_dir
    state.mkdir(parents=True, exist_ok=True)
    store = FingerprintStore.open(state)
    try:
        store.learn("home shelf", "report-1", report, person="quiet-heron", source="test")
    finally:
        store.close()
    message = write_message(tmp_path, body=f"Summary of what we heard:\n\n> {report}\n")

    result = check(config_file, message, "--json")

    assert result.exit_code == 0, result.output
    verdict = json.loads(result.output[result.output.index("{") :])
    assert verdict["verdict"] == "reject"
    assert any(f["rule"] == "protected-content" for f in verdict["findings"]), verdict["findings"]
