"""Shadow evaluation: a candidate policy judges every live message too, and acts on nothing.

``policy.shadow: PATH`` names a candidate policy file. Each message the policy in force evaluated is
handed (with the verdict in force) to one background thread, which evaluates the candidate on it
and records every difference (``gateway.policy.verdict_diff``: rules, finding codes with their
actions, both verdicts; never content) in the audit trail as ``shadow-difference`` and in the
``shadow`` statistics. The message itself has been decided already and is never touched.

The enforced path never waits for the shadow: handing a message over is a non-blocking put into a
bounded backlog (a full backlog skips the message, counted), and the shadow's evaluation runs on
its own thread. A candidate that cannot be loaded, or that raises on a message, is logged and
counted, and the gateway carries on; an edit to the file is picked up within seconds.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from gateway.decision.evaluation import evaluate_submission
from gateway.decision.policy_source import PolicySource, ReloadResult
from gateway.errors import AuditError, ConfigError
from gateway.logs import log_event
from gateway.mail.messages import Submission
from gateway.policy.model import Verdict
from gateway.policy.verdict_diff import VerdictDifference, diff_verdicts
from gateway.state.audit_format import JsonValue
from gateway.state.opening import State
from gateway.state.ports import AccountsOpener, AuditWriterPort, CasesPort, FingerprintsPort, LedgerPort

log = logging.getLogger("gateway.policy.shadow")

BACKLOG = 256  # messages waiting for the shadow; more are skipped (counted), never waited for
RETRY_LOAD = 5.0  # seconds between attempts to load a candidate that could not be loaded
CHECK_FILE = 2.0  # seconds between looks at the candidate's files for an edit
AUDIT_EVENT = "shadow-difference"


@dataclass(frozen=True)
class ShadowStatistics:
    """Snapshot for metrics."""

    evaluated_total: int = 0
    differences_total: int = 0
    verdict_changes: Mapping[str, int] = field(default_factory=dict)  # "deliver_to_reject" -> count
    rule_differences: Mapping[str, int] = field(default_factory=dict)  # rule name (with _) -> count
    errors_total: int = 0
    skipped_total: int = 0
    load_failed: int = 0  # 1 while the candidate cannot be loaded (or its last edit was refused)
    backlog: int = 0


def difference_fields(
    queue_id: str, enforced_version: str, shadow_version: str, difference: VerdictDifference
) -> dict[str, JsonValue]:
    """The audit entry of one difference: ids, versions, verdicts, rules and finding codes only."""
    return {
        "queue_id": queue_id,
        "policy_version": enforced_version,
        "shadow_version": shadow_version,
        "verdict": difference.enforced,
        "shadow_verdict": difference.candidate,
        "rules": list(difference.rule_names()),
        "findings": list(difference.codes()),
    }


@dataclass(frozen=True)
class _Job:
    submission: Submission
    enforced: Verdict


class ShadowEvaluator:
    """The candidate policy, its backlog and the thread that evaluates it."""

    def __init__(
        self,
        path: Path,
        state: State,
        audit: AuditWriterPort,
        *,
        registry: CasesPort | None = None,
        accounts: AccountsOpener | None = None,
    ) -> None:
        self.path = path
        self._state = state
        self._audit = audit
        self._registry = registry
        self._accounts = accounts
        self._backlog: queue.Queue[_Job | None] = queue.Queue(maxsize=BACKLOG)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._changes: Counter[str] = Counter()
        self._rules: Counter[str] = Counter()
        # Used on the shadow's thread only (SQLite connections belong to the thread that made them).
        self._source: PolicySource | None = None
        self._last_load = float("-inf")
        self._last_check = 0.0
        self._load_failed = False
        self._ledger: LedgerPort | None = None
        self._fingerprints: FingerprintsPort | None = None

    # -- the gateway's side --------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="shadow-policy", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Finish the message under way, drop the backlog, and stop the thread."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        while True:  # make room for the stop signal: what is left would only be skipped
            try:
                self._backlog.get_nowait()
            except queue.Empty:
                break
            self._count("skipped_total")
        self._backlog.put(None)
        thread.join(timeout=30)

    def observe(self, submission: Submission, enforced: Verdict) -> None:
        """Hand a decided message over; never blocks, never raises (ignored until ``start``)."""
        if self._thread is None:
            return
        try:
            self._backlog.put_nowait(_Job(submission, enforced))
        except queue.Full:
            self._count("skipped_total")

    def statistics(self) -> ShadowStatistics:
        with self._lock:
            return ShadowStatistics(
                evaluated_total=self._counts["evaluated_total"],
                differences_total=self._counts["differences_total"],
                verdict_changes=dict(self._changes),
                rule_differences=dict(self._rules),
                errors_total=self._counts["errors_total"],
                skipped_total=self._counts["skipped_total"],
                load_failed=int(self._load_failed),
                backlog=self._backlog.qsize(),
            )

    # -- the shadow's thread ---------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while (job := self._backlog.get()) is not None:
                self.evaluate(job.submission, job.enforced)
        finally:
            self._close_stores()

    def evaluate(self, submission: Submission, enforced: Verdict) -> VerdictDifference | None:
        """Evaluate the candidate on one message and record how its verdict differs (on the
        shadow's thread; tests call it directly). Never raises."""
        try:
            source = self._current()
            if source is None:
                self._count("skipped_total")
                return None
            if self._ledger is None:
                self._ledger = self._state.ledger.open_read_only()
            if self._fingerprints is None:
                self._fingerprints = self._state.fingerprints.open()
            candidate = source.policy
            evaluation = evaluate_submission(
                submission, candidate, self._ledger, self._fingerprints.for_message()
            )
        except Exception as exc:  # the candidate's fault or ours: reported, never the message's
            self._count("errors_total")
            log_event(
                log,
                "shadow-policy-error",
                logging.ERROR,
                queue_id=submission.queue_id,
                error=type(exc).__name__,
            )
            return None
        self._count("evaluated_total")
        difference = diff_verdicts(enforced, evaluation.verdict)
        if difference is not None:
            self._record(submission.queue_id, enforced.policy_version, candidate.version, difference)
        return difference

    def _current(self) -> PolicySource | None:
        """The candidate, loaded (or reloaded after an edit); None while it cannot be loaded."""
        now = time.monotonic()
        if self._source is None:
            if now - self._last_load < RETRY_LOAD:
                return None
            self._last_load = now
            try:
                self._source = PolicySource.load(self.path, self._registry, self._accounts)
            except Exception as exc:
                self._failed_load(str(exc) if isinstance(exc, ConfigError) else type(exc).__name__)
                return None
            self._load_failed = False
            log_event(log, "shadow-policy-loaded", version=self._source.policy.version, file=self.path)
            return self._source
        if now - self._last_check >= CHECK_FILE:
            self._last_check = now
            result = self._source.reload_if_changed()
            if result is ReloadResult.RELOADED:
                log_event(log, "shadow-policy-loaded", version=self._source.policy.version, file=self.path)
            self._load_failed = self._source.refused
        return self._source

    def _failed_load(self, error: str) -> None:
        if not self._load_failed:  # once per failure, not every few seconds
            log_event(log, "shadow-policy-unusable", logging.ERROR, file=self.path, error=error)
        self._load_failed = True

    def _record(
        self, queue_id: str, enforced_version: str, shadow_version: str, difference: VerdictDifference
    ) -> None:
        with self._lock:
            self._counts["differences_total"] += 1
            self._changes[f"{difference.enforced}_to_{difference.candidate}"] += 1
            for rule in difference.rule_names():
                self._rules[rule.replace("-", "_")] += 1
        try:
            self._audit.append(
                AUDIT_EVENT, difference_fields(queue_id, enforced_version, shadow_version, difference)
            )
        except AuditError as exc:
            self._count("errors_total")
            log_event(log, "shadow-audit-failed", logging.ERROR, queue_id=queue_id, error=str(exc))

    def _count(self, name: str) -> None:
        with self._lock:
            self._counts[name] += 1

    def _close_stores(self) -> None:
        for store in (self._ledger, self._fingerprints):
            if store is not None:
                store.close()
        self._ledger = self._fingerprints = None
