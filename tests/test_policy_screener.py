"""The policy screener with the real parser, engine, rules and rewriter: every path the SMTP layer sees."""

from __future__ import annotations

import json
import logging
import os
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.decision import evaluation
from gateway.decision.commit import record
from gateway.decision.policy_screener import PolicyScreener
from gateway.decision.policy_source import ReloadResult
from gateway.decision.screening import Accept, Submission
from gateway.errors import AuditError, ConfigError, PolicyError
from gateway.policy.rules import conduct_cc
from gateway.replies import Reply, reply
from gateway.settings import GatewaySettings, PolicySettings
from gateway.state.audit import audit_dir
from gateway.state.audit_reading import read_entries, verify
from gateway.state.ledger import Ledger, ledger_path

POLICY = textwrap.dedent(
    """\
    organisation:
      conduct_address: conduct@example.org
      members:
        - name: Ada Quill
          addresses: [ada@example.org]
        - name: Ben Ink
          addresses: [ben@example.org]
    rules:
      - rule: conduct-cc
        action: rewrite
        params:
          display_name: Conduct Committee
      - rule: recipient-banner
        action: rewrite
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
    """
)
OUTSIDER = "olive@example.net"
CONDUCT = "conduct@example.org"


def message(
    *,
    subject: str = "Minutes of the meeting",
    to: str = f"Olive Out <{OUTSIDER}>",
    cc: str | None = f"Conduct Committee <{CONDUCT}>",
    body: str = "Hello,\r\n\r\nthe minutes are below.\r\n",
    message_id: str = "<m1@example.org>",
    extra: tuple[str, ...] = (),
) -> bytes:
    headers = [*extra, "From: Ada Quill <ada@example.org>", f"To: {to}"]
    if cc:
        headers.append(f"Cc: {cc}")
    headers += [
        f"Subject: {subject}",
        f"Message-ID: {message_id}",
        "Date: Sat, 01 Mar 2025 10:00:00 +0000",
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=utf-8",
    ]
    return ("\r\n".join(headers) + "\r\n\r\n" + body).encode()


def submission(
    content: bytes, *, rcpt_tos: tuple[str, ...] = (OUTSIDER, CONDUCT), queue_id: str = "Q1"
) -> Submission:
    return Submission(
        queue_id=queue_id,
        mail_from="ada@example.org",
        rcpt_tos=rcpt_tos,
        authenticated_as="ada@example.org",
        content=content,
    )


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY, encoding="utf-8")
    return path


@pytest.fixture
def settings(tmp_path: Path, policy_file: Path) -> GatewaySettings:
    return GatewaySettings(state_dir=tmp_path / "state", policy=PolicySettings(path=policy_file))


@pytest.fixture
def screener(settings: GatewaySettings) -> Iterator[PolicyScreener]:
    with PolicyScreener.from_settings(settings) as opened:
        yield opened


def decisions(settings: GatewaySettings) -> list[dict[str, object]]:
    return [dict(entry.fields) for entry in read_entries(audit_dir(settings.state_dir))]


def test_clean_message_is_delivered_byte_for_byte_with_one_header(screener: PolicyScreener) -> None:
    content = message()
    result = screener.screen(submission(content))
    assert isinstance(result, Accept)
    assert result.verdict == "deliver"
    assert result.content == b"X-Conduct-Gateway: ref=Q1; changed=none\r\n" + content
    assert result.rcpt_tos == (OUTSIDER, CONDUCT)
    assert result.changes == ()


def test_missing_conduct_address_is_added_to_cc_and_envelope(
    screener: PolicyScreener, settings: GatewaySettings
) -> None:
    sub = submission(message(cc=None), rcpt_tos=(OUTSIDER,))
    result = screener.screen(sub)
    assert isinstance(result, Accept)
    assert result.verdict == "rewrite"
    assert result.content.startswith(b"X-Conduct-Gateway: ref=Q1; changed=cc-added\r\n")
    head = result.content.split(b"\r\n\r\n", 1)[0]
    assert b"Cc: Conduct Committee <conduct@example.org>" in head
    assert result.rcpt_tos == (OUTSIDER, CONDUCT)
    assert result.changes == ("added conduct@example.org to Cc",)
    assert decisions(settings) == []  # acceptances are audited once spooled, not before
    screener.accepted(sub, result)
    [entry] = decisions(settings)
    assert entry["verdict"] == "rewrite" and entry["reply"] == "250"
    assert entry["changes"] == ["cc-added"]
    assert entry["rules"] == ["conduct-cc"]
    assert entry["recipient_count"] == 2
    assert entry["policy"] == screener.policy_version


