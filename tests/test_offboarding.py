"""Offboarding: a member removed from the users file or the policy loses review rights mid-review."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from argon2 import PasswordHasher
from click.testing import CliRunner

from gateway.cli import main
from gateway.decision.policy_screener import PolicyScreener
from gateway.decision.screening import Accept, Submission
from gateway.replies import Reply
from gateway.review.rights import account_check
from gateway.settings import AuthSettings, GatewaySettings, PolicySettings, ReviewSettings, ServerSettings
from gateway.state.accounts import Accounts
from gateway.state.audit_reading import read_entries
from gateway.state.holds import HoldStore
from tests.cli.conftest import write_config
from tests.test_review import kind, reply, reply_to

MEMBERS = ("ada", "ben", "cleo", "dan")
POLICY = (
    "organisation:\n  conduct_address: conduct@example.org\n  members:\n"
    + "".join(f"    - name: {n.capitalize()} Member\n      addresses: [{n}@example.org]\n" for n in MEMBERS)
    + "rules:\n  - rule: reporter-protection\n    action: hold\n"
    + "cases:\n  - code: home shelf\n    severity: severe\n"
    + "    reporters:\n      - id: quiet heron\n        names: [Jin Park]\n"
)
FAST = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)


@pytest.fixture
def settings(tmp_path: Path) -> GatewaySettings:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY, encoding="utf-8")
    users = tmp_path / "users.passwd"
    accounts = Accounts.load(users, FAST)
    for name in MEMBERS:
        accounts.add(f"{name}@example.org", "a long password")
    return GatewaySettings(
        state_dir=tmp_path / "state",
        policy=PolicySettings(path=policy),
        server=ServerSettings(hostname="gateway.example.test"),
        review=ReviewSettings(notices_per_hour=50),
        auth=AuthSettings(users_file=users),
    )


@pytest.fixture
def accounts(settings: GatewaySettings) -> Accounts:
    return Accounts.load(settings.auth.users_file, FAST)


@pytest.fixture
def screener(settings: GatewaySettings, accounts: Accounts) -> Iterator[PolicyScreener]:
    # Review rights follow the users file, as the running gateway builds it (gateway.decision.build).
    with PolicyScreener.from_settings(settings, has_account=account_check(accounts)) as opened:
        assert opened.review is not None
        yield opened


def hold(screener: PolicyScreener) -> dict[str, str]:
    content = (
        b"From: <ada@example.org>\r\nTo: <olive@example.net>\r\nSubject: About it\r\n"
        b"Message-ID: <o1@example.org>\r\n\r\nJin Park reported it.\r\n"
    )
    sub = Submission("Q1", "ada@example.org", ("olive@example.net",), "ada@example.org", content)
    result = screener.screen(sub)
    assert isinstance(result, Accept) and result.verdict == "hold", result
    screener.accepted(sub, result)
    return {m.rcpt_tos[0]: reply_to(m) for m in result.extra if kind(m) == "review-request"}


def answer(screener: PolicyScreener, address: str, who: str, qid: str) -> Accept | Reply:
    sub = reply(address, "approve", sender=who, queue_id=qid)
    result = screener.screen(sub)
    if isinstance(result, Accept):
        screener.accepted(sub, result)
    return result


def test_a_member_removed_mid_review_loses_rights_and_the_others_are_asked_again(
    screener: PolicyScreener, accounts: Accounts
) -> None:
    tokens = hold(screener)
    assert sorted(tokens) == ["ben@example.org", "cleo@example.org", "dan@example.org"]
    first = answer(screener, tokens["ben@example.org"], "ben@example.org", "R1")
    assert isinstance(first, Accept) and "1 of 2" in first.reply_lines[0]

    Accounts.load(accounts.path, FAST).remove("ben@example.org")  # `user remove`, another process
    accounts.reload_if_changed()  # the running gateway polls every few seconds
    resent = screener.review_housekeeping()
    assert sorted(m.rcpt_tos[0] for m in resent) == ["cleo@example.org", "dan@example.org"]
    assert all(
        kind(m) == "review-request" and b"can no longer review it" in b" ".join(m.content.split())
        for m in resent
    )
    assert screener.review_housekeeping() == ()  # idempotent
    record = screener.review.store.get("Q1")  # type: ignore[union-attr]
    assert [r.address for r in record.reviewers] == ["cleo@example.org", "dan@example.org"]
    assert record.counted_approvers() == ()  # Ben's approval no longer counts

    # Cleo answers through the new request; one approval of two so far, since Ben's is gone.
    new = {m.rcpt_tos[0]: reply_to(m) for m in resent}
    second = answer(screener, new["cleo@example.org"], "cleo@example.org", "R2")
    assert isinstance(second, Accept) and "1 of 2" in second.reply_lines[0]
    # Dan answers through his first request (still valid); that releases it, without Ben's name.
    third = answer(screener, tokens["dan@example.org"], "dan@example.org", "R3")
    assert isinstance(third, Accept)
    [release] = [m for m in third.extra if m.mail_from]
    assert release.content.startswith(
        b"X-Conduct-Gateway-Approved-By: Cleo Member <cleo@example.org>, Dan Member <dan@example.org>\r\n"
    )


def test_a_removed_member_s_valid_token_is_refused_before_any_reassignment(
    screener: PolicyScreener, accounts: Accounts
) -> None:
    tokens = hold(screener)
    Accounts.load(accounts.path, FAST).remove("cleo@example.org")
    accounts.reload_if_changed()
    refused = answer(screener, tokens["cleo@example.org"], "cleo@example.org", "R1")
    assert isinstance(refused, Reply)
    assert "no longer has an account" in " ".join(refused.lines)
    assert screener.review.store.get("Q1").decisions == ()  # type: ignore[union-attr]


def test_a_member_removed_from_the_policy_loses_review_rights(
    settings: GatewaySettings, screener: PolicyScreener
) -> None:
    tokens = hold(screener)
    settings.policy.path.write_text(
        POLICY.replace("    - name: Dan Member\n      addresses: [dan@example.org]\n", ""), encoding="utf-8"
    )
    assert screener.reload().value == "reloaded"
    refused = answer(screener, tokens["dan@example.org"], "dan@example.org", "R1")
    assert isinstance(refused, Reply)
    resent = screener.review_housekeeping()
    assert sorted(m.rcpt_tos[0] for m in resent) == ["ben@example.org", "cleo@example.org"]
    record = screener.review.store.get("Q1")  # type: ignore[union-attr]
    assert [r.address for r in record.reviewers] == ["ben@example.org", "cleo@example.org"]
    reviews = [
        (e["review"], e["member"])
        for e in (dict(x.fields) for x in read_entries(screener.audit.directory))
        if e.get("event") == "review"
    ]
    assert ("reviewer-removed", "dan@example.org") in reviews


def test_cli_user_remove_ends_cli_review_rights(settings: GatewaySettings, screener: PolicyScreener) -> None:
    hold(screener)
    screener.close()
    config = write_config(settings.policy.path.parent, f"policy:\n  path: {settings.policy.path}\n")
    runner = CliRunner()
    removed = runner.invoke(main, ["user", "remove", "ben@example.org", "--config", str(config)])
    assert removed.exit_code == 0 and "can no longer send or review" in removed.output
    refused = runner.invoke(
        main, ["review", "approve", "Q1", "--as", "ben@example.org", "--config", str(config)]
    )
    assert refused.exit_code == 2 and "no longer has an account" in refused.output, refused.output
    allowed = runner.invoke(
        main, ["review", "approve", "Q1", "--as", "cleo@example.org", "--config", str(config)]
    )
    assert allowed.exit_code == 0 and "1 of 2" in allowed.output, allowed.output
    assert HoldStore.in_state_dir(settings.state_dir).get("Q1").status == "held"


def test_submission_is_revoked_with_the_account(accounts: Accounts) -> None:
    # The SMTP layer re-reads the users file at MAIL FROM and checks addresses_of(member) there and
    # at DATA: an already authenticated session of a removed member can send nothing more.
    assert "ben@example.org" in accounts.addresses_of("ben@example.org")
    Accounts.load(accounts.path, FAST).remove("ben@example.org")
    accounts.reload_if_changed()
    assert accounts.addresses_of("ben@example.org") == frozenset()
    assert not account_check(accounts)("ben@example.org")
    assert account_check(accounts)("cleo@example.org")
