"""One submission's evaluation: parse, thread facts, verdict and the content to relay.

This is the CPU-bound middle of screening, the same whether it runs on the event loop or in a
policy worker process (``gateway.decision.policy_workers``): it reads the thread ledger and the fingerprint
store but writes nothing, and its result is small, plain data that pickles cheaply (the parsed
message comes back without its text). What happens next (audit, hold, reply) is the screener's.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

from gateway.decision.screening import Submission
from gateway.errors import PolicyError
from gateway.policy.engine import CompiledPolicy, evaluate
from gateway.policy.mailing_lists import recipients_of
from gateway.policy.mime import parse_message
from gateway.policy.model import (
    NO_FINGERPRINTS,
    ContentFingerprints,
    Envelope,
    Outcome,
    ParsedMessage,
    Rewrite,
    ThreadFacts,
    Verdict,
)
from gateway.policy.rewrite import apply_rewrite
from gateway.state.ports import LedgerPort

# Outcomes whose message may be relayed (a hold is relayed once approved): their content is prepared.
_RELAYABLE = frozenset({Outcome.DELIVER, Outcome.REWRITE, Outcome.HOLD})


@dataclass(frozen=True)
class Evaluation:
    """What the policy decided about one submission, and what would be relayed.

    ``message`` is the parsed message without its raw bytes and decoded text (headers only).
    ``relayed`` and ``rcpt_tos`` are set for a relayable verdict whose rewrite could be made;
    ``rewrite_error`` says why it could not (signed, no text body...): the sender must make the change.
    """

    message: ParsedMessage
    thread: ThreadFacts
    verdict: Verdict
    relayed: bytes | None = None
    rcpt_tos: tuple[str, ...] = ()
    rewrite_error: str | None = None
    # The relayed message is the submission itself (sent between processes without a copy of it).
    unchanged: bool = False
    seconds: float = 0.0  # how long parsing, rules and rewrite took, where they ran (not waits)

    def relayed_for(self, submission: Submission) -> bytes | None:
        """The message to relay, given the submission this evaluation is of."""
        return submission.content if self.unchanged else self.relayed

    def without_copy_of(self, submission: Submission) -> Evaluation:
        """This evaluation without a copy of the submission it would relay unchanged (for sending
        back to the gateway, which has the submission already)."""
        if self.relayed is not None and self.relayed is submission.content:
            return replace(self, relayed=None, unchanged=True)
        return self

    @property
    def rewrite(self) -> Rewrite:
        """The changes made to the relayed message (none for an unchanged delivery)."""
        return Rewrite() if self.verdict.outcome is Outcome.DELIVER else self.verdict.rewrite


def evaluate_submission(
    submission: Submission,
    policy: CompiledPolicy,
    ledger: LedgerPort | None,
    protected_content: ContentFingerprints = NO_FINGERPRINTS,
) -> Evaluation:
    """Parse, look the parent up in ``ledger``, evaluate under ``policy``, prepare the relayed copy.

    Raises on an internal error (the caller defers the message); never returns a partial verdict.
    """
    started = time.perf_counter()
    evaluation = _evaluate(submission, policy, ledger, protected_content)
    return replace(evaluation, seconds=time.perf_counter() - started)


def _evaluate(
    submission: Submission,
    policy: CompiledPolicy,
    ledger: LedgerPort | None,
    protected_content: ContentFingerprints,
) -> Evaluation:
    message = parse_message(submission.content)
    # A malformed message is refused before any rule reads its thread: no lookup of its ids.
    thread = thread_facts(ledger, message, submission.rcpt_tos) if not message.ambiguities else ThreadFacts()
    envelope = Envelope(
        mail_from=submission.mail_from,
        rcpt_tos=submission.rcpt_tos,
        authenticated_as=submission.authenticated_as,
    )
    # The day consents are judged on: UTC, as expunge dates are (the policy core reads no clock).
    today = datetime.datetime.now(datetime.UTC).date()
    verdict = evaluate(message, envelope, policy, thread, protected_content=protected_content, today=today)
    headers_only = replace(message, raw=b"", segments=(), leading_text=())
    if verdict.outcome not in _RELAYABLE:
        return Evaluation(headers_only, thread, verdict)
    try:
        relayed, rcpt_tos = relayed_content(submission, verdict)
    except PolicyError as exc:
        return Evaluation(headers_only, thread, verdict, rewrite_error=str(exc))
    return Evaluation(headers_only, thread, verdict, relayed, rcpt_tos)


def thread_facts(ledger: LedgerPort | None, message: ParsedMessage, rcpt_tos: Sequence[str]) -> ThreadFacts:
    """What the ledger knows of the message's parent, and which recipients it knows as mailing lists
    (asked only on a known thread: the one rule that reads it needs a parent)."""
    if ledger is None:
        return ThreadFacts()
    thread = ledger.lookup(message)
    if not thread.parent_known:
        return thread
    return replace(thread, list_recipients=ledger.lists_among(recipients_of(message, rcpt_tos)))


def relayed_content(submission: Submission, verdict: Verdict) -> tuple[bytes, tuple[str, ...]]:
    """The message and envelope recipients to relay under ``verdict`` (PolicyError if the rewriter
    refuses a change it cannot make safely)."""
    if verdict.outcome is Outcome.DELIVER:
        return submission.content, submission.rcpt_tos
    rewrite = verdict.rewrite
    content = apply_rewrite(submission.content, rewrite)
    present = {address.lower() for address in submission.rcpt_tos}
    rcpt_tos = list(submission.rcpt_tos)
    for address in rewrite.add_envelope_recipients:
        if address.lower() not in present:
            present.add(address.lower())
            rcpt_tos.append(address)
    return content, tuple(rcpt_tos)