def test_protected_name_to_an_outsider_is_refused_and_audited_without_it(
    screener: PolicyScreener, settings: GatewaySettings
) -> None:
    content = message(subject="About what Jin Park told us", body="JP said it happened twice.\r\n")
    result = screener.screen(submission(content, queue_id="Q7"))
    assert isinstance(result, Reply)
    assert (result.code, result.status) == (550, "5.7.1")
    assert result.lines[0].startswith("Message not sent: ")
    assert result.lines[-1] == "Reference: Q7"
    assert any(line.startswith("reporter-protection: header Subject") for line in result.lines)
    text = "\n".join(result.lines)
    assert "Jin" not in text and "Park" not in text
    [entry] = decisions(settings)
    assert entry["verdict"] == "reject"
    assert entry["reply"] == "550 5.7.1"
    assert entry["queue_id"] == "Q7"
    assert entry["member"] == "ada@example.org"
    assert entry["cases"] == ["home shelf"]
    assert "reporter-protection" in entry["rules"]  # type: ignore[operator]
    on_disk = b"".join(p.read_bytes() for p in audit_dir(settings.state_dir).iterdir()).lower()
    for secret in (b"jin", b"park", b"told us", b"happened twice", b"olive", b"m1@example.org"):
        assert secret not in on_disk, secret
    assert verify(audit_dir(settings.state_dir)).ok


