"""A reporter's report, learnt by the journal intake, quoted back to them through the screener.

The reporter's report names a witness. A committee member's reply quoting it goes to the
reporter (delivered: they wrote it), and the same reply to an outsider is refused; a witness the
report does not name is still refused, even to the reporter.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from gateway.cli import main
from gateway.decision.policy_screener import PolicyScreener
from gateway.decision.policy_source import load_policy_for
from gateway.decision.screening import Accept, Submission
from gateway.intake.journal import Journal
from gateway.policy.model import IdentityKind, Mention
from gateway.replies import Reply
from gateway.settings import GatewaySettings, PolicySettings
from gateway.state.fingerprints import FingerprintStore
from gateway.state.ledger import Ledger, ledger_path
from tests.cli.conftest import write_config

CONDUCT = "conduct@example.org"
ADA = "ada@example.org"
REPORTER = "jin.park@example.net"
OUTSIDER = "olive@forum.example.net"
POLICY = textwrap.dedent(
    f"""\
    organisation:
      conduct_address: {CONDUCT}
      members:
        - name: Ada Quill
          addresses: [{ADA}]
    rules:
      - rule: reporter-protection
        action: reject
      - rule: protected-content
        action: reject
    cases:
      - code: home shelf
        reporters:
          - id: quiet-heron
            names: [Jin Park]
            addresses: [{REPORTER}]
        witnesses:
          - id: amber-finch
            names: [Maya Lind]
            addresses: [maya.lind@witness.test]
          - id: slate-owl
            names: [Sam Okonkwo]
            addresses: [sam@witness.test]
    """
)
REPORT = (
    "On Saturday evening at the social the speaker kept putting his arm around me although I moved away "
    "twice. Maya Lind was standing next to me the whole time and saw all of it, and afterwards she walked "
    "me back to the hotel because I did not want to be alone."
)


@pytest.fixture
def settings(tmp_path: Path) -> GatewaySettings:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY, encoding="utf-8")
    return GatewaySettings(state_dir=tmp_path / "state", policy=PolicySettings(path=policy))


@pytest.fixture
def screener(settings: GatewaySettings) -> Iterator[PolicyScreener]:
    with PolicyScreener.from_settings(settings) as opened:
        # The journal intake runs beside the gateway, with its own store and ledger.
        policy, _stamp = load_policy_for(settings)
        with (
            FingerprintStore.open(settings.state_dir) as store,
            Ledger.open(ledger_path(settings.state_dir)) as ledger,
        ):
            Journal(lambda: policy, store, ledger).receive(
                (
                    f"From: Jin Park <{REPORTER}>\r\nTo: {CONDUCT}\r\nSubject: what happened\r\n"
                    "Message-ID: <report-1@example.net>\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
                    f"{REPORT}\r\n"
                ).encode(),
                REPORTER,
            )
        yield opened


def reply(to: str, extra: str = "") -> Submission:
    quoted = "\r\n".join("> " + line for line in textwrap.wrap(REPORT, 66))
    body = f"Dear Jin,\r\n\r\nthank you. We read your message:\r\n\r\n{quoted}\r\n\r\n{extra}Ada\r\n"
    content = (
        f"From: Ada Quill <{ADA}>\r\nTo: {to}\r\nCc: {CONDUCT}\r\nSubject: Re: what happened\r\n"
        "Message-ID: <reply-1@example.org>\r\nIn-Reply-To: <report-1@example.net>\r\n"
        f"Content-Type: text/plain; charset=utf-8\r\n\r\n{body}"
    ).encode()
    return Submission(
        queue_id="Q1", mail_from=ADA, rcpt_tos=(to, CONDUCT), authenticated_as=ADA, content=content
    )


def test_the_journal_records_whom_the_report_names(screener: PolicyScreener) -> None:
    store = screener.fingerprint_store
    assert store is not None
    assert store.named_by("home shelf", "quiet-heron") == {
        Mention("home shelf", "amber-finch", IdentityKind.NAME)
    }


def test_the_report_quoted_back_to_the_reporter_is_delivered(screener: PolicyScreener) -> None:
    result = screener.screen(reply(REPORTER))
    assert isinstance(result, Accept), result
    assert result.verdict == "deliver"


def test_the_same_reply_to_an_outsider_is_refused(screener: PolicyScreener) -> None:
    result = screener.screen(reply(OUTSIDER))
    assert isinstance(result, Reply)
    text = " ".join(result.lines)
    assert "Maya" not in text and "repeats" in text and "name of a person protected" in text


def test_a_witness_the_report_does_not_name_is_refused_even_to_the_reporter(screener: PolicyScreener) -> None:
    result = screener.screen(reply(REPORTER, extra="Sam Okonkwo saw it too.\r\n\r\n"))
    assert isinstance(result, Reply)
    assert result.code == 550 and "Sam" not in " ".join(result.lines)


def test_case_add_report_records_whom_the_report_names(tmp_path: Path) -> None:
    report = tmp_path / "report.eml"
    report.write_bytes(
        b"From: Robin <robin.castellano@mail.example.net>\nTo: conduct@example.org\nSubject: Saturday\n"
        b"Message-ID: <r9@mail.example.net>\nContent-Type: text/plain; charset=utf-8\n\n"
        b"After the talk he followed me out of the hall; Sam Okonkwo-Reyes saw him do it and told him\n"
        b"to stop.\n"
    )
    config = write_config(tmp_path)
    result = CliRunner().invoke(
        main, ["case", "add-report", "home shelf", str(report), "--config", str(config)]
    )
    assert result.exit_code == 0, result.output
    with FingerprintStore.open(tmp_path / "state") as store:
        assert store.named_by("home shelf", "quiet-heron") == {
            Mention("home shelf", "amber-finch", IdentityKind.NAME)
        }
