"""``policy diff``'s core: replay messages through the policy in force and a candidate, and compare.

Each message is evaluated exactly as the screener does (``evaluate_submission``: parse, thread facts,
rules) under both policies; a row is kept for each message whose verdict, or with ``findings``
whose findings, would change. A row names the message by its queue id or file name and says how
the verdicts differ (``gateway.policy.verdict_diff``): never the message's content.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from gateway.decision.evaluation import evaluate_submission
from gateway.mail.messages import Submission
from gateway.policy.engine import CompiledPolicy
from gateway.policy.model import NO_FINGERPRINTS, ContentFingerprints, Verdict
from gateway.policy.verdict_diff import VerdictDifference, diff_verdicts
from gateway.state.ports import LedgerPort

# The verdict shown for a message the engine could not evaluate (the live gateway answers 451).
ERROR = "error"


@dataclass(frozen=True)
class Replayed:
    """One message to replay: where it came from (a queue id or a file name) and its submission."""

    name: str
    submission: Submission


@dataclass(frozen=True)
class DiffRow:
    """A message whose verdict (or findings) would change, and why."""

    name: str
    old: str
    new: str
    rules: tuple[str, ...]
    findings: tuple[str, ...]  # ``-rule:CODE:action`` (only in force) / ``+rule:CODE:action`` (only new)

    @property
    def verdict_changed(self) -> bool:
        return self.old != self.new

    @classmethod
    def of(cls, name: str, difference: VerdictDifference) -> DiffRow:
        return cls(
            name, difference.enforced, difference.candidate, difference.rule_names(), difference.codes()
        )


@dataclass(frozen=True)
class DiffReport:
    """What a replay found: the rows, and how many messages were replayed."""

    rows: tuple[DiffRow, ...]
    replayed: int

    @property
    def verdicts_changed(self) -> int:
        return sum(1 for row in self.rows if row.verdict_changed)


def replay(
    messages: Iterable[Replayed],
    in_force: CompiledPolicy,
    candidate: CompiledPolicy,
    ledger: LedgerPort | None = None,
    protected_content: ContentFingerprints = NO_FINGERPRINTS,
    *,
    findings: bool = False,
) -> DiffReport:
    """Evaluate every message under both policies; rows for those whose verdict would change
    (``findings``: also those whose findings change under the same verdict)."""
    rows: list[DiffRow] = []
    count = 0
    for message in messages:
        count += 1
        row = _compare(message, in_force, candidate, ledger, protected_content)
        if row is not None and (findings or row.verdict_changed):
            rows.append(row)
    return DiffReport(tuple(rows), count)


def _compare(
    message: Replayed,
    in_force: CompiledPolicy,
    candidate: CompiledPolicy,
    ledger: LedgerPort | None,
    protected_content: ContentFingerprints,
) -> DiffRow | None:
    old = _verdict(message, in_force, ledger, protected_content)
    new = _verdict(message, candidate, ledger, protected_content)
    if isinstance(old, Verdict) and isinstance(new, Verdict):
        difference = diff_verdicts(old, new)
        return DiffRow.of(message.name, difference) if difference is not None else None
    old_text, new_text = _shown(old), _shown(new)
    return DiffRow(message.name, old_text, new_text, (), ()) if old_text != new_text else None


def _verdict(
    message: Replayed, policy: CompiledPolicy, ledger: LedgerPort | None, protected: ContentFingerprints
) -> Verdict | str:
    """The verdict, or the name of the exception the evaluation raised (never its text, which
    could quote the message)."""
    try:
        return evaluate_submission(message.submission, policy, ledger, protected).verdict
    except Exception as exc:
        return type(exc).__name__


def _shown(verdict: Verdict | str) -> str:
    return verdict.outcome.value if isinstance(verdict, Verdict) else f"{ERROR} ({verdict})"