def test_engine_exception_is_a_451_logged_by_type_only(
    screener: PolicyScreener,
    settings: GatewaySettings,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def exploding(*args: object, **kwargs: object) -> None:
        raise RuntimeError("Jin Park was in the Subject")

    monkeypatch.setattr(evaluation, "evaluate", exploding)
    with caplog.at_level(logging.ERROR, logger="gateway"):
        result = screener.screen(submission(message()))
    assert isinstance(result, Reply)
    assert (result.code, result.status) == (451, "4.3.0")
    assert result.lines[-1] == "Reference: Q1"
    assert "event=policy-internal-error" in caplog.text
    assert "error=RuntimeError" in caplog.text
    assert "Jin" not in caplog.text
    [entry] = decisions(settings)
    assert entry["verdict"] == "tempfail" and entry["error"] == "RuntimeError"
    assert screener.statistics().internal_errors == 1


def test_a_rule_that_raises_is_a_451_naming_the_rule(
    screener: PolicyScreener, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object) -> None:
        raise KeyError("boom")

    monkeypatch.setattr(conduct_cc, "check", broken)
    result = screener.screen(submission(message()))
    assert isinstance(result, Reply)
    assert (result.code, result.status) == (451, "4.3.0")
    assert "Rules that failed: conduct-cc" in result.lines


def test_rewrite_the_gateway_cannot_make_is_refused_with_what_to_do(
    screener: PolicyScreener, settings: GatewaySettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refusing(raw: bytes, rewrite: object) -> bytes:
        raise PolicyError("the message has no text body to put the [+ Name] / [- Name] lines in")

    monkeypatch.setattr(evaluation, "apply_rewrite", refusing)
    result = screener.screen(submission(message(cc=None), rcpt_tos=(OUTSIDER,)))
    assert isinstance(result, Reply)
    assert (result.code, result.status) == (550, "5.7.1")
    assert "cannot make safely" in result.lines[0]
    assert any(line.startswith("conduct-cc:") for line in result.lines)
    [entry] = decisions(settings)
    assert entry["verdict"] == "reject" and entry["error"] == "PolicyError"


def test_refusal_that_cannot_be_audited_is_deferred(
    screener: PolicyScreener, monkeypatch: pytest.MonkeyPatch
) -> None:
    def failing(record: object) -> None:
        raise AuditError("disk full")

    monkeypatch.setattr(screener.audit, "record_decision", failing)
    result = screener.screen(submission(message(subject="Jin Park")))
    assert isinstance(result, Reply)
    assert (result.code, result.status) == (451, "4.3.0")


def test_thread_is_learned_once_spooled_and_a_reply_gets_its_banner(
    screener: PolicyScreener, settings: GatewaySettings
) -> None:
    first = submission(message(), queue_id="Q1")
    accepted = screener.screen(first)
    assert isinstance(accepted, Accept)
    screener.accepted(first, accepted)
    reply_content = message(
        subject="Re: Minutes of the meeting",
        to=f"Olive Out <{OUTSIDER}>, Max Mod <max@example.net>",
        message_id="<m2@example.org>",
        extra=("In-Reply-To: <m1@example.org>", "References: <m1@example.org>"),
        body="Adding Max.\r\n",
    )
    reply = screener.screen(
        submission(reply_content, rcpt_tos=(OUTSIDER, "max@example.net", CONDUCT), queue_id="Q2")
    )
    assert isinstance(reply, Accept)
    assert reply.verdict == "rewrite"
    assert reply.content.startswith(b"X-Conduct-Gateway: ref=Q2; changed=banner-added\r\n")
    assert b"[+ Max Mod]" in reply.content.split(b"\r\n\r\n", 1)[1]
    assert reply.changes == ("inserted [+ Max Mod] at the top of the message",)
    with Ledger.open_read_only(ledger_path(settings.state_dir)) as ledger:  # type: ignore[union-attr]
        assert ledger.lookup_parent(["m1@example.org"], []).parent_known
        assert not ledger.lookup_parent(["m2@example.org"], []).parent_known  # not spooled yet


def test_a_forged_relay_header_is_replaced_not_repeated(screener: PolicyScreener) -> None:
    content = message(extra=("X-Conduct-Gateway: ref=forged;", "\tchanged=none"))
    result = screener.screen(submission(content))
    assert isinstance(result, Accept)
    assert result.content.count(b"X-Conduct-Gateway") == 1
    assert b"forged" not in result.content
    assert result.content.startswith(b"X-Conduct-Gateway: ref=Q1; changed=none\r\n")


def test_invalid_policy_at_start_is_a_config_error(settings: GatewaySettings, policy_file: Path) -> None:
    policy_file.write_text(POLICY.replace("action: reject", "action: explode"), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"policy.yaml, line \d+"):
        PolicyScreener.from_settings(settings)


def _edit(path: Path, text: str, tick: int) -> None:
    path.write_text(text, encoding="utf-8")
    stamp = 1_700_000_000 + tick  # distinct mtimes even on coarse file-system clocks
    os.utime(path, (stamp, stamp))


def test_reload_switches_to_a_valid_edit(screener: PolicyScreener, policy_file: Path) -> None:
    before = screener.policy_version
    assert screener.reload_if_changed() is ReloadResult.UNCHANGED
    assert screener.reload() is ReloadResult.UNCHANGED  # SIGHUP with the same content
    _edit(policy_file, POLICY.replace("names: [Jin Park]", "names: [Jin Park, Jinny Park]"), 1)
    assert screener.reload_if_changed() is ReloadResult.RELOADED
    assert screener.policy_version != before
    result = screener.screen(submission(message(subject="Jinny Park")))
    assert isinstance(result, Reply)
    assert screener.statistics().reloads == 1


def test_invalid_edit_is_refused_loudly_and_the_last_good_policy_stays(
    screener: PolicyScreener, policy_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    before = screener.policy_version
    _edit(policy_file, POLICY.replace("action: reject", "action: explode"), 1)
    with caplog.at_level(logging.ERROR, logger="gateway"):
        assert screener.reload_if_changed() is ReloadResult.REFUSED
        assert screener.reload_if_changed() is ReloadResult.UNCHANGED  # nothing new to look at
        _edit(policy_file, POLICY.replace("action: reject", "action: explode"), 2)  # touched, same bytes
        assert screener.reload_if_changed() is ReloadResult.REFUSED
    refusals = [r for r in caplog.records if "event=policy-reload-refused" in r.getMessage()]
    assert len(refusals) == 1  # the same broken content is reported once, not every poll
    assert refusals[0].levelno == logging.ERROR
    assert "policy.yaml, line" in refusals[0].getMessage()
    assert f"kept_version={before}" in refusals[0].getMessage()
    assert screener.policy_version == before
    result = screener.screen(submission(message(subject="Jin Park")))
    assert isinstance(result, Reply)  # the last good policy still protects
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="gateway"):
        assert screener.reload() is ReloadResult.REFUSED  # SIGHUP always re-reads and reports
    assert "event=policy-reload-refused" in caplog.text
    _edit(policy_file, POLICY, 3)
    assert screener.reload_if_changed() is ReloadResult.UNCHANGED  # back to the policy in force
    assert screener.statistics().reload_refusals == 3


def test_deleted_policy_file_keeps_the_last_good_policy(screener: PolicyScreener, policy_file: Path) -> None:
    before = screener.policy_version
    policy_file.unlink()
    assert screener.reload_if_changed() is ReloadResult.REFUSED
    assert screener.policy_version == before


def test_every_verdict_records_the_policy_version(
    screener: PolicyScreener, settings: GatewaySettings, policy_file: Path
) -> None:
    screener.screen(submission(message(subject="Jin Park"), queue_id="Q1"))
    old = screener.policy_version
    _edit(policy_file, POLICY + "\n# edited\n", 1)
    assert screener.reload() is ReloadResult.RELOADED
    screener.screen(submission(message(subject="Jin Park"), queue_id="Q2"))
    recorded = decisions(settings)
    assert [entry["policy"] for entry in recorded if entry["event"] == "decision"] == [
        old,
        screener.policy_version,
    ]
    assert old != screener.policy_version
    # The reload itself is audited too (issue 18: the committee digest counts reloads).
    assert [(e["action"], e["version"]) for e in recorded if e["event"] == "policy"] == [
        ("reloaded", screener.policy_version)
    ]


def test_a_thread_learns_its_case_and_replies_inherit_it(tmp_path: Path, policy_file: Path) -> None:
    # With reporter-protection on "audit", a message naming a reporter is relayed and its finding
    # names the case; the ledger keeps the case, and a reply on that thread may not use Bcc.
    policy_file.write_text(POLICY.replace("action: reject", "action: audit"), encoding="utf-8")
    settings = GatewaySettings(state_dir=tmp_path / "state", policy=PolicySettings(path=policy_file))
    with PolicyScreener.from_settings(settings) as screener:
        first = submission(message(subject="Jin Park"), queue_id="Q1")
        accepted = screener.screen(first)
        assert isinstance(accepted, Accept) and accepted.verdict == "deliver"
        screener.accepted(first, accepted)
        reply = message(
            subject="Re: follow-up",
            message_id="<m2@example.org>",
            extra=("In-Reply-To: <m1@example.org>",),
        )
        result = screener.screen(
            submission(reply, rcpt_tos=(OUTSIDER, CONDUCT, "hidden@example.net"), queue_id="Q2")
        )
    assert isinstance(result, Reply)
    assert any(line.startswith("recipient-banner: envelope: address") for line in result.lines)
    assert "hidden@example.net" in "\n".join(result.lines)
    entries = decisions(settings)
    assert entries[0]["cases"] == ["home shelf"] and entries[0]["verdict"] == "deliver"
    assert entries[1]["cases"] == ["home shelf"] and entries[1]["verdict"] == "reject"


def test_forged_relay_header_is_removed_whatever_its_case(screener: PolicyScreener) -> None:
    content = message(extra=("x-conduct-gateway: ref=forged; changed=none",))
    result = screener.screen(submission(content))
    assert isinstance(result, Accept)
    assert result.content.lower().count(b"x-conduct-gateway") == 1
    assert result.content == b"X-Conduct-Gateway: ref=Q1; changed=none\r\n" + message()


def test_a_refusal_made_before_the_policy_is_audited_without_content(tmp_path: Path) -> None:
    """The SMTP layer refuses malformed mail itself; that decision is audited like any other."""
    from gateway.decision.policy_screener import PolicyScreener
    from gateway.decision.screening import Submission
    from gateway.settings import GatewaySettings
    from gateway.state.audit import audit_dir
    from gateway.state.audit_reading import verify

    repo = Path(__file__).resolve().parents[1]
    settings = GatewaySettings.model_validate(
        {
            "state_dir": str(tmp_path),
            "policy": {"path": str(repo / "gateway" / "data" / "default-policy.yaml")},
        }
    )
    secret = b"Subject: the secret subject line\r\n"
    submission = Submission(
        queue_id="Q1",
        mail_from="ada.quill@example.org",
        rcpt_tos=("olive@example.net",),
        authenticated_as="ada.quill@example.org",
        content=secret + b"\r\nbody",
    )
    with PolicyScreener.from_settings(settings) as screener:
        refusal = screener.refused_at_intake(submission, reply(550, "5.6.0", "Refused"), "MALFORMED_MESSAGE")
        record(refusal, screener.stores)
    text = (audit_dir(tmp_path) / "audit.jsonl").read_text()
    entry = json.loads(text.splitlines()[-1])
    assert entry["queue_id"] == "Q1"
    assert entry["verdict"] == "reject"
    assert entry["reply"] == "550 5.6.0"
    assert [f["code"] for f in entry["findings"]] == ["MALFORMED_MESSAGE"]
    assert "secret" not in text and "olive@example.net" not in text
    assert verify(audit_dir(tmp_path)).ok
