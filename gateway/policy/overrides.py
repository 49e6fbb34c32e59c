"""Overrides: a member sends a message an overridable rule refused, with a justification.

A rule entry marked ``overridable: true`` (never one protecting identities or protected content:
the schema refuses it) lets the sender of a refused message send it anyway. The refusal gives a
one-time token; the sender puts ``[override TOKEN: why]`` in the subject and sends again. This
module is the pure part: reading and removing that tag, which findings an override may lift, and
the verdict once they are lifted (their actions become ``audit``; every other finding stands).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from gateway.policy.config import OverrideQuota
from gateway.policy.engine import CompiledPolicy, combine
from gateway.policy.model import Action, Outcome, Verdict

MIN_JUSTIFICATION = 10  # characters: "ok" or "because" is not a reason anyone can review later
# No 0/O, 1/I: a token is read off a screen and typed.
TOKEN_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # noqa: S105 (not a password)
TOKEN_LENGTH = 8
# ``[override K7P2QX9M: the quoted line is my own words]``, anywhere in the subject, any case; the
# colon may be left out, and the justification may be empty (then the refusal says it is needed).
_TAG = re.compile(
    r"\s*\[\s*override\s+([A-Za-z0-9]{" + str(TOKEN_LENGTH) + r"})\s*:?\s*([^\]]*)\]\s*", re.IGNORECASE
)
# The actions an override lifts: the ones that stop a message. A rewrite or warning still applies.
_LIFTED = frozenset({Action.REJECT, Action.HOLD})


@dataclass(frozen=True)
class OverrideRequest:
    """What the sender wrote in the subject: the token, upper-cased, and the justification."""

    token: str
    justification: str

    @property
    def justified(self) -> bool:
        return len(self.justification) >= MIN_JUSTIFICATION


def parse_override(subject: str | None) -> OverrideRequest | None:
    """The override tag in ``subject`` (the first one), or None."""
    match = _TAG.search(subject or "")
    if match is None:
        return None
    return OverrideRequest(match.group(1).upper(), " ".join(match.group(2).split()))


def without_override(subject: str) -> str:
    """``subject`` without its override tags (what the recipients see)."""
    return " ".join(_TAG.sub(" ", subject).split())


def overridable_entries(policy: CompiledPolicy) -> dict[str, OverrideQuota]:
    """The rules in force marked ``overridable``, with their quotas."""
    return {
        entry.rule: entry.override_quota
        for entry in policy.document.rules
        if entry.enabled and entry.overridable
    }


def overridable_rules(verdict: Verdict, policy: CompiledPolicy) -> tuple[str, ...]:
    """The rules an override would lift for this refusal, or () when it cannot be overridden.

    Only a ``reject`` verdict can be: every finding that stops the message must come from an
    overridable rule (a finding of any other rule, or the engine's own, keeps it refused).
    """
    if verdict.outcome is not Outcome.REJECT:
        return ()
    allowed = overridable_entries(policy)
    stopping = {d.finding.rule for d in verdict.decisions if d.action in _LIFTED}
    if not stopping or not stopping <= allowed.keys():
        return ()
    return tuple(sorted(stopping))


def overridden(verdict: Verdict, rules: tuple[str, ...]) -> Verdict:
    """``verdict`` with the stopping findings of ``rules`` recorded only (``audit``)."""
    lifted = frozenset(rules)
    decisions = [
        replace(d, action=Action.AUDIT) if d.finding.rule in lifted and d.action in _LIFTED else d
        for d in verdict.decisions
    ]
    return combine(decisions, verdict.policy_version)


def lifted_codes(verdict: Verdict, rules: tuple[str, ...]) -> tuple[str, ...]:
    """``rule:CODE`` of each finding an override of ``rules`` lifts (for the audit trail)."""
    return tuple(
        sorted(
            {
                f"{d.finding.rule}:{d.finding.code}"
                for d in verdict.decisions
                if d.finding.rule in rules and d.action in _LIFTED
            }
        )
    )
