"""Overrides in the running gateway: offer a token with a refusal, redeem it, say why not.

``Overrides.consider`` looks at each evaluated message. A refusal that only overridable rules
caused (``gateway.policy.overrides``) gets a one-time token and the words telling the sender how
to use it; a message that carries ``[override TOKEN: why]`` in its subject and would be refused only
by overridable rules is let through once the token, the justification and the rule's quota check
out (``gateway.state.overrides``): its verdict has those findings lifted, the tag is taken out of
the subject, the override is audited (``override``: reference id, rules, finding codes; never the
justification, kept in the override store, linked to the message and its thread's case so that
``case expunge`` removes it) and counted for /metrics. ``prune``, at each review round, deletes
expired tokens and overrides past ``overrides.retention`` (never sooner than the policy's longest
quota period, which counts them).
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from email.header import Header, decode_header, make_header

from gateway.decision.evaluation import Evaluation, relayed_content
from gateway.decision.facts import case_of
from gateway.errors import PolicyError
from gateway.logs import log_event
from gateway.mail.messages import Submission
from gateway.mail.verdict_replies import safe_reference
from gateway.policy.engine import CompiledPolicy
from gateway.policy.overrides import (
    MIN_JUSTIFICATION,
    TOKEN_ALPHABET,
    TOKEN_LENGTH,
    OverrideRequest,
    lifted_codes,
    overridable_entries,
    overridable_rules,
    overridden,
    parse_override,
    without_override,
)
from gateway.state.overrides import DEFAULT_RETENTION, TOKEN_LIFETIME, Redeemed
from gateway.state.ports import AuditWriterPort, OverridesPort

log = logging.getLogger("gateway.policy.overrides")

AUDIT_EVENT = "override"


@dataclass(frozen=True)
class OverrideStatistics:
    """Snapshot for metrics."""

    granted: Mapping[str, int] = field(default_factory=dict)  # by rule (hyphens as underscores)
    refused: Mapping[str, int] = field(default_factory=dict)  # by reason (unknown, used, quota, ...)
    offered_total: int = 0


@dataclass(frozen=True)
class Granted:
    """The message goes out under ``evaluation`` (findings lifted, tag removed); ``reference`` names it."""

    evaluation: Evaluation
    reference: str
    rules: tuple[str, ...]


@dataclass(frozen=True)
class Explained:
    """The message stays refused; ``lines`` (ASCII) tell the sender how to override, or why not."""

    lines: tuple[str, ...]


class Overrides:
    """Offers, redeems and counts overrides for the screener."""

    def __init__(
        self,
        store: OverridesPort,
        audit: AuditWriterPort,
        clock: Callable[[], float] = time.time,
        *,
        retention: float = DEFAULT_RETENTION,
    ) -> None:
        self.store = store
        self.audit = audit
        self._clock = clock
        self.retention = retention
        self._lock = threading.Lock()
        self._granted: Counter[str] = Counter()
        self._refused: Counter[str] = Counter()
        self._offered = 0

    def statistics(self) -> OverrideStatistics:
        with self._lock:
            return OverrideStatistics(dict(self._granted), dict(self._refused), self._offered)

    def prune(self, policy: CompiledPolicy) -> int:
        """Delete expired tokens, and overrides older than the retention or the policy's longest
        quota period, whichever is longer (a shorter retention would reset the quotas); how many."""
        longest = max((q.days * 86400.0 for q in overridable_entries(policy).values()), default=0.0)
        try:
            pruned = self.store.prune(now=self._clock(), retention=max(self.retention, longest))
        except Exception as exc:  # tried again at the next round; the review round goes on
            log_event(log, "overrides-prune-failed", logging.ERROR, error=type(exc).__name__)
            return 0
        if pruned:
            log_event(log, "overrides-pruned", overrides=pruned)
        return pruned

    def consider(
        self, submission: Submission, policy: CompiledPolicy, evaluation: Evaluation
    ) -> Granted | Explained | None:
        """What overriding does for this message: None when nothing (no tag, nothing overridable)."""
        request = parse_override(evaluation.message.subject)
        rules = overridable_rules(evaluation.verdict, policy)
        if not rules:
            if request is not None and evaluation.relayed_for(submission) is not None:
                # Sent with a tag it no longer needs: the tag still never reaches the recipients.
                relayed = evaluation.relayed_for(submission)
                assert relayed is not None
                return Granted(replace(evaluation, relayed=untagged(relayed), unchanged=False), "", ())
            return None
        try:
            if request is None:
                return self._offer(submission, rules, ())
            return self._redeem(submission, policy, evaluation, request, rules)
        except Exception as exc:  # the store or the trail failed: the refusal stands, without an offer
            log_event(
                log, "override-failed", logging.ERROR, queue_id=submission.queue_id, error=type(exc).__name__
            )
            return None

    def _offer(self, submission: Submission, rules: tuple[str, ...], before: tuple[str, ...]) -> Explained:
        token = "".join(secrets.choice(TOKEN_ALPHABET) for _ in range(TOKEN_LENGTH))
        self.store.issue(token, submission.mail_from, rules, self._clock())
        with self._lock:
            self._offered += 1
        hours = round(TOKEN_LIFETIME / 3600)
        return Explained(
            (
                *before,
                f"You may send it anyway with a justification ({', '.join(rules)} can be overridden): "
                f"add [override {token}: your reason] to the subject and send it again.",
                f"The reason ({MIN_JUSTIFICATION}+ characters) is kept for the committee and taken out of "
                f"the subject before the message goes out. The token works once, for {hours} hours.",
            )
        )

    def _redeem(
        self,
        submission: Submission,
        policy: CompiledPolicy,
        evaluation: Evaluation,
        request: OverrideRequest,
        rules: tuple[str, ...],
    ) -> Granted | Explained:
        if not request.justified:
            self._count_refused("no_justification")
            return Explained(
                (
                    f"Override not accepted: give your reason after the token, at least {MIN_JUSTIFICATION} "
                    f"characters: [override {request.token}: why this message should go out as it is].",
                    "The token is still valid.",
                )
            )
        quotas = {rule: (q.count, q.days * 86400.0) for rule, q in overridable_entries(policy).items()}
        redemption = self.store.redeem(
            request.token,
            sender=submission.mail_from,
            message=_message_key(evaluation, submission),
            rules=rules,
            justification=request.justification,
            quotas=quotas,
            now=self._clock(),
            queue_id=submission.queue_id,
            case=case_of(evaluation.verdict) or evaluation.thread.case,
        )
        outcome = redemption.outcome
        if outcome is Redeemed.QUOTA:
            rule = redemption.rule or rules[0]
            self._count_refused("quota")
            count, seconds = quotas[rule]
            log_event(log, "override-quota-reached", logging.WARNING, queue_id=submission.queue_id, rule=rule)
            return Explained(
                (
                    f"Override not accepted: you have made {count} override(s) of {rule} in the last "
                    f"{round(seconds / 86400)} days, as many as the policy allows. Change the message, or "
                    "ask the committee.",
                )
            )
        if outcome is not Redeemed.ACCEPTED or redemption.reference is None:
            self._count_refused(outcome.value.replace("-", "_"))
            why = {
                Redeemed.UNKNOWN: "the token is unknown or has expired",
                Redeemed.USED: "the token was used for another message already",
                Redeemed.OTHER_RULES: "the message now breaks a rule the token was not given for",
            }.get(outcome, "the token cannot be used")
            return self._offer(submission, rules, (f"Override not accepted: {why}.",))
        return self._grant(submission, evaluation, rules, redemption.reference, repeated=redemption.repeated)

    def _grant(
        self,
        submission: Submission,
        evaluation: Evaluation,
        rules: tuple[str, ...],
        reference: str,
        *,
        repeated: bool,
    ) -> Granted:
        verdict = overridden(evaluation.verdict, rules)
        try:
            relayed, rcpt_tos = relayed_content(submission, verdict)
            lifted = replace(
                evaluation, verdict=verdict, relayed=untagged(relayed), rcpt_tos=rcpt_tos, unchanged=False
            )
        except PolicyError as exc:
            lifted = replace(evaluation, verdict=verdict, relayed=None, rewrite_error=str(exc))
        # Audited before anything is counted; an AuditError leaves the message refused (and its
        # retry, the same message, is then granted and audited again as ``repeated``).
        self.audit.append(
            AUDIT_EVENT,
            {
                "queue_id": submission.queue_id,
                "reference": reference,
                "member": submission.authenticated_as,
                "rules": list(rules),
                "findings": list(lifted_codes(evaluation.verdict, rules)),
                "policy_version": verdict.policy_version,
                "repeated": repeated,
            },
        )
        if not repeated:  # a client's retry of the same message is the same override
            with self._lock:
                for rule in rules:
                    self._granted[rule.replace("-", "_")] += 1
            log_event(
                log,
                "override-granted",
                queue_id=submission.queue_id,
                reference=reference,
                rules=",".join(rules),
            )
        return Granted(lifted, reference, rules)

    def _count_refused(self, reason: str) -> None:
        with self._lock:
            self._refused[reason] += 1


def granted_line(granted: Granted) -> str:
    """The 250's line about an override (none for a tag that was only removed)."""
    reference = safe_reference(granted.reference)
    return (
        f"your override of {', '.join(granted.rules)} was accepted (reference {reference}); "
        "its tag was taken out of the subject"
    )


