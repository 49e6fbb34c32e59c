"""Overrides with justification: offered for overridable rules only, one token per message, audited,
counted and limited by a quota; never for rules that protect identities or protected content."""

from __future__ import annotations

import email
import email.policy
import functools
import json
import re
import sqlite3
import textwrap
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from gateway.cli import main
from gateway.decision.overriding import untagged
from gateway.decision.policy_screener import PolicyScreener
from gateway.decision.screening import Accept
from gateway.errors import ConfigError
from gateway.policy.config import NEVER_OVERRIDABLE
from gateway.policy.engine import CompiledPolicy, combine, compile_policy
from gateway.policy.loader import parse_policy_text
from gateway.policy.model import Action, Decision, Finding, Outcome
from gateway.policy.overrides import overridable_rules, overridden, parse_override, without_override
from gateway.replies import Reply
from gateway.settings import GatewaySettings, PolicySettings
from gateway.state.audit import audit_dir
from gateway.state.audit_reading import read_entries
from gateway.state.opening import open_state
from gateway.state.overrides import OverrideStore
from tests.cli.conftest import write_config
from tests.test_policy_screener import message, submission

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
        action: reject
        overridable: true
        override_quota: {count: 2, days: 7}
      - rule: reporter-protection
        action: reject
    cases:
      - code: home shelf
        reporters:
          - id: quiet heron
            names: [Jin Park]
    """
)
OUTSIDER = "olive@example.net"
REASON = "the committee asked me to write to Olive alone"
TOKEN = re.compile(r"\[override ([A-Z2-9]{8}): your reason\]")


@pytest.fixture
def settings(tmp_path: Path) -> GatewaySettings:
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY, encoding="utf-8")
    return GatewaySettings(state_dir=tmp_path / "state", policy=PolicySettings(path=path, workers=0))


@pytest.fixture
def screener(settings: GatewaySettings) -> Iterator[PolicyScreener]:
    with PolicyScreener.from_settings(settings) as opened:
        yield opened


def send(
    screener: PolicyScreener,
    subject: str = "Minutes",
    *,
    body: str = "Hello.\r\n",
    mid: str = "<m1@example.org>",
    queue_id: str = "Q1",
) -> Accept | Reply:
    content = message(subject=subject, cc=None, body=body, message_id=mid)
    result = screener.screen(submission(content, rcpt_tos=(OUTSIDER,), queue_id=queue_id))
    if isinstance(result, Accept):
        screener.accepted(submission(content, rcpt_tos=(OUTSIDER,), queue_id=queue_id), result)
    return result


def token_in(reply: Accept | Reply) -> str:
    assert isinstance(reply, Reply) and reply.code == 550
    found = TOKEN.search(" ".join(reply.lines))
    assert found is not None, reply.lines
    return found.group(1)


def entries(settings: GatewaySettings, event: str) -> list[dict[str, object]]:
    return [dict(e.fields) for e in read_entries(audit_dir(settings.state_dir)) if e.fields["event"] == event]


# -- the schema -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("rule", sorted(NEVER_OVERRIDABLE))
def test_the_schema_refuses_overridable_on_rules_protecting_identities(rule: str) -> None:
    text = POLICY.replace(
        "  - rule: reporter-protection\n    action: reject\n",
        f"  - rule: {rule}\n    action: reject\n    overridable: true\n",
    )
    with pytest.raises(ConfigError) as raised:
        parse_policy_text(text, Path("policy.yaml"))
    assert f"policy.yaml, line 15, key rules[1].overridable: {rule} protects identities" in str(raised.value)


def test_overridable_false_is_allowed_on_them_and_true_on_other_rules() -> None:
    text = POLICY.replace(
        "  - rule: reporter-protection\n    action: reject\n",
        "  - rule: reporter-protection\n    action: reject\n    overridable: false\n",
    )
    document = parse_policy_text(text, Path("policy.yaml"))
    assert [entry.overridable for entry in document.rules] == [True, False]


# -- the tag --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("subject", "token", "justification", "cleaned"),
    [
        pytest.param(
            "Minutes [override K7P2QX9M: it is public]", "K7P2QX9M", "it is public", "Minutes", id="end"
        ),
        pytest.param("[Override k7p2qx9m:why] Minutes", "K7P2QX9M", "why", "Minutes", id="start-any-case"),
        pytest.param("Re: [override K7P2QX9M] minutes", "K7P2QX9M", "", "Re: minutes", id="no-reason"),
        pytest.param(
            "Minutes [override K7P2: short]", None, None, "Minutes [override K7P2: short]", id="short-token"
        ),
    ],
)
def test_the_tag_is_read_and_removed(
    subject: str, token: str | None, justification: str | None, cleaned: str
) -> None:
    request = parse_override(subject)
    assert (request.token if request else None) == token
    assert (request.justification if request else None) == justification
    assert without_override(subject) == cleaned


@given(
    st.text(alphabet=st.characters(blacklist_characters="]\r\n", blacklist_categories=["Cs"]), max_size=60)
)
def test_any_justification_is_read_back_and_never_left_in_the_subject(reason: str) -> None:
    subject = f"Minutes [override ABCDEFGH: {reason}]"
    request = parse_override(subject)
    assert request is not None and request.justification == " ".join(reason.split())
    assert without_override(subject) == "Minutes"


def test_untagged_changes_only_the_subject_even_when_encoded() -> None:
    content = message(
        subject="Über [override ABCDEFGH: a reason here]", body="Body [override ABCDEFGH: x]\r\n"
    )
    encoded = content.replace(
        "Subject: Über [override ABCDEFGH: a reason here]".encode(),
        b"Subject: =?utf-8?q?=C3=9Cber_=5Boverride_ABCDEFGH=3A_a_reason?=\r\n =?utf-8?q?_here=5D?=",
    )
    for original in (content, encoded):
        cleaned = untagged(original)
        parsed = email.message_from_bytes(cleaned, policy=email.policy.default)
        assert parsed["Subject"] == "Über"
        head, body = cleaned.split(b"\r\n\r\n", 1)
        assert body == original.split(b"\r\n\r\n", 1)[1]  # the body byte for byte, its text untouched
        assert [line for line in head.split(b"\r\n") if not line.startswith(b"Subject")] == [
            line
            for line in original.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
            if not line.lower().startswith((b"subject", b" "))
        ]


# -- the flow in the screener ----------------------------------------------------------------------------


def test_a_refusal_by_an_overridable_rule_offers_a_token(screener: PolicyScreener) -> None:
    reply = send(screener)
    token_in(reply)
    assert screener.overrides is not None and screener.overrides.statistics().offered_total == 1


def test_an_override_is_accepted_audited_counted_and_its_tag_removed(
    screener: PolicyScreener, settings: GatewaySettings
) -> None:
    token = token_in(send(screener))
    result = send(screener, f"Minutes [override {token}: {REASON}]", queue_id="Q2")
    assert isinstance(result, Accept)
    relayed = email.message_from_bytes(result.content, policy=email.policy.default)
    assert relayed["Subject"] == "Minutes" and REASON not in result.content.decode()
    assert result.rcpt_tos == (OUTSIDER,)  # nothing added: the override lifted the refusal
    [line] = [c for c in result.changes if "override" in c]
    reference = re.search(r"reference (ovr-[0-9a-f]+)", line)
    assert reference is not None
    screener.flush_decisions()
    [entry] = entries(settings, "override")
    assert entry["reference"] == reference.group(1) and entry["rules"] == ["conduct-cc"]
    assert (
        entry["findings"] == ["conduct-cc:CONDUCT_ADDRESS_MISSING"] and entry["member"] == "ada@example.org"
    )
    assert REASON not in str(entries(settings, "override")) and token not in str(entry)
    [decision] = [e for e in entries(settings, "decision") if e["queue_id"] == "Q2"]
    assert decision["verdict"] == "deliver"  # the lifted finding is recorded, with action audit
    findings = decision["findings"]
    assert isinstance(findings, list)
    assert [(f["code"], f["action"]) for f in findings] == [("CONDUCT_ADDRESS_MISSING", "audit")]
    assert screener.overrides is not None
    assert screener.overrides.statistics().granted == {"conduct_cc": 1}
    kept = screener.overrides.store.find(reference.group(1))
    assert kept is not None and kept.justification == REASON and kept.sender == "ada@example.org"


def test_a_retry_of_the_same_message_is_the_same_override(screener: PolicyScreener) -> None:
    token = token_in(send(screener))
    subject = f"Minutes [override {token}: {REASON}]"
    assert isinstance(send(screener, subject, queue_id="Q2"), Accept)
    assert isinstance(send(screener, subject, queue_id="Q3"), Accept)  # the client retried after a 451
    assert screener.overrides is not None and screener.overrides.statistics().granted == {"conduct_cc": 1}


def test_a_token_serves_one_message_only(screener: PolicyScreener) -> None:
    token = token_in(send(screener))
    assert isinstance(send(screener, f"Minutes [override {token}: {REASON}]"), Accept)
    again = send(screener, f"Other [override {token}: {REASON}]", mid="<m2@example.org>")
    assert isinstance(again, Reply) and "the token was used for another message already" in " ".join(
        again.lines
    )
    token_in(again)  # a fresh one is offered


def test_a_justification_is_mandatory(screener: PolicyScreener) -> None:
    token = token_in(send(screener))
    for subject in (f"Minutes [override {token}]", f"Minutes [override {token}: ok]"):
        reply = send(screener, subject)
        assert isinstance(reply, Reply) and reply.code == 550
        assert "give your reason after the token" in " ".join(reply.lines)
    assert isinstance(send(screener, f"Minutes [override {token}: {REASON}]"), Accept)  # still valid


def test_an_unknown_token_is_refused_with_a_fresh_one(screener: PolicyScreener) -> None:
    reply = send(screener, f"Minutes [override ABCDEFGH: {REASON}]")
    assert isinstance(reply, Reply) and "unknown or has expired" in " ".join(reply.lines)
    assert token_in(reply) != "ABCDEFGH"


def test_the_quota_stops_a_sender_after_count_overrides(screener: PolicyScreener) -> None:
    for number in range(2):
        token = token_in(send(screener, mid=f"<q{number}@example.org>"))
        assert isinstance(
            send(screener, f"M [override {token}: {REASON}]", mid=f"<q{number}@example.org>"), Accept
        )
    token = token_in(send(screener, mid="<q9@example.org>"))
    reply = send(screener, f"M [override {token}: {REASON}]", mid="<q9@example.org>")
    assert isinstance(reply, Reply) and "2 override(s) of conduct-cc in the last 7 days" in " ".join(
        reply.lines
    )
    assert screener.overrides is not None and screener.overrides.statistics().refused == {"quota": 1}


def test_an_identity_refusal_offers_nothing_and_a_tag_does_not_lift_it(
    screener: PolicyScreener, settings: GatewaySettings
) -> None:
    token = token_in(send(screener))
    body = "Jin Park wrote to us.\r\n"
    refused = send(screener, body=body, mid="<p1@example.org>")
    assert isinstance(refused, Reply) and "override" not in " ".join(refused.lines).lower()
    tagged = send(screener, f"Minutes [override {token}: {REASON}]", body=body, mid="<p2@example.org>")
    assert isinstance(tagged, Reply) and tagged.code == 550
    assert "override" not in " ".join(tagged.lines).lower()
    assert entries(settings, "override") == []


def test_the_override_store_is_private(screener: PolicyScreener, settings: GatewaySettings) -> None:
    token_in(send(screener))
    path = open_state(settings).layout.overrides
    assert path.stat().st_mode & 0o777 == 0o600


def test_the_committee_reads_justifications_with_the_cli(
    screener: PolicyScreener, settings: GatewaySettings, tmp_path: Path
) -> None:
    token = token_in(send(screener))
    result = send(screener, f"Minutes [override {token}: {REASON}]")
    assert isinstance(result, Accept)
    [reference] = re.findall(r"ovr-[0-9a-f]+", " ".join(result.changes))
    config = write_config(tmp_path, f"policy:\n  path: {settings.policy.path}\n")  # state_dir: ./state
    listed = CliRunner().invoke(main, ["override", "list", "--config", str(config)])
    assert listed.exit_code == 0 and reference in listed.output and "conduct-cc" in listed.output
    assert REASON not in listed.output  # the list names overrides; only `show` gives the reason
    shown = CliRunner().invoke(main, ["override", "show", reference, "--config", str(config)])
    assert shown.exit_code == 0 and json.loads(shown.output)["justification"] == REASON
    assert (json.loads(shown.output)["queue_id"], json.loads(shown.output)["case"]) == ("Q1", None)
    missing = CliRunner().invoke(main, ["override", "show", "ovr-000000000000", "--config", str(config)])
    assert missing.exit_code == 2


def test_an_override_is_linked_to_its_message_and_the_case_of_its_thread(screener: PolicyScreener) -> None:
    screener.ledger.record("<case-thread@example.org>", case="home shelf")
    content = message(subject="Minutes", cc=None, message_id="<c1@example.org>")
    content = content.replace(b"\r\n\r\n", b"\r\nIn-Reply-To: <case-thread@example.org>\r\n\r\n", 1)
    refused = screener.screen(submission(content, rcpt_tos=(OUTSIDER,), queue_id="Q1"))
    token = token_in(refused)
    tagged = content.replace(b"Subject: Minutes", f"Subject: Minutes [override {token}: {REASON}]".encode())
    granted = screener.screen(submission(tagged, rcpt_tos=(OUTSIDER,), queue_id="Q2"))
    assert isinstance(granted, Accept)
    assert screener.overrides is not None
    [record] = screener.overrides.store.since(0)
    assert (record.queue_id, record.case) == ("Q2", "home shelf")  # what case expunge looks for


def test_the_review_round_prunes_overrides_past_the_retention_but_never_inside_a_quota_period(
    tmp_path: Path,
) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY, encoding="utf-8")  # conduct-cc: a quota period of 7 days
    settings = GatewaySettings.model_validate(
        {
            "state_dir": str(tmp_path / "state"),
            "policy": {"path": str(path), "workers": 0},
            "overrides": {"retention": "1d"},
        }
    )
    now = time.time()
    with PolicyScreener.from_settings(settings) as screener:
        assert screener.overrides is not None
        store = screener.overrides.store
        made = {}
        for days in (10, 3):
            token = f"PRUNE{days:03d}"
            store.issue(token, "ada@example.org", ("conduct-cc",), now - days * 86400)
            made[days] = store.redeem(
                token,
                sender="ada@example.org",
                message=f"<p{days}@example.org>",
                rules=("conduct-cc",),
                justification=REASON,
                quotas={"conduct-cc": (9, 7 * 86400.0)},
                now=now - days * 86400,
            ).reference
        screener.review_housekeeping()
        # retention 1d, but the 7-day quota still counts the 3-day-old one: kept; the 10-day-old goes.
        assert store.find(str(made[10])) is None and store.find(str(made[3])) is not None
        assert screener.overrides.prune(screener.source.policy) == 0  # nothing more is due


def test_a_version_1_override_store_is_brought_up_to_date(tmp_path: Path) -> None:
    path = tmp_path / "overrides.sqlite3"
    old = sqlite3.connect(path)
    old.executescript(
        "CREATE TABLE tokens (digest TEXT PRIMARY KEY, sender TEXT NOT NULL, rules TEXT NOT NULL,"
        " expires REAL NOT NULL, message TEXT, reference TEXT);"
        "CREATE TABLE overrides (reference TEXT PRIMARY KEY, sender TEXT NOT NULL, rules TEXT NOT NULL,"
        " at REAL NOT NULL, justification TEXT NOT NULL);"
        "INSERT INTO overrides VALUES ('ovr-000000000001', 'ada@example.org', 'conduct-cc', 5.0, 'why not');"
        "PRAGMA user_version = 1;"
    )
    old.close()
    with OverrideStore.open(path) as store:
        record = store.find("ovr-000000000001")
        assert record is not None and (record.justification, record.queue_id, record.case) == (
            "why not",
            None,
            None,
        )
        assert store.note_report("k", "Q1", 6.0) and store.forget("lake", (), lambda text: "why" in text) == 1


# -- any verdict: an override lifts only what stops the message, and only for overridable rules ----------

_RULES = st.sampled_from(["conduct-cc", "reporter-protection", "protected-content", "engine"])
_ACTIONS = st.sampled_from(list(Action))
_DECISIONS = st.builds(
    lambda rule, action: Decision(Finding(rule, "SOME_CODE", "body", "text", "advice"), action),
    _RULES,
    _ACTIONS,
)


@functools.cache
def compiled() -> CompiledPolicy:
    return compile_policy(parse_policy_text(POLICY, Path("policy.yaml")), POLICY.encode())


@given(st.lists(_DECISIONS, max_size=5))
def test_an_override_never_lifts_a_finding_of_a_rule_that_is_not_overridable(
    decisions: list[Decision],
) -> None:
    policy = compiled()
    verdict = combine(decisions, policy.version)
    rules = overridable_rules(verdict, policy)
    if not rules:
        return
    assert verdict.outcome is Outcome.REJECT and rules == ("conduct-cc",)
    lifted = overridden(verdict, rules)
    assert lifted.outcome in (Outcome.DELIVER, Outcome.REWRITE)
    kept = Counter((d.finding.rule, d.action) for d in lifted.decisions if d.finding.rule != "conduct-cc")
    assert kept == Counter(
        (d.finding.rule, d.action) for d in verdict.decisions if d.finding.rule != "conduct-cc"
    )
