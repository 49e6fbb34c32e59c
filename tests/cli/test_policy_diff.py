"""`conduct-gateway policy diff`: replay retained and given mail through both policies, list what changes."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.cli import main
from gateway.decision.evaluation import evaluate_submission
from gateway.decision.policy_diff import Replayed, replay
from gateway.decision.screening import Submission
from gateway.policy.engine import CompiledPolicy, compile_policy
from gateway.policy.loader import parse_policy_text
from gateway.state.spool import QueueState, Spool, SpoolEnvelope
from tests.cli.conftest import write_config
from tests.test_policy_screener import POLICY, message

CANDIDATE = POLICY.replace(
    "  - rule: conduct-cc\n    action: rewrite\n", "  - rule: conduct-cc\n    action: reject\n"
)
ADA, OUTSIDER, CONDUCT = "ada@example.org", "olive@example.net", "conduct@example.org"
SECRET = "Jin Park"  # a protected name: must never be printed


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, Path, Path]:
    """(settings file, candidate policy, folder of .eml files)."""
    (tmp_path / "policy.yaml").write_text(POLICY, encoding="utf-8")
    candidate = tmp_path / "candidate.yaml"
    candidate.write_text(CANDIDATE, encoding="utf-8")
    config = write_config(tmp_path, f"policy:\n  path: {tmp_path / 'policy.yaml'}\n")
    folder = tmp_path / "mail"
    folder.mkdir()
    (folder / "clean.eml").write_bytes(message(subject="Minutes"))
    (folder / "no-cc.eml").write_bytes(message(cc=None, subject="Minutes again"))
    (folder / "named.eml").write_bytes(message(cc=None, body=f"Hello,\r\n\r\n{SECRET} wrote to us.\r\n"))
    (folder / "notes.txt").write_text("not a message", encoding="utf-8")
    return config, candidate, folder


def run(config: Path, *args: str) -> Result:
    return CliRunner().invoke(main, ["policy", "diff", *args, "--config", str(config)])


def test_lists_the_messages_whose_verdict_would_change_and_why(setup: tuple[Path, Path, Path]) -> None:
    config, candidate, folder = setup
    result = run(config, str(candidate), "--eml-folder", str(folder))
    assert result.exit_code == 1, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["MESSAGE", "IN", "FORCE", "NEW", "RULES", "FINDINGS"]
    assert lines[1].split() == [
        "no-cc.eml",
        "rewrite",
        "reject",
        "conduct-cc",
        "-conduct-cc:CONDUCT_ADDRESS_MISSING:rewrite",
        "+conduct-cc:CONDUCT_ADDRESS_MISSING:reject",
    ]
    # named.eml is refused by both (the protected name); clean.eml is delivered by both.
    assert len(lines) == 3 and "clean.eml" not in result.output and "named.eml" not in result.output
    assert (
        lines[2]
        == "3 message(s) replayed through policy " + lines[2].split()[5] + lines[2][lines[2].index(" (in") :]
    )
    assert "1 verdict(s) would change" in lines[2]
    assert SECRET not in result.output and "Minutes" not in result.output


def test_json_rows_for_scripts(setup: tuple[Path, Path, Path]) -> None:
    config, candidate, folder = setup
    result = run(config, str(candidate), "--eml-folder", str(folder), "--json")
    assert result.exit_code == 1
    assert json.loads(result.output) == [
        {
            "message": "no-cc.eml",
            "old": "rewrite",
            "new": "reject",
            "rules": ["conduct-cc"],
            "findings": [
                "-conduct-cc:CONDUCT_ADDRESS_MISSING:rewrite",
                "+conduct-cc:CONDUCT_ADDRESS_MISSING:reject",
            ],
        }
    ]


def test_the_same_policy_changes_nothing_and_exits_0(setup: tuple[Path, Path, Path], tmp_path: Path) -> None:
    config, _candidate, folder = setup
    result = run(config, str(tmp_path / "policy.yaml"), "--eml-folder", str(folder))
    assert result.exit_code == 0, result.output
    assert result.output.strip().endswith("0 verdict(s) would change.")


def test_messages_kept_in_the_done_folder_are_replayed_by_queue_id(setup: tuple[Path, Path, Path]) -> None:
    config, candidate, _folder = setup
    spool = Spool(config.parent / "state" / "spool")
    queue_ids = [
        _done(spool, message(cc=None), "ada@example.org"),
        _done(spool, message(), "ada@example.org"),
    ]
    _done(spool, message(cc=None), "")  # a notice the gateway wrote: never replayed
    result = run(config, str(candidate))
    assert result.exit_code == 1, result.output
    assert queue_ids[0] in result.output and queue_ids[1] not in result.output
    assert "3 message(s) replayed" not in result.output and "2 message(s) replayed" in result.output


def test_an_invalid_new_policy_is_exit_2_naming_file_and_line(setup: tuple[Path, Path, Path]) -> None:
    config, candidate, _folder = setup
    candidate.write_text(POLICY.replace("action: reject", "action: refuse"), encoding="utf-8")
    result = run(config, str(candidate))
    assert result.exit_code == 2
    assert "candidate.yaml" in result.output and "line" in result.output


def test_a_missing_folder_is_exit_2(setup: tuple[Path, Path, Path], tmp_path: Path) -> None:
    config, candidate, _folder = setup
    result = run(config, str(candidate), "--eml-folder", str(tmp_path / "nowhere"))
    assert result.exit_code == 2


def _done(spool: Spool, content: bytes, sender: str) -> str:
    queue_id = Spool.new_queue_id()
    envelope = SpoolEnvelope(
        queue_id=queue_id,
        mail_from=sender,
        rcpt_tos=("olive@example.net", "conduct@example.org")
        if b"Cc:" in content
        else ("olive@example.net",),
        authenticated_as=sender,
        received_at=time.time(),
    )

    async def go() -> None:
        await spool.commit(envelope, content)
        await spool.move(queue_id, QueueState.INCOMING, QueueState.DONE)

    asyncio.run(go())
    return queue_id


# -- any policy pair ------------------------------------------------------------------------------

RULE_TEXT = {
    "conduct-cc": "  - rule: conduct-cc\n    action: {action}\n",
    "recipient-banner": "  - rule: recipient-banner\n    action: {action}\n",
    "reporter-protection": "  - rule: reporter-protection\n    action: {action}\n",
}
ACTIONS = st.sampled_from(["reject", "rewrite", "hold", "warn", "audit"])
_HEAD = POLICY[: POLICY.index("rules:\n")]
_CASES = POLICY[POLICY.index("cases:\n") :]
MESSAGES = [
    Replayed(
        f"m{number}",
        Submission(
            queue_id=f"m{number}",
            mail_from="ada@example.org",
            rcpt_tos=rcpts,
            authenticated_as="ada@example.org",
            content=content,
        ),
    )
    for number, (content, rcpts) in enumerate(
        [
            (message(), ("olive@example.net", "conduct@example.org")),
            (message(cc=None), ("olive@example.net",)),
            (message(body=f"{SECRET} said so.\r\n"), ("olive@example.net", "conduct@example.org")),
            (message(cc=None, body="JP again.\r\n"), ("olive@example.net",)),
        ]
    )
]


@st.composite
def policies(draw: st.DrawFn) -> CompiledPolicy:
    actions = {rule: draw(ACTIONS) for rule in RULE_TEXT}
    text = _HEAD + "rules:\n" + "".join(RULE_TEXT[r].format(action=a) for r, a in actions.items()) + _CASES
    return compile_policy(parse_policy_text(text, Path("drawn.yaml")), text.encode())


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(policies(), policies())
def test_any_policy_pair_lists_exactly_the_messages_whose_verdict_differs(
    old: CompiledPolicy, new: CompiledPolicy
) -> None:
    expected = {
        m.name
        for m in MESSAGES
        if evaluate_submission(m.submission, old, None).verdict.outcome
        != evaluate_submission(m.submission, new, None).verdict.outcome
    }
    report = replay(MESSAGES, old, new)
    assert {row.name for row in report.rows} == expected
    assert report.replayed == len(MESSAGES) and report.verdicts_changed == len(expected)
    assert all(row.old != row.new for row in report.rows)
