"""The committee digest: counts equal the audit events, periods are sent once each across restarts, and
the mail names no protected identity."""

from __future__ import annotations

import datetime
import textwrap
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from gateway.decision.digest import (
    DIGEST_EVENT,
    FALSE_POSITIVE_EVENT,
    MAX_CATCH_UP,
    POLICY_EVENT,
    Window,
    count,
    digest_text,
    due,
    last_completed,
)
from gateway.decision.digest_schedule import DigestSchedule
from gateway.decision.policy_screener import PolicyScreener
from gateway.decision.screening import Accept, Submission
from gateway.policy.engine import protected_identities
from gateway.policy.loader import read_policy
from gateway.policy.variants import FormKind, forms
from gateway.settings import GatewaySettings, PolicySettings
from gateway.state.audit_reading import read_entries
from gateway.state.opening import open_state
from gateway.state.spool_records import QueueState

UTC = datetime.UTC
MONDAY = datetime.datetime(2026, 11, 30, tzinfo=UTC)
WEEK = Window("weekly", MONDAY - datetime.timedelta(days=7), MONDAY)


def at(days: float) -> str:
    """An audit time ``days`` after the week's start."""
    moment = WEEK.start + datetime.timedelta(days=days)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


# -- periods ---------------------------------------------------------------------------------------


def test_periods_end_at_midnight_utc_and_on_mondays() -> None:
    wednesday = datetime.datetime(2026, 12, 2, 15, 30, tzinfo=UTC)
    assert last_completed("daily", wednesday) == Window(
        "daily", datetime.datetime(2026, 12, 1, tzinfo=UTC), datetime.datetime(2026, 12, 2, tzinfo=UTC)
    )
    assert last_completed("weekly", wednesday) == WEEK


def test_due_sends_each_missed_period_once_oldest_first() -> None:
    now = datetime.datetime(2026, 12, 4, 1, tzinfo=UTC)
    assert due("daily", None, now) == [last_completed("daily", now)]
    three_days_ago = datetime.datetime(2026, 12, 1, tzinfo=UTC)
    missed = due("daily", three_days_ago, now)
    assert [w.end.day for w in missed] == [2, 3, 4]
    assert due("daily", missed[-1].end, now) == []
    assert len(due("daily", datetime.datetime(2020, 1, 1, tzinfo=UTC), now)) == MAX_CATCH_UP
    assert (
        len({w.queue_id for w in missed}) == 3
        and missed[0].queue_id == due("daily", three_days_ago, now)[0].queue_id
    )


# -- counts ----------------------------------------------------------------------------------------

_VERDICTS = st.sampled_from(["deliver", "rewrite", "hold", "reject", "tempfail"])
_RULES = st.sampled_from(["conduct-cc", "reporter-protection", "list-reply-all", "code-names"])
_ACTIONS = st.sampled_from(["rewrite", "hold", "reject", "warn", "audit"])
_REFERENCE = st.text(alphabet="0123456789ABCDEF", min_size=8, max_size=22)


@st.composite
def audit_event(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(["decision", "review", "override", "fp", "policy", "case", "other"]))
    fields: dict[str, Any] = {"time": at(draw(st.floats(min_value=-3, max_value=10)))}
    if kind == "decision":
        findings = draw(st.lists(st.fixed_dictionaries({"rule": _RULES, "action": _ACTIONS}), max_size=3))
        fields |= {
            "event": "decision",
            "verdict": draw(_VERDICTS),
            "findings": findings,
            "queue_id": draw(_REFERENCE),
        }
    elif kind == "review":
        step = draw(st.sampled_from(["approve", "reject", "cancel", "expire", "release", "prune"]))
        fields |= {"event": "review", "review": step, "queue_id": draw(_REFERENCE)}
    elif kind == "override":
        name = draw(st.sampled_from(["override", "override-used", "policy-override"]))
        fields |= {"event": name, "reference": draw(_REFERENCE)}
    elif kind == "fp":
        fields |= {"event": FALSE_POSITIVE_EVENT, "reference": draw(_REFERENCE), "queue_id": "Q"}
    elif kind == "policy":
        fields |= {"event": POLICY_EVENT, "action": draw(st.sampled_from(["reloaded", "refused"]))}
    else:
        fields |= {"event": draw(st.sampled_from(["case", "shadow-difference", DIGEST_EVENT]))}
    return fields