def _message_key(evaluation: Evaluation, submission: Submission) -> str:
    """What makes a retry the same message: its Message-ID, else a digest of its bytes."""
    message_id = evaluation.message.message_id
    return message_id or hashlib.sha256(submission.content).hexdigest()


def untagged(content: bytes) -> bytes:
    """``content`` with override tags taken out of its Subject field (the rest byte for byte)."""
    end = content.find(b"\r\n\r\n")
    head, rest = (content, b"") if end < 0 else (content[: end + 2], content[end + 2 :])
    lines = head.split(b"\r\n")
    out: list[bytes] = []
    index = 0
    while index < len(lines):
        line = lines[index]
        field_lines = [line]
        while index + 1 < len(lines) and lines[index + 1][:1] in (b" ", b"\t"):
            index += 1
            field_lines.append(lines[index])
        index += 1
        if line[:8].lower() == b"subject:":
            out.append(_untagged_subject(b"\r\n".join(field_lines)))
        else:
            out.extend(field_lines)
    return b"\r\n".join(out) + rest


def _untagged_subject(field_bytes: bytes) -> bytes:
    try:
        raw = field_bytes[8:].decode("utf-8").replace("\r\n", "")  # 8-bit subjects are UTF-8 or unread
        value = str(make_header(decode_header(raw)))
    except (LookupError, ValueError):  # UnicodeError too
        return field_bytes  # a subject we cannot read is left as it is
    if parse_override(value) is None:
        return field_bytes
    cleaned = without_override(value)
    if cleaned.isascii():
        return f"Subject: {cleaned}".encode("ascii")
    return ("Subject: " + Header(cleaned, "utf-8", header_name="Subject").encode()).encode("ascii")
