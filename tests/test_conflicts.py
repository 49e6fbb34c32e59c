"""Conflicts of interest: a conflicted member is outside the committee for that case, and not its reviewer."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from gateway.cli import main
from gateway.decision.policy_screener import PolicyScreener
from gateway.decision.screening import Accept, Submission
from gateway.errors import ConfigError
from gateway.policy.engine import CompiledPolicy, compile_policy, evaluate, rule_context
from gateway.policy.loader import parse_policy_text
from gateway.policy.mime import parse_message
from gateway.policy.model import ContentOverlap, Envelope, ThreadFacts
from gateway.policy.reviewers import member_of
from gateway.replies import Reply
from gateway.settings import GatewaySettings, PolicySettings, ReviewSettings, ServerSettings
from gateway.state.holds import HoldStore, ReviewError
from tests.cli.conftest import write_config
from tests.test_review import kind, reply, reply_to

POLICY = """\
organisation:
  conduct_address: conduct@example.org
  members:
    - name: Ada Quill
      addresses: [ada@example.org]
    - name: Ben Ink
      addresses: [ben@example.org, ben.ink@example.org]
    - name: Cleo Nib
      addresses: [cleo@example.org]
    - name: Dan Reed
      addresses: [dan@example.org]
rules:
  - rule: reporter-protection
    action: hold
  - rule: protected-content
    action: hold
  - rule: recipient-banner
    action: rewrite
cases:
  - code: home shelf
    conflicts: [ben@example.org]
    reporters:
      - id: quiet heron
        names: [Jin Park]
        addresses: [jin.park@example.net]
  - code: stunned bulb
    reporters:
      - id: red fox
        names: [Mila Stone]