def _inside(fields: Mapping[str, Any]) -> bool:
    moment = datetime.datetime.fromisoformat(str(fields["time"]).replace("Z", "+00:00"))
    return WEEK.start <= moment < WEEK.end


@given(
    events=st.lists(audit_event(), max_size=40),
    failures=st.lists(st.floats(min_value=-3, max_value=10), max_size=5),
)
def test_any_set_of_audit_events_gives_digest_counts_equal_to_the_event_counts(
    events: list[dict[str, Any]], failures: list[float]
) -> None:
    failure_times = [WEEK.start + datetime.timedelta(days=d) for d in failures]
    counts = count(events, WEEK, failure_times)
    inside = [e for e in events if _inside(e)]
    assert counts.events == Counter(e["event"] for e in inside)
    decisions = [e for e in inside if e["event"] == "decision"]
    assert counts.verdicts == Counter(e["verdict"] for e in decisions)
    assert counts.holds == sum(e["verdict"] == "hold" for e in decisions)
    assert counts.rule_outcomes == Counter((f["rule"], f["action"]) for e in decisions for f in e["findings"])
    reviews = [e for e in inside if e["event"] == "review"]
    assert counts.decisions == Counter(
        e["review"] for e in reviews if e["review"] in {"approve", "reject", "cancel"}
    )
    assert counts.expiries == sum(e["review"] == "expire" for e in reviews)
    overrides = [e for e in inside if "override" in e["event"]]
    assert sum(counts.overrides.values()) == len(overrides)
    assert counts.override_references == [e["reference"] for e in overrides]
    assert counts.false_positives == [e["reference"] for e in inside if e["event"] == FALSE_POSITIVE_EVENT]
    policy = [e["action"] for e in inside if e["event"] == POLICY_EVENT]
    assert (counts.reloads, counts.reload_refusals) == (policy.count("reloaded"), policy.count("refused"))
    assert counts.delivery_failures == sum(WEEK.holds(t) for t in failure_times)
    text = digest_text(WEEK, counts)
    assert f"Overrides: {len(overrides)}" in text
    assert f'"False positive" reports on refusals: {len(counts.false_positives)}' in text


def test_time_to_decision_counts_a_hold_made_before_the_period() -> None:
    events = [
        {"event": "decision", "verdict": "hold", "queue_id": "H1", "time": at(-0.5)},
        {"event": "review", "review": "approve", "queue_id": "H1", "time": at(0.5)},
        {"event": "decision", "verdict": "hold", "queue_id": "H2", "time": at(1)},
        {"event": "review", "review": "expire", "queue_id": "H2", "time": at(4)},
    ]
    counts = count(events, WEEK)
    assert (counts.holds, counts.decisions["approve"], counts.expiries, counts.waits) == (1, 1, 1, [86400.0])
    assert "median 1.0 days" in digest_text(WEEK, counts)


# -- sending, restarts, and no protected identity ---------------------------------------------------

CONDUCT = "conduct@example.org"
ADA = "ada@example.org"
POLICY = textwrap.dedent(
    f"""\
    organisation:
      conduct_address: {CONDUCT}
      members:
        - name: Ada Quill
          addresses: [{ADA}]
    rules:
      - rule: conduct-cc
        action: rewrite
      - rule: reporter-protection
        action: reject
    cases:
      - code: home shelf
        reporters:
          - id: quiet-heron
            names: [Jorunn Halvorsen-Bakke]
            aliases: [Jojo]
            addresses: [jorunn.hb@mail.example.net]
            usernames: [jorunn_hb]
    """
)


