"""How two verdicts on one message differ: the outcome, and by rule the findings only one of them has.

Used by shadow evaluation and ``policy diff`` to say what a policy edit would change. A difference
names rules, finding codes and actions only: never a finding's place, advice or matched text.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from gateway.policy.model import Verdict


@dataclass(frozen=True)
class RuleDifference:
    """One rule's findings that only one verdict has, as ``CODE:action`` (sorted, repeats kept)."""

    rule: str
    only_enforced: tuple[str, ...]
    only_candidate: tuple[str, ...]


@dataclass(frozen=True)
class VerdictDifference:
    """The enforced and the candidate verdict's outcomes, and the rules whose findings differ."""

    enforced: str
    candidate: str
    rules: tuple[RuleDifference, ...]

    @property
    def verdict_changed(self) -> bool:
        return self.enforced != self.candidate

    def rule_names(self) -> tuple[str, ...]:
        return tuple(difference.rule for difference in self.rules)

    def codes(self) -> tuple[str, ...]:
        """Every differing finding, as ``rule:CODE:action`` with ``-`` (enforced only) or ``+``
        (candidate only) before it."""
        return (
            *(f"-{d.rule}:{code}" for d in self.rules for code in d.only_enforced),
            *(f"+{d.rule}:{code}" for d in self.rules for code in d.only_candidate),
        )


def _findings(verdict: Verdict) -> Counter[tuple[str, str]]:
    return Counter((d.finding.rule, f"{d.finding.code}:{d.action.value}") for d in verdict.decisions)


def diff_verdicts(enforced: Verdict, candidate: Verdict) -> VerdictDifference | None:
    """None when both verdicts have the same outcome and the same findings with the same actions."""
    mine, theirs = _findings(enforced), _findings(candidate)
    only_mine, only_theirs = mine - theirs, theirs - mine
    if enforced.outcome == candidate.outcome and not only_mine and not only_theirs:
        return None
    rules = sorted({rule for rule, _ in only_mine} | {rule for rule, _ in only_theirs})
    return VerdictDifference(
        enforced=enforced.outcome.value,
        candidate=candidate.outcome.value,
        rules=tuple(
            RuleDifference(
                rule,
                tuple(sorted(code for (r, code) in only_mine.elements() if r == rule)),
                tuple(sorted(code for (r, code) in only_theirs.elements() if r == rule)),
            )
            for rule in rules
        ),
    )