"""


def compiled(text: str = POLICY) -> CompiledPolicy:
    return compile_policy(parse_policy_text(text, Path("policy.yaml")), text.encode())


def message(body: str, to: str = "ben@example.org", extra: str = "") -> bytes:
    return (
        f"From: Ada Quill <ada@example.org>\r\nTo: <{to}>\r\nCc: <conduct@example.org>\r\n"
        f"Subject: notes\r\nMessage-ID: <m1@example.org>\r\n{extra}\r\n{body}\r\n"
    ).encode()


def findings(
    content: bytes, rcpts: tuple[str, ...], thread: ThreadFacts | None = None
) -> list[tuple[str, str | None, tuple[str, ...]]]:
    policy = compiled()
    verdict = evaluate(
        parse_message(content),
        Envelope("ada@example.org", rcpts, "ada@example.org"),
        policy,
        thread or ThreadFacts(),
    )
    return [(d.finding.code, d.finding.case, d.finding.recipients) for d in verdict.decisions]


# -- as a recipient ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rcpts", "expected"),
    [
        pytest.param(
            ("ben@example.org",),
            [("PROTECTED_IDENTITY", "home shelf", ("ben@example.org",))],
            id="conflicted",
        ),
        pytest.param(
            ("ben.ink@example.org",),
            [("PROTECTED_IDENTITY", "home shelf", ("ben.ink@example.org",))],
            id="conflict-follows-every-address-of-the-member",
        ),
        pytest.param(("cleo@example.org",), [], id="other-member-inside"),
        pytest.param(
            ("cleo@example.org", "BEN@example.org"),
            [("PROTECTED_IDENTITY", "home shelf", ("BEN@example.org",))],
            id="only-the-conflicted-recipient-is-named",
        ),
    ],
)
def test_a_conflicted_member_receiving_the_case_s_identity_is_a_finding(
    rcpts: tuple[str, ...], expected: list[tuple[str, str | None, tuple[str, ...]]]
) -> None:
    assert findings(message("Jin Park wrote to us again."), rcpts) == expected


def test_a_conflict_on_one_case_does_not_hide_other_cases() -> None:
    assert findings(message("Mila Stone wrote to us again."), ("ben@example.org",)) == []


def test_the_rule_context_answers_per_case() -> None:
    context = rule_context(compiled(), ThreadFacts())
    assert context.is_committee("ben@example.org")
    assert not context.is_inside("ben@example.org", "home shelf")
    assert not context.is_inside("Ben.Ink@example.org", "home shelf")
    assert context.is_inside("ben@example.org", "stunned bulb")
    assert context.is_inside("ben@example.org", None)
    assert not context.is_inside("olive@example.net", None)
    assert context.conflicted_cases("ben.ink@example.org") == frozenset({"home shelf"})


class _Fingerprints:
    def __init__(self, case: str) -> None:
        self.case = case

    def overlaps(self, text: str) -> list[ContentOverlap]:
        if "the words of the report" not in text:
            return []
        return [ContentOverlap(self.case, "doc-1", 30, 1.0, 30, "quiet heron")]


@pytest.mark.parametrize(
    ("case", "rcpt", "found"),
    [
        pytest.param("home shelf", "ben@example.org", True, id="conflicted"),
        pytest.param("home shelf", "cleo@example.org", False, id="inside"),
        pytest.param("stunned bulb", "ben@example.org", False, id="other-case"),
    ],
)
def test_protected_content_of_the_case_sent_to_a_conflicted_member_is_a_finding(
    case: str, rcpt: str, found: bool
) -> None:
    verdict = evaluate(
        parse_message(message("Quoting: the words of the report, as sent.", to=rcpt)),
        Envelope("ada@example.org", (rcpt,), "ada@example.org"),
        compiled(),
        ThreadFacts(),
        protected_content=_Fingerprints(case),
    )
    codes = [(d.finding.code, d.finding.recipients) for d in verdict.decisions]
    assert codes == ([("PROTECTED_CONTENT", (rcpt,))] if found else [])


def test_a_banner_that_would_name_the_reporter_to_a_conflicted_member_is_refused() -> None:
    from gateway.policy.model import Address

    thread = ThreadFacts(
        parent_known=True,
        parent_participants=(
            Address("Ada Quill", "ada@example.org"),
            Address("Jin Park", "jin.park@example.net"),
            Address("", "conduct@example.org"),
        ),
    )
    content = message(
        "Ben, please see below.", to="ben@example.org", extra="In-Reply-To: <p@example.org>\r\n"
    )
    codes = [code for code, _case, _rcpts in findings(content, ("ben@example.org",), thread)]
    assert "BANNER_NAMES_PROTECTED_PERSON" in codes
    # The same reply to a member without a conflict only needs the banner.
    content = message(
        "Cleo, please see below.", to="cleo@example.org", extra="In-Reply-To: <p@example.org>\r\n"
    )
    codes = [code for code, _case, _rcpts in findings(content, ("cleo@example.org",), thread)]
    assert codes == ["BANNER_MISSING"]


def test_unreadable_content_on_the_case_s_thread_is_not_sent_to_a_conflicted_member_unreviewed() -> None:
    encrypted = (
        b"From: Ada Quill <ada@example.org>\r\nTo: <ben@example.org>\r\nSubject: x\r\n"
        b'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n"
        b"--b\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        b"AAECAwQFBgcICQ==\r\n--b--\r\n"
    )
    on_thread = findings(encrypted, ("ben@example.org",), ThreadFacts(case="home shelf"))
    assert [code for code, _c, _r in on_thread] == ["UNINSPECTABLE_CONTENT"]
    assert findings(encrypted, ("ben@example.org",), ThreadFacts(case="stunned bulb")) == []
    assert findings(encrypted, ("ben@example.org",)) == []


def test_a_conflict_must_name_a_committee_member() -> None:
    with pytest.raises(ConfigError) as raised:
        parse_policy_text(
            POLICY.replace("conflicts: [ben@example.org]", "conflicts: [bne@example.org]"), Path("p.yaml")
        )
    assert "cases[0].conflicts[0]" in str(raised.value) and "not an address of a committee member" in str(
        raised.value
    )


# -- as a reviewer -------------------------------------------------------------------------------


@pytest.fixture
def settings(tmp_path: Path) -> GatewaySettings:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY, encoding="utf-8")
    return GatewaySettings(
        state_dir=tmp_path / "state",
        policy=PolicySettings(path=policy),
        server=ServerSettings(hostname="gateway.example.test"),
        review=ReviewSettings(notices_per_hour=50),
    )


@pytest.fixture
def screener(settings: GatewaySettings) -> Iterator[PolicyScreener]:
    with PolicyScreener.from_settings(settings) as opened:
        yield opened


def hold_to_outsider(screener: PolicyScreener, body: str = "Jin Park reported it.") -> Accept:
    content = message(body, to="olive@example.net")
    sub = Submission("Q1", "ada@example.org", ("olive@example.net",), "ada@example.org", content)
    result = screener.screen(sub)
    assert isinstance(result, Accept) and result.verdict == "hold", result
    screener.accepted(sub, result)
    return result


def test_a_conflicted_member_is_not_asked_to_review_the_case_s_mail(screener: PolicyScreener) -> None:
    result = hold_to_outsider(screener)
    asked = sorted(m.rcpt_tos[0] for m in result.extra if kind(m) == "review-request")
    assert asked == ["cleo@example.org", "dan@example.org"]
    record = screener.review.store.get("Q1")  # type: ignore[union-attr]
    assert record.cases == ("home shelf",) and "ben@example.org" not in {r.address for r in record.reviewers}


def test_the_thread_s_case_counts_for_exclusion(screener: PolicyScreener) -> None:
    # The finding names another case; the thread belongs to home shelf: Ben is excluded for both.
    screener.ledger.record("<p@example.org>", from_=(), case="home shelf")
    content = message("Mila Stone said so.", to="olive@example.net", extra="In-Reply-To: <p@example.org>\r\n")
    sub = Submission("Q2", "ada@example.org", ("olive@example.net",), "ada@example.org", content)
    result = screener.screen(sub)
    assert isinstance(result, Accept) and result.verdict == "hold"
    record = screener.review.store.get("Q2")  # type: ignore[union-attr]
    assert set(record.cases) == {"home shelf", "stunned bulb"}
    assert "ben@example.org" not in {r.address for r in record.reviewers}


def test_a_conflicted_member_cannot_approve_by_cli(
    settings: GatewaySettings, screener: PolicyScreener, tmp_path: Path
) -> None:
    hold_to_outsider(screener)
    screener.close()
    config = write_config(tmp_path, f"policy:\n  path: {settings.policy.path}\n")
    result = CliRunner().invoke(
        main, ["review", "approve", "Q1", "--as", "ben@example.org", "--config", str(config)]
    )
    assert result.exit_code == 2, result.output
    assert "not among the eligible reviewers" in result.output
    assert HoldStore.in_state_dir(settings.state_dir).get("Q1").status == "held"


def test_a_conflict_declared_after_the_hold_ends_the_member_s_review_rights(
    settings: GatewaySettings, screener: PolicyScreener
) -> None:
    result = hold_to_outsider(screener)
    by = {m.rcpt_tos[0]: m for m in result.extra if kind(m) == "review-request"}
    # Cleo is now declared conflicted too (policy edited, reloaded).
    settings.policy.path.write_text(
        POLICY.replace("conflicts: [ben@example.org]", "conflicts: [ben@example.org, cleo@example.org]"),
        encoding="utf-8",
    )
    assert screener.reload().value == "reloaded"
    answer = screener.screen(reply(reply_to(by["cleo@example.org"]), "approve", sender="cleo@example.org"))
    assert isinstance(answer, Reply) and "conflict of interest on case home shelf" in " ".join(answer.lines)
    with pytest.raises(ReviewError, match="conflict of interest"):
        member = member_of(screener.source.policy, "cleo@example.org")
        assert member is not None
        screener.review.decide("Q1", member, "approve", "", screener.source.policy, via="cli")  # type: ignore[union-attr]
    # The periodic round takes Cleo off the reviewers and her reply address stops working.
    screener.review_housekeeping()
    record = screener.review.store.get("Q1")  # type: ignore[union-attr]
    assert [r.address for r in record.reviewers] == ["dan@example.org"]
    assert all(g.holder != "cleo@example.org" for g in record.grants.values())
