"""Quorum by severity: how many distinct, eligible members must approve a held message."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.decision.policy_screener import PolicyScreener
from gateway.decision.screening import Accept, Submission
from gateway.errors import ConfigError
from gateway.policy.engine import compile_policy
from gateway.policy.loader import parse_policy_text
from gateway.policy.reviewers import member_of, quorum
from gateway.settings import GatewaySettings, PolicySettings, ReviewSettings, ServerSettings
from gateway.state.audit import audit_dir
from gateway.state.audit_reading import read_entries, verify
from tests.test_review import kind, reply, reply_to

MEMBERS = ("ada", "ben", "cleo", "dan", "eve")


def policy_text(severity: str = "severe", review: str = "") -> str:
    members = "".join(
        f"    - name: {name.capitalize()} Member\n      addresses: [{name}@example.org]\n" for name in MEMBERS
    )
    return (
        "organisation:\n  conduct_address: conduct@example.org\n  members:\n"
        + members
        + "rules:\n  - rule: reporter-protection\n    action: hold\n"
        + review
        + "cases:\n  - code: home shelf\n"
        + f"    severity: {severity}\n"
        + "    conflicts: [dan@example.org]\n"
        + "    reporters:\n      - id: quiet heron\n        names: [Jin Park]\n"
        + "  - code: stunned bulb\n    reporters:\n      - id: red fox\n        names: [Mila Stone]\n"
    )


@pytest.mark.parametrize(
    ("severity", "review", "cases", "eligible", "expected"),
    [
        pytest.param("normal", "", ("home shelf",), 3, 1, id="normal-default-1"),
        pytest.param("severe", "", ("home shelf",), 3, 2, id="severe-default-2"),
        pytest.param("severe", "", (), 3, 1, id="no-case-is-normal"),
        pytest.param("severe", "", ("stunned bulb", "home shelf"), 3, 2, id="gravest-case-wins"),
        pytest.param(
            "severe",
            "review:\n  approvals:\n    severe: majority\n",
            ("home shelf",),
            3,
            2,
            id="majority-of-3",
        ),
        pytest.param(
            "severe",
            "review:\n  approvals:\n    severe: majority\n",
            ("home shelf",),
            4,
            3,
            id="majority-of-4",
        ),
        pytest.param(
            "normal",
            "review:\n  approvals:\n    normal: 2\n    severe: 3\n",
            ("home shelf",),
            3,
            2,
            id="configured",
        ),
        pytest.param(
            "severe",
            "review:\n  approvals:\n    normal: 2\n    severe: majority\n",
            ("home shelf",),
            2,
            2,
            id="severe-never-below-normal",
        ),
    ],
)
def test_required_approvals(
    severity: str, review: str, cases: tuple[str, ...], eligible: int, expected: int
) -> None:
    text = policy_text(severity, review)
    policy = compile_policy(parse_policy_text(text, Path("p.yaml")), text.encode())
    assert quorum(policy, cases, eligible) == expected


@pytest.mark.parametrize("value", ["0", "most", "-1"])
def test_an_invalid_approval_count_names_the_key(value: str) -> None:
    with pytest.raises(ConfigError, match=r"review\.approvals\.severe"):
        parse_policy_text(policy_text(review=f"review:\n  approvals:\n    severe: {value}\n"), Path("p.yaml"))


@pytest.fixture
def settings(tmp_path: Path) -> GatewaySettings:
    policy = tmp_path / "policy.yaml"
    policy.write_text(policy_text(), encoding="utf-8")
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


def hold(screener: PolicyScreener, body: str = "Jin Park reported it.") -> dict[str, str]:
    content = (
        "From: Ada Member <ada@example.org>\r\nTo: <olive@example.net>\r\nSubject: About it\r\n"
        f"Message-ID: <q1@example.org>\r\n\r\n{body}\r\n"
    ).encode()
    sub = Submission("Q1", "ada@example.org", ("olive@example.net",), "ada@example.org", content)
    result = screener.screen(sub)
    assert isinstance(result, Accept) and result.verdict == "hold", result
    screener.accepted(sub, result)
    held = [m for m in result.extra if kind(m) == "held"]
    assert held and b"Approvals needed: 2 (0 of 2 so far)" in held[0].content
    return {m.rcpt_tos[0]: reply_to(m) for m in result.extra if kind(m) == "review-request"}


def decide(
    screener: PolicyScreener, address: str, who: str, line: str = "approve", qid: str = "R1"
) -> Accept:
    sub = reply(address, line, sender=who, queue_id=qid)
    result = screener.screen(sub)
    assert isinstance(result, Accept), result
    screener.accepted(sub, result)
    return result


def test_a_severe_case_is_released_only_by_the_second_distinct_member(
    screener: PolicyScreener, settings: GatewaySettings
) -> None:
    tokens = hold(screener)
    assert sorted(tokens) == ["ben@example.org", "cleo@example.org", "eve@example.org"]  # not Dan: conflicted
    first = decide(screener, tokens["ben@example.org"], "ben@example.org")
    assert "1 of 2 approvals needed" in first.reply_lines[0]
    [progress] = first.extra
    assert progress.rcpt_tos == ("ada@example.org",) and kind(progress) == "approval-recorded"
    assert b"1 of 2 approvals" in progress.content and not any(m.mail_from for m in first.extra)
    assert screener.review.store.get("Q1").status == "held"  # type: ignore[union-attr]
    second = decide(screener, tokens["eve@example.org"], "eve@example.org", qid="R2")
    [release] = [m for m in second.extra if m.mail_from]
    assert release.rcpt_tos == ("olive@example.net",)
    assert release.content.startswith(
        b"X-Conduct-Gateway-Approved-By: Ben Member <ben@example.org>, Eve Member <eve@example.org>\r\n"
    )
    approved = [m for m in second.extra if not m.mail_from and kind(m) == "approved"]
    assert approved and b"Ben Member, Eve Member" in b" ".join(approved[0].content.split())
    reviews = [
        dict(e.fields) for e in read_entries(audit_dir(settings.state_dir)) if e.fields["event"] == "review"
    ]
    approvals = [
        (r["review"], r["member"], r["approvals"], r["required_approvals"])
        for r in reviews
        if r["review"] in ("approve", "release")
    ]
    assert approvals == [
        ("approve", "ben@example.org", 1, 2),
        ("approve", "eve@example.org", 2, 2),
        ("release", "eve@example.org", 2, 2),
    ]
    assert all(r["cases"] == ["home shelf"] for r in reviews)
    assert verify(audit_dir(settings.state_dir)).ok


def test_the_same_member_approving_twice_counts_once(screener: PolicyScreener) -> None:
    tokens = hold(screener)
    decide(screener, tokens["ben@example.org"], "ben@example.org")
    ben = member_of(screener.source.policy, "ben@example.org")
    assert ben is not None and screener.review is not None
    again = screener.review.decide("Q1", ben, "approve", "", screener.source.policy, via="cli")
    assert again.lines[0].startswith("Already recorded") and again.record.status == "held"


def test_a_rejection_by_one_eligible_member_ends_the_review(screener: PolicyScreener) -> None:
    tokens = hold(screener)
    decide(screener, tokens["ben@example.org"], "ben@example.org")
    rejected = decide(
        screener, tokens["cleo@example.org"], "cleo@example.org", "reject names the reporter", "R2"
    )
    assert rejected.reply_lines[0].startswith("Recorded: message Q1 rejected")
    assert not any(m.mail_from for m in rejected.extra)
    late = decide(screener, tokens["eve@example.org"], "eve@example.org", qid="R3")
    assert late.reply_lines[0].startswith("Already decided") and not any(m.mail_from for m in late.extra)


def test_a_normal_case_needs_one_approval(settings: GatewaySettings) -> None:
    settings.policy.path.write_text(policy_text("normal"), encoding="utf-8")
    with PolicyScreener.from_settings(settings) as screener:
        content = (
            b"From: <ada@example.org>\r\nTo: <olive@example.net>\r\nSubject: x\r\nMessage-ID: <n@x>\r\n\r\n"
            b"Jin Park reported it.\r\n"
        )
        sub = Submission("Q1", "ada@example.org", ("olive@example.net",), "ada@example.org", content)
        result = screener.screen(sub)
        assert isinstance(result, Accept)
        screener.accepted(sub, result)
        assert screener.review.store.get("Q1").required_approvals == 1  # type: ignore[union-attr]


def test_a_quorum_no_one_can_reach_is_refused_at_once(settings: GatewaySettings) -> None:
    settings.policy.path.write_text(
        policy_text(review="review:\n  approvals:\n    severe: 4\n"), encoding="utf-8"
    )
    with PolicyScreener.from_settings(settings) as screener:
        content = b"From: <ada@example.org>\r\nTo: <olive@example.net>\r\nSubject: x\r\n\r\nJin Park.\r\n"
        result = screener.screen(
            Submission("Q1", "ada@example.org", ("olive@example.net",), "ada@example.org", content)
        )
        assert not isinstance(result, Accept)
        assert "approval by 4 other committee member(s), and only 3 may review it" in " ".join(result.lines)
