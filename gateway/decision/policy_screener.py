"""The policy screener: runs every submission through the policy and says what the decision does.

``PolicyScreener`` implements ``gateway.decision.screening.Screener``: parse the message, look its
parent up in the thread ledger, evaluate the policy (pure, in worker processes when there are any),
then accept (unchanged or rewritten, always with one ``X-Conduct-Gateway`` header) or refuse with
the sender-facing text from ``verdict_replies``. Refusals are audited before they are returned;
an acceptance becomes a ``Disposition`` whose records (audit, thread ledger) ``commit`` writes once
the message is durably spooled. The policy in force and its reloads are ``PolicySource``'s.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Mapping
from types import TracebackType

from gateway import replies
from gateway.decision.commit import DecisionStores, record_accepted
from gateway.decision.cpu_slice import CpuSlice
from gateway.decision.digest import POLICY_EVENT
from gateway.decision.disposition import Disposition, LedgerStep, acceptance, desk_verdict, refused
from gateway.decision.evaluation import Evaluation, evaluate_submission
from gateway.decision.expunge import DueExpunger
from gateway.decision.facts import (
    DecisionFacts,
    DeskHolds,
    case_of,
    cases_of,
    finding_records,
    held_findings,
    message_id_of,
    refusal_record,
)
from gateway.decision.overriding import Explained, Granted, Overrides, granted_line
from gateway.decision.policy_source import PolicySource, ReloadResult, freeze_loaded_policy
from gateway.decision.policy_workers import TIMED_OUT, PolicyWorkers
from gateway.decision.refusal_notice import PendingNotices, false_positive_report
from gateway.decision.relay_header import with_relay_header
from gateway.decision.screener_statistics import ScreenerCounters
from gateway.decision.screener_statistics import ScreenerStatistics as ScreenerStatistics
from gateway.decision.screening import Accept, Outgoing, Ruling, StatisticsSource, Submission
from gateway.decision.shadow import ShadowEvaluator
from gateway.decision.thread_steps import ThreadStep, ThreadSteps
from gateway.decision.warnings_notice import warnings_notice
from gateway.errors import AuditError, EvaluationTooComplex, PolicyError, PolicyWorkerError
from gateway.logs import log_event
from gateway.mail.verdict_replies import (
    change_descriptions,
    change_labels,
    evaluation_timed_out,
    refusal,
    relay_header,
    rewrite_impossible,
    tempfail,
    too_complex,
)
from gateway.policy.engine import CompiledPolicy
from gateway.policy.mime import parse_message
from gateway.policy.model import NO_FINGERPRINTS, ContentFingerprints, Outcome
from gateway.policy.reviewers import AccountCheck
from gateway.replies import Reply
from gateway.review.desk import ReviewDesk
from gateway.settings import GatewaySettings
from gateway.state.audit import FindingRecord
from gateway.state.holds import ReviewError
from gateway.state.ports import AuditPort, AuditWriterPort, FingerprintsPort, LedgerPort

log = logging.getLogger("gateway.policy")

# Screened messages whose facts ``disposition`` will need; a screen without a disposition (a tool
# that only looks at the verdict) leaves them behind, so the oldest are dropped past this many.
MAX_PENDING = 1024


class PolicyScreener:
    """The Screener the SMTP layer calls; owns the policy source, the thread ledger and the audit trail.

    Built with everything it uses (``from_settings``, or ``gateway.decision.build``): nothing is
    set on it afterwards.
    """

    def __init__(
        self,
        source: PolicySource,
        ledger: LedgerPort,
        audit: AuditWriterPort,
        review: ReviewDesk | None = None,
        *,
        fingerprint_store: FingerprintsPort | None = None,
        workers: PolicyWorkers | None = None,
        inline: CpuSlice | None = None,
        freeze_policies: bool = False,
        audit_later: AuditPort | None = None,
        expunger: DueExpunger | None = None,
        refusal_notices: bool = True,
        shadow: ShadowEvaluator | None = None,
        overrides: Overrides | None = None,
    ) -> None:
        self.source = source
        self.ledger = ledger
        self.audit = audit
        self.review = review  # None: `hold` refuses like `reject` (review.enabled: false)
        # Fingerprints of reporters' own words, for protected-content.
        self.fingerprint_store = fingerprint_store
        # Worker processes that evaluate for ``screen_async`` (None: evaluated in-process).
        self._workers = workers
        # With workers: a small message evaluated on the event loop when they are all idle.
        self._inline = inline
        # The running gateway: each policy loaded is kept out of the garbage collector's walks.
        self._freeze_policies = freeze_policies
        # Where the CLI leaves audit entries while the gateway holds the trail.
        self.audit_later = audit_later
        self._expunger = expunger
        # A candidate policy evaluated alongside, acting on nothing (``policy.shadow``).
        self.shadow = shadow
        # Sender overrides of the rules a policy marks ``overridable`` (None: never offered).
        self.overrides = overrides
        self._reports = overrides.store if overrides is not None else None  # "false positive" keys
        self._pending: OrderedDict[str, DecisionFacts] = OrderedDict()
        self.refusal_notices = PendingNotices(refusal_notices)  # "what to fix" mail besides a 550
        # Accepted messages the ledger has not learnt yet.
        self.threads = ThreadSteps(ledger)
        holds = DeskHolds(review, ledger) if review is not None else None
        self._stores = DecisionStores(audit, self.threads, holds)
        self._lock = threading.Lock()  # guards _pending
        self._counters = ScreenerCounters()
        self._refused_audited = False

    @classmethod
    def from_settings(
        cls,
        settings: GatewaySettings,
        *,
        has_account: AccountCheck | None = None,
        workers: PolicyWorkers | None = None,
        deferred_audit: bool = False,
        inline: bool = False,
    ) -> PolicyScreener:
        """Load the policy and open the stores (``gateway.decision.build.open_policy_screener``)."""
        from gateway.decision.build import open_policy_screener  # build imports this module

        return open_policy_screener(
            settings, has_account=has_account, workers=workers, deferred_audit=deferred_audit, inline=inline
        )

    # -- what the gateway runs besides screening ----------------------------------------------------

    async def start(self) -> None:
        if self.shadow is not None:
            self.shadow.start()
        if self.workers is not None:
            await self.workers.start()
            log_event(log, "policy-workers-started", workers=self.workers.count)

    async def stop(self) -> None:
        if self.shadow is not None:
            self.shadow.stop()
        if self.workers is not None:
            await self.workers.close()

    @property
    def workers(self) -> PolicyWorkers | None:
        """The worker processes given at construction (read only: nothing is set afterwards)."""
        return self._workers

    @property
    def policy_source(self) -> PolicySource:
        return self.source

    @property
    def expunger(self) -> DueExpunger | None:
        return self._expunger

    @property
    def stores(self) -> DecisionStores:
        return self._stores

    def metric_sources(self) -> Mapping[str, StatisticsSource]:
        sources: dict[str, StatisticsSource] = {"policy": self.statistics}
        if self.workers is not None:
            sources["policy_workers"] = self.workers.statistics
        if self.shadow is not None:
            sources["shadow"] = self.shadow.statistics
        if self.overrides is not None:
            sources["overrides"] = self.overrides.statistics
        return sources

    @property
    def policy_version(self) -> str:
        return self.source.policy.version

    def reload(self) -> ReloadResult:
        """SIGHUP: re-read the policy file; an invalid file is refused and the last good one kept."""
        return self._count_reload(self.source.reload())

    def reload_if_changed(self) -> ReloadResult:
        """Poll every few seconds: reload when the file changed (see ``reload``)."""
        return self._count_reload(self.source.reload_if_changed())

    def _count_reload(self, result: ReloadResult) -> ReloadResult:
        self._counters.reload(result)
        if result is ReloadResult.RELOADED and self._freeze_policies:
            freeze_loaded_policy()
        # For the committee digest; a file that stays unreadable is refused at every poll: once.
        repeated = result is ReloadResult.REFUSED and self._refused_audited
        if result is not ReloadResult.UNCHANGED and not repeated:
            self._refused_audited = result is ReloadResult.REFUSED
            action = "reloaded" if result is ReloadResult.RELOADED else "refused"
            try:
                self.audit.append(POLICY_EVENT, {"action": action, "version": self.policy_version})
            except AuditError as exc:
                log_event(log, "policy-reload-unrecorded", logging.ERROR, error=str(exc))
        return result

    def statistics(self) -> ScreenerStatistics:
        return self._counters.snapshot(
            self.policy_version,
            refused=self.source.refused,
            registry_unreadable=self.source.registry_unreadable,
        )

    # -- the Screener protocol -------------------------------------------------------------------

    def screen(self, submission: Submission) -> Accept | Reply:
        """Decide; refusals are audited (fsynced) before they are returned."""
        policy = self.source.policy  # one policy for the whole decision, even if a reload happens
        if (intercepted := self._intercepted(submission, policy)) is not None:
            return intercepted
        self.threads.write()  # a reply may follow its parent before anyone flushed
        try:
            evaluation = evaluate_submission(submission, policy, self.ledger, self._protected_content())
        except Exception as exc:
            # Whatever failed, never pass the message: defer it. Log the type only, never content.
            return self._internal_error(submission, policy.version, type(exc).__name__)
        return self._decide(submission, policy, evaluation)

    async def screen_async(self, submission: Submission) -> Accept | Reply:
        """``screen``, with the evaluation in a policy worker process when there are workers.

        The event loop then only waits: parsing and rules run on another core. A worker that died
        while it had the message defers it (451, the client retries); a worker whose policy is not
        the one in force here (a reload in between) hands the message back to be evaluated here.
        """
        workers = self.workers
        if workers is None:
            return self.screen(submission)
        policy = self.source.policy
        if (intercepted := self._intercepted(submission, policy)) is not None:
            return intercepted
        self.threads.write()  # the worker reads the ledger: it must hold every accepted parent
        try:
            evaluation = self._evaluated_inline(submission, policy, workers)
            if evaluation is None:
                evaluation = await workers.evaluate(submission, policy.version)
            if evaluation is None:
                evaluation = evaluate_submission(submission, policy, self.ledger, self._protected_content())
        except EvaluationTooComplex as exceeded:
            return self._too_complex(submission, policy.version, exceeded.budget)
        except PolicyWorkerError as failed:
            return self._internal_error(submission, policy.version, failed.error)
        except Exception as exc:
            return self._internal_error(submission, policy.version, type(exc).__name__)
        return self._decide(submission, policy, evaluation)

    def _evaluated_inline(
        self, submission: Submission, policy: CompiledPolicy, workers: PolicyWorkers
    ) -> Evaluation | None:
        """The evaluation made on the event loop within its CPU slice; None when it may not be made
        here (a large message, a busy worker, no slice) or used up the slice (a worker makes it)."""
        inline = self._inline
        if inline is None or not workers.may_inline(len(submission.content)) or not inline.available():
            return None
        protected = self._protected_content()  # catching up is not the message's work: outside the slice
        evaluation = inline.run(lambda: evaluate_submission(submission, policy, self.ledger, protected))
        workers.counted_inline(used_up=evaluation is None)
        return evaluation

    async def decide(self, submission: Submission) -> Disposition:
        """``screen_async``, as the disposition ``gateway.decision.commit`` applies."""
        return self.disposition(submission, await self.screen_async(submission))

    def disposition(self, submission: Submission, verdict: Accept | Reply) -> Disposition:
        """What ``verdict`` (from ``screen``) does: for an acceptance, the records to write once spooled."""
        if not isinstance(verdict, Accept):
            notice = self.refusal_notices.take(submission.queue_id)
            return refused(verdict) if notice is None else Disposition(verdict, outgoing=(notice,))
        with self._lock:
            facts = self._pending.pop(submission.queue_id, None)
        if verdict.verdict is Ruling.REVIEW:
            return acceptance(submission, verdict)  # the desk audits review decisions itself
        if verdict.verdict is Ruling.HOLD:
            if facts is None:
                return acceptance(submission, verdict)
            return acceptance(submission, verdict, audit=(facts.held(submission),))
        if facts is None:
            # Not screened by us in this process (cannot normally happen): record what we know.
            thread = ThreadStep.of(parse_message(verdict.content))
            facts = DecisionFacts(self.policy_version, (), (), thread, None)
        ledger = (
            (LedgerStep(submission.queue_id, facts.thread, facts.case),)
            if facts.thread.message_id is not None
            else ()
        )
        return acceptance(submission, verdict, audit=(facts.relayed(submission, verdict),), ledger=ledger)

    def _intercepted(self, submission: Submission, policy: CompiledPolicy) -> Accept | Reply | None:
        """A review decision (or a cancel) for the gateway itself: consumed here, never relayed."""
        if self.review is None or not self.review.intercepts(submission, policy):
            return None
        try:
            return desk_verdict(self.review.intercept(submission, policy), Ruling.REVIEW)
        except ReviewError as exc:
            return replies.refused_by_policy((f"Not accepted: {exc}", f"Reference: {submission.queue_id}"))
        except Exception as exc:
            return self._internal_error(submission, policy.version, type(exc).__name__)

    def _protected_content(self) -> ContentFingerprints:
        store = self.fingerprint_store
        return store.for_message() if store is not None else NO_FINGERPRINTS

    def _decide(
        self, submission: Submission, policy: CompiledPolicy, evaluation: Evaluation
    ) -> Accept | Reply:
        """Reply, hold or accept what the policy decided (``screen``'s second half)."""
        self._counters.evaluated(evaluation.seconds)
        if self.shadow is not None:
            self.shadow.observe(submission, evaluation.verdict)
        override = self.overrides.consider(submission, policy, evaluation) if self.overrides else None
        if isinstance(override, Granted):
            evaluation = override.evaluation
        verdict, message, thread = evaluation.verdict, evaluation.message, evaluation.thread
        findings = finding_records(verdict)
        holding = verdict.outcome is Outcome.HOLD and self.review is not None
        if verdict.outcome not in (Outcome.DELIVER, Outcome.REWRITE) and not holding:
            self._count(verdict.outcome.value)
            reply = refusal(verdict, submission.queue_id)
            if verdict.outcome is Outcome.REJECT:
                self.refusal_notices.prepare(self.review, policy, submission, verdict)
            if isinstance(override, Explained):  # how to override, or why not: above the reference
                *body, last = reply.lines
                reply = Reply(reply.code, reply.status, (*body, *override.lines, last))
            return self._audit_refusal(
                submission, reply, verdict.outcome.value, policy.version, findings, message.message_id
            )
        relayed = evaluation.relayed_for(submission)
        if evaluation.rewrite_error is not None or relayed is None:
            # The rewriter refuses changes it cannot make safely (signed, no text body, unknown
            # charset): a permanent condition, so the sender is told to make the change.
            self._count(Outcome.REJECT.value)
            log_event(log, "rewrite-impossible", logging.WARNING, queue_id=submission.queue_id)
            reply = rewrite_impossible(verdict, evaluation.rewrite_error or "", submission.queue_id)
            self.refusal_notices.prepare(self.review, policy, submission, verdict)
            return self._audit_refusal(
                submission,
                reply,
                Outcome.REJECT.value,
                policy.version,
                findings,
                message.message_id,
                error=PolicyError.__name__,
            )
        rcpt_tos, rewrite = evaluation.rcpt_tos, evaluation.rewrite
        self._count(verdict.outcome.value)
        labels = change_labels(rewrite)
        pending = DecisionFacts(
            policy_version=policy.version,
            findings=findings,
            labels=labels,
            thread=ThreadStep.of(message, rewrite.add_cc),
            case=case_of(verdict) or thread.case,
        )
        content = with_relay_header(relayed, relay_header(submission.queue_id, labels))
        if holding:
            assert self.review is not None
            held_as = held_findings(verdict)
            try:
                held = self.review.hold(
                    submission,
                    policy,
                    findings=held_as,
                    changes=change_descriptions(rewrite),
                    release=content,
                    release_rcpt_tos=rcpt_tos,
                    message_id=message.message_id,
                    subject=message.subject,
                    case=pending.case,
                    cases=cases_of(verdict, thread.case),
                )
            except Exception as exc:
                return self._internal_error(submission, policy.version, type(exc).__name__)
            if not held.accepted:
                return self._audit_refusal(
                    submission, held.reply, Outcome.HOLD.value, policy.version, findings, message.message_id
                )
            self._remember(submission.queue_id, pending)
            return desk_verdict(held, Ruling.HOLD, tuple(f"{f.rule}:{f.code}" for f in held_as))
        self._remember(submission.queue_id, pending)
        false_positive_report(self.audit, submission, message, self._reports)
        overridden = (granted_line(override),) if isinstance(override, Granted) and override.reference else ()
        return Accept(
            content=content,
            rcpt_tos=rcpt_tos,
            changes=(*change_descriptions(rewrite), *overridden),
            verdict=Ruling(verdict.outcome.value),
            findings=tuple(f"{d.finding.rule}:{d.finding.code}" for d in verdict.decisions),
            extra=warnings_notice(self.review, submission, policy, verdict, message),
        )

    def accepted(self, submission: Submission, accept: Accept) -> None:
        """Record ``accept`` as ``commit`` does once its messages are spooled (tools and tests)."""
        record_accepted(self.disposition(submission, accept), self.stores)

    def not_stored(self, submission: Submission, accept: Accept) -> None:
        """Undo a hold or review decision ``accept`` prepared, as ``commit`` does when it cannot be
        spooled (tools and tests)."""
        disposition = self.disposition(submission, accept)
        if disposition.undo is not None and self.review is not None:
            self.review.not_stored(disposition.undo)

    def review_housekeeping(self) -> tuple[Outgoing, ...]:
        """Periodic: audit what the CLI queued (review decisions, case actions), prune overrides past
        their retention, expire overdue holds; the notices to spool."""
        if self.audit_later is not None:
            self.audit_later.drain_later(self.audit)
        if self.overrides is not None:
            self.overrides.prune(self.source.policy)
        if self.review is None:
            self.audit.flush()
            return ()
        policy = self.source.policy
        self.review.prune_decided()
        self.review.discard_abandoned()  # left by a crash between storing a hold and the 250
        # Offboarding and conflicts declared since: reviewers who lost the right are replaced.
        outgoing = (*self.review.expire_due(policy), *self.review.reassign(policy))
        self.audit.flush()
        return outgoing

    def unreleased_holds(self) -> list[tuple[str, Outgoing]]:
        """Approved held messages whose release a crash kept out of the spool: (reference, release)."""
        return self.review.unreleased() if self.review is not None else []

    def release_recovered(self, reference: str) -> None:
        """The recovered release of ``reference`` is in the spool now."""
        if self.review is not None:
            self.review.mark_released(reference)
            self.audit.flush()

    def flush_decisions(self) -> None:
        """Make the audit entries appended so far durable (blocking; see ``AuditTrail.deferred``),
        and record the accepted messages in the thread ledger (``DecisionStores.flush``)."""
        self._stores.flush()

    # -- helpers -----------------------------------------------------------------------------------

    def _remember(self, queue_id: str, pending: DecisionFacts) -> None:
        with self._lock:
            self._pending[queue_id] = pending
            while len(self._pending) > MAX_PENDING:
                self._pending.popitem(last=False)

    def _count(self, outcome: str) -> None:
        self._counters.decided(outcome)

    def _too_complex(self, submission: Submission, version: str, budget: float) -> Reply:
        """A permanent refusal: the message used up its evaluation budget (see policy_workers)."""
        self._count(Outcome.REJECT.value)
        log_event(log, "policy-over-budget", logging.WARNING, queue_id=submission.queue_id, policy=version)
        reply = too_complex(submission.queue_id, budget)
        return self._audit_refusal(
            submission,
            reply,
            Outcome.REJECT.value,
            version,
            (),
            None,  # never parsed again here: parsing it may be what took so long
            error="EvaluationTooComplex",
        )

    def _internal_error(self, submission: Submission, version: str, error: str) -> Reply:
        self._counters.internal_error()
        self._count(Outcome.TEMPFAIL.value)
        log_event(
            log,
            "policy-internal-error",
            logging.ERROR,
            queue_id=submission.queue_id,
            error=error,
            policy=version,
        )
        timed_out = error == TIMED_OUT
        reply = evaluation_timed_out(submission.queue_id) if timed_out else tempfail(submission.queue_id)
        return self._audit_refusal(
            submission,
            reply,
            Outcome.TEMPFAIL.value,
            version,
            (),
            None if timed_out else message_id_of(submission.content),  # a stuck message is not parsed again
            error=error,
        )

    def refused_at_intake(self, submission: Submission, reply: Reply, reason: str) -> Disposition:
        """A refusal the SMTP layer made before the policy ran (malformed, too big, not yours), with
        its record (``commit`` appends it; the SMTP layer defers when that fails)."""
        finding = FindingRecord(rule="intake", code=reason, kind="message", action="reject", case=None)
        record = refusal_record(
            submission, reply, Outcome.REJECT.value, self.source.policy.version, (finding,)
        )
        return Disposition(reply, audit=(record,))

    def _audit_refusal(
        self,
        submission: Submission,
        reply: Reply,
        verdict: str,
        version: str,
        findings: tuple[FindingRecord, ...],
        message_id: str | None,
        error: str | None = None,
    ) -> Reply:
        try:
            self.audit.record_decision(
                refusal_record(submission, reply, verdict, version, findings, message_id, error)
            )
        except AuditError as exc:
            # A decision that cannot be recorded is not made: defer, and let the client retry.
            log_event(log, "audit-append-failed", logging.ERROR, queue_id=submission.queue_id, error=str(exc))
            return tempfail(submission.queue_id)
        return reply

    def close(self) -> None:
        if self.shadow is not None:
            self.shadow.stop()
        self.threads.write()
        self.ledger.close()
        self.audit.close()
        if self.fingerprint_store is not None:
            self.fingerprint_store.close()
        if self.overrides is not None:
            self.overrides.store.close()

    def __enter__(self) -> PolicyScreener:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
