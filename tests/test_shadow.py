"""Shadow evaluation: a candidate policy judges live mail, records each difference, acts on nothing."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.decision import shadow as shadow_module
from gateway.decision.evaluation import evaluate_submission
from gateway.decision.policy_screener import PolicyScreener
from gateway.decision.screening import Accept, Submission
from gateway.metrics import build_registry
from gateway.policy.model import Action, Decision, Finding, Outcome, Verdict
from gateway.policy.verdict_diff import diff_verdicts
from gateway.replies import Reply
from gateway.settings import GatewaySettings, PolicySettings
from gateway.state.audit import audit_dir
from gateway.state.audit_reading import read_entries
from gateway.state.opening import open_state
from tests.test_policy_screener import POLICY, message, submission

# The candidate refuses a message without the conduct address instead of adding it.
CANDIDATE = POLICY.replace(
    "  - rule: conduct-cc\n    action: rewrite\n", "  - rule: conduct-cc\n    action: reject\n"
)
assert CANDIDATE != POLICY


def entries(settings: GatewaySettings, event: str) -> list[dict[str, object]]:
    return [dict(e.fields) for e in read_entries(audit_dir(settings.state_dir)) if e.fields["event"] == event]


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    enforced, candidate = tmp_path / "policy.yaml", tmp_path / "candidate.yaml"
    enforced.write_text(POLICY, encoding="utf-8")
    candidate.write_text(CANDIDATE, encoding="utf-8")
    return enforced, candidate


def settings_for(tmp_path: Path, enforced: Path, candidate: Path | None) -> GatewaySettings:
    return GatewaySettings(
        state_dir=tmp_path / "state", policy=PolicySettings(path=enforced, shadow=candidate, workers=0)
    )


@pytest.fixture
def settings(tmp_path: Path, files: tuple[Path, Path]) -> GatewaySettings:
    return settings_for(tmp_path, *files)


@pytest.fixture
def screener(settings: GatewaySettings) -> Iterator[PolicyScreener]:
    with PolicyScreener.from_settings(settings) as opened:
        yield opened


def shadowed(
    screener: PolicyScreener, content: bytes, rcpt_tos: tuple[str, ...] = ("olive@example.net",)
) -> Accept | Reply:
    """Screen as the gateway does, then let the shadow evaluate it (as its thread would)."""
    sub = submission(content, rcpt_tos=rcpt_tos)
    result = screener.screen(sub)
    assert screener.shadow is not None
    screener.shadow.evaluate(sub, enforced_verdict(screener, sub))
    return result


def enforced_verdict(screener: PolicyScreener, sub: Submission) -> Verdict:
    return evaluate_submission(sub, screener.source.policy, None).verdict


def test_a_difference_is_recorded_and_the_message_is_decided_by_the_policy_in_force(
    tmp_path: Path, files: tuple[Path, Path], screener: PolicyScreener, settings: GatewaySettings
) -> None:
    content = message(cc=None)
    result = shadowed(screener, content)
    with PolicyScreener.from_settings(settings_for(tmp_path / "plain", files[0], None)) as plain:
        alone = plain.screen(submission(content, rcpt_tos=("olive@example.net",)))
    assert isinstance(result, Accept) and isinstance(alone, Accept)
    assert result.content == alone.content and result.rcpt_tos == alone.rcpt_tos  # nothing acted on
    screener.flush_decisions()
    [entry] = entries(settings, "shadow-difference")
    assert entry["queue_id"] == "Q1"
    assert (entry["verdict"], entry["shadow_verdict"]) == ("rewrite", "reject")
    assert entry["rules"] == ["conduct-cc"]
    assert entry["findings"] == [
        "-conduct-cc:CONDUCT_ADDRESS_MISSING:rewrite",
        "+conduct-cc:CONDUCT_ADDRESS_MISSING:reject",
    ]
    assert entry["policy_version"] != entry["shadow_version"]
    assert "minutes" not in str(entry) and "olive" not in str(entry)  # no content, no recipient
    stats = screener.shadow.statistics() if screener.shadow else None
    assert stats is not None and stats.differences_total == 1 and stats.evaluated_total == 1
    assert stats.verdict_changes == {"rewrite_to_reject": 1}
    assert stats.rule_differences == {"conduct_cc": 1}


def test_the_same_verdict_records_nothing(screener: PolicyScreener, settings: GatewaySettings) -> None:
    shadowed(screener, message(), rcpt_tos=("olive@example.net", "conduct@example.org"))
    screener.flush_decisions()
    assert entries(settings, "shadow-difference") == []
    assert screener.shadow is not None and screener.shadow.statistics().evaluated_total == 1


def test_differences_are_exported_as_typed_metrics(screener: PolicyScreener) -> None:
    shadowed(screener, message(cc=None))
    from prometheus_client import generate_latest

    text = generate_latest(build_registry(screener.metric_sources())).decode()
    assert "# TYPE conduct_gateway_shadow_differences_total counter" in text
    assert "conduct_gateway_shadow_differences_total 1.0" in text
    assert 'conduct_gateway_shadow_verdict_changes_total{change="rewrite_to_reject"} 1.0' in text
    assert "conduct_gateway_shadow_policy_unusable 0.0" in text


def test_a_candidate_that_cannot_be_loaded_is_reported_and_ignored(
    tmp_path: Path, files: tuple[Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    files[1].write_text("rules: [", encoding="utf-8")
    with (
        caplog.at_level(logging.ERROR, logger="gateway"),
        PolicyScreener.from_settings(settings_for(tmp_path, *files)) as screener,
    ):
        result = shadowed(screener, message(cc=None))
        assert isinstance(result, Accept)  # the policy in force decided, as without a shadow
        assert screener.shadow is not None
        stats = screener.shadow.statistics()
    assert stats.load_failed == 1 and stats.evaluated_total == 0 and stats.skipped_total == 1
    assert "event=shadow-policy-unusable" in caplog.text and "candidate.yaml" in caplog.text


def test_a_candidate_that_raises_is_counted_and_the_message_is_unaffected(
    screener: PolicyScreener, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*_args: object, **_kwargs: object) -> object:
        raise RuntimeError("Jin Park")

    monkeypatch.setattr(shadow_module, "evaluate_submission", broken)
    with caplog.at_level(logging.ERROR, logger="gateway"):
        result = shadowed(screener, message(cc=None))
    assert isinstance(result, Accept)
    assert screener.shadow is not None and screener.shadow.statistics().errors_total == 1
    assert "error=RuntimeError" in caplog.text and "Jin" not in caplog.text


async def test_the_running_screener_hands_messages_to_the_shadow_thread(
    screener: PolicyScreener, settings: GatewaySettings
) -> None:
    assert screener.shadow is not None
    await screener.start()
    try:
        result = await screener.screen_async(submission(message(cc=None), rcpt_tos=("olive@example.net",)))
        assert isinstance(result, Accept)
        for _ in range(500):  # the shadow's thread takes it in its own time (bounded wait, not a timing)
            if screener.shadow.statistics().evaluated_total:
                break
            await asyncio.sleep(0.02)
    finally:
        await screener.stop()
    screener.flush_decisions()
    assert screener.shadow.statistics().differences_total == 1
    [entry] = entries(settings, "shadow-difference")
    assert entry["shadow_verdict"] == "reject"


def test_a_full_backlog_skips_instead_of_waiting(
    screener: PolicyScreener, settings: GatewaySettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shadow_module, "BACKLOG", 1)
    evaluator = shadow_module.ShadowEvaluator(Path("unused.yaml"), open_state(settings), screener.audit)
    busy = threading.Event()  # a shadow thread stuck on its first message: the backlog never drains
    monkeypatch.setattr(evaluator, "evaluate", lambda *_args: busy.wait())
    sub = submission(message())
    verdict = enforced_verdict(screener, sub)
    evaluator.start()
    try:
        for _ in range(5):
            evaluator.observe(sub, verdict)  # returns at once whatever the shadow is doing
        stats = evaluator.statistics()
        # One taken by the stuck thread (or still queued), one queued, the rest skipped.
        assert stats.backlog <= 1 and stats.skipped_total >= 3
    finally:
        busy.set()
        evaluator.stop()


# -- the comparison itself ---------------------------------------------------------------------------

RULES = st.sampled_from(["conduct-cc", "communication", "reporter-protection"])
CODES = st.sampled_from(["A_CODE", "B_CODE"])
ACTIONS = st.sampled_from([Action.AUDIT, Action.WARN, Action.REWRITE, Action.HOLD, Action.REJECT])
DECISIONS = st.builds(
    lambda rule, code, action: Decision(Finding(rule, code, "body", "text", "advice"), action),
    RULES,
    CODES,
    ACTIONS,
)


def verdicts() -> st.SearchStrategy[Verdict]:
    return st.builds(
        lambda outcome, decisions: Verdict(outcome, tuple(decisions), "v1"),
        st.sampled_from(list(Outcome)),
        st.lists(DECISIONS, max_size=4),
    )


@given(verdicts(), verdicts())
def test_a_difference_lists_exactly_the_findings_only_one_verdict_has(
    enforced: Verdict, candidate: Verdict
) -> None:
    def keyed(verdict: Verdict) -> Counter[str]:
        return Counter(f"{d.finding.rule}:{d.finding.code}:{d.action.value}" for d in verdict.decisions)

    difference = diff_verdicts(enforced, candidate)
    mine, theirs = keyed(enforced), keyed(candidate)
    if enforced.outcome == candidate.outcome and mine == theirs:
        assert difference is None
        return
    assert difference is not None
    assert (difference.enforced, difference.candidate) == (enforced.outcome.value, candidate.outcome.value)
    assert Counter(c[1:] for c in difference.codes() if c[0] == "-") == mine - theirs
    assert Counter(c[1:] for c in difference.codes() if c[0] == "+") == theirs - mine
    assert diff_verdicts(candidate, enforced) is not None