def protected_patterns(policy: Path) -> list[str]:
    document = read_policy(policy)[0]
    return sorted(
        {
            form.pattern
            for identity in protected_identities(document)
            for form in forms(identity)
            if form.kind is not FormKind.SPACED and len(form.pattern) >= 4
        }
    )


def assert_names_no_protected_form(text: str, patterns: list[str]) -> None:
    lowered = text.lower()
    assert patterns
    for pattern in patterns:
        assert pattern not in lowered, pattern


async def test_a_digest_is_spooled_once_per_period_across_restarts_and_names_nobody(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY, encoding="utf-8")
    settings = GatewaySettings(state_dir=tmp_path / "state", policy=PolicySettings(path=policy))
    with PolicyScreener.from_settings(settings) as screener:
        bodies = ["Jojo told us.", "Write to jorunn.hb@mail.example.net", "Hello."]
        for number, (subject, body) in enumerate(
            zip(["Jorunn Halvorsen-Bakke", "Hi", "Hi"], bodies, strict=True)
        ):
            content = (
                f"From: Ada <{ADA}>\r\nTo: x@example.com\r\nCc: {CONDUCT}\r\nSubject: {subject}\r\n"
                f"Message-ID: <m{number}@example.org>\r\n\r\n{body}\r\n"
            ).encode()
            submission = Submission(f"Q{number}", ADA, ("x@example.com", CONDUCT), ADA, content)
            verdict = screener.screen(submission)
            if isinstance(verdict, Accept):
                screener.accepted(submission, verdict)  # as commit records it once spooled
        screener.flush_decisions()
    state = open_state(settings)
    spool = state.queue.open()
    now = [datetime.datetime.now(UTC)]

    def schedule() -> DigestSchedule:
        return DigestSchedule(
            "daily",
            audit=state.audit,
            spool=spool,
            policy=lambda: screener.source.policy,
            hostname="gw.example.org",
            clock=lambda: now[0],
            periods=state.digests,
        )

    first = schedule()
    assert await first.run() == 0  # the very first start: a baseline, no digest of a period before it
    with state.audit.open() as writer:
        state.audit.drain_later(writer)
    now[0] += datetime.timedelta(days=1)
    first = schedule()
    assert await first.run() == 1
    assert await first.run() == 0
    assert await schedule().run() == 0  # a restart before the event reached the trail: the queue knows
    [entry] = spool.entries(QueueState.INCOMING)
    message = spool.load(entry.queue_id)
    assert message.envelope.rcpt_tos == (CONDUCT,) and message.envelope.mail_from == ""
    text = message.content.decode()
    assert "X-Conduct-Gateway-Notice: digest" in text and "Auto-Submitted: auto-generated" in text
    assert "Messages by verdict:\r\n  deliver  1\r\n  reject   2\r\n" in text
    trail = [e.fields for e in read_entries(state.layout.audit) if e.fields["event"] == "decision"]
    findings = Counter((f["rule"], f["action"]) for e in trail for f in e["findings"])
    assert findings[("reporter-protection", "reject")] >= 2
    for (rule, action), number in findings.items():
        assert f"{rule} -> {action}" in text and f"-> {action}  {number}\r\n" in text
    assert_names_no_protected_form(text, protected_patterns(policy))

    # The "later" entries reach the trail (the gateway's review round); two more days pass.
    with state.audit.open() as writer:
        state.audit.drain_later(writer)
    # The restart before the event reached the trail did not record the period again (issue 18).
    recorded = [
        (e.fields["period"], e.fields["end"], e.fields.get("baseline", False))
        for e in read_entries(state.layout.audit)
        if e.fields["event"] == DIGEST_EVENT
    ]
    assert sorted(baseline for _period, _end, baseline in recorded) == [False, True]
    now[0] += datetime.timedelta(days=2)
    assert await schedule().run() == 2
    assert len(spool.entries(QueueState.INCOMING)) == 3
