"""The policy screener: runs every submission through the policy and records each decision.

``PolicyScreener`` implements ``gateway.decision.screening.Screener`` for the SMTP layer: parse the message,
look its parent up in the thread ledger, evaluate the policy (pure), then accept (unchanged or
rewritten, always with one ``X-Conduct-Gateway`` header) or refuse with the sender-facing text
from ``verdict_replies``. Refusals are audited before they are returned; acceptances once the SMTP
layer reports the message durably spooled (``accepted``), which is also when the ledger learns the
message. It also holds the policy in force and reloads it when the file changes; an invalid edit is
refused and logged, and the last good policy stays in force.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import Counter, OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from gateway.decision.evaluation import Evaluation, evaluate_submission
from gateway.decision.notices import warnings_letter
from gateway.decision.policy_workers import TIMED_OUT
from gateway.decision.screening import Accept, Outgoing, Refuse, Submission
from gateway.decision.verdict_replies import (
    APPROVED_HEADER,
    RELAY_HEADER,
    change_descriptions,
    change_labels,
    evaluation_timed_out,
    refusal,
    relay_header,
    rewrite_impossible,
    tempfail,
    too_complex,
)
from gateway.errors import (
    AuditError,
    ConfigError,
    EvaluationTooComplex,
    GatewayError,
    PolicyError,
    PolicyWorkerError,
    RegistryUnreadable,
)
from gateway.example_policy import missing_policy_hint
from gateway.histogram import Histogram, HistogramSnapshot
from gateway.logs import log_event
from gateway.policy.engine import CompiledPolicy, FinderFactory, compile_policy
from gateway.policy.loader import read_policy
from gateway.policy.matcher import IdentityMatcher
from gateway.policy.mime import parse_message
from gateway.policy.model import (
    NO_FINGERPRINTS,
    Action,
    Address,
    ContentFingerprints,
    IdentityFinder,
    Outcome,
    ParsedMessage,
    ProtectedIdentity,
    Verdict,
)
from gateway.review.auditing import trail_sink
from gateway.review.desk import ReviewDesk
from gateway.review.letters import notice_finding
from gateway.settings import GatewaySettings
from gateway.state.accounts import read_roster
from gateway.state.audit import DecisionRecord, FindingRecord
from gateway.state.holds import HeldFinding, HoldRecord, ReviewError
from gateway.state.holds_port import HoldsPort
from gateway.state.opening import open_state
from gateway.state.ports import AuditPort, AuditWriterPort, CasesPort, FingerprintsPort, LedgerPort

if TYPE_CHECKING:
    from gateway.decision.policy_workers import PolicyWorkers

log = logging.getLogger("gateway.policy")

# Screened-but-not-yet-spooled messages whose details accepted() will need; a spool failure means
# accepted() never comes, so the oldest are dropped past this many.
MAX_PENDING = 1024


class ReloadResult(StrEnum):
    """What a reload attempt did."""

    UNCHANGED = "unchanged"  # same file content: nothing to do
    RELOADED = "reloaded"  # a new policy is in force
    REFUSED = "refused"  # the file is invalid; the last good policy stays in force


@dataclass(frozen=True)
class FileStamp:
    """Identity of one version of the policy file: cheap stat fields, and the content hash.

    ``registry`` is the case registry file's own stamp (None: no registry file, or none configured).
    """

    mtime_ns: int
    size: int
    sha256: str
    registry: FileStamp | None = None
    inode: int = 0  # kept for the registry only (rewritten by rename, its size rarely changes)
    # The users file: its stat fields when read (None: none), and its accounts' digest (None: none).
    users_seen: tuple[int, int, int] | None = None
    accounts: str | None = None

    def seen(self) -> tuple[object, ...]:
        """The cheap stat fields of the policy file, the registry and the users file, for polling."""
        registry = self.registry
        registry_seen = (registry.mtime_ns, registry.size, registry.inode) if registry is not None else None
        return self.mtime_ns, self.size, registry_seen, self.users_seen


def _stat(path: Path) -> tuple[int, int]:
    info = path.stat()
    return info.st_mtime_ns, info.st_size


def _users_stat(path: Path | None) -> tuple[int, int, int] | None:
    if path is None:
        return None
    try:
        info = path.stat()
    except FileNotFoundError:
        return None
    return info.st_mtime_ns, info.st_size, info.st_ino


def load_compiled_policy(
    path: Path,
    registry: CasesPort | None = None,
    users_file: Path | None = None,
    *,
    users_file_known: bool = False,
    previous: CompiledPolicy | None = None,
) -> tuple[CompiledPolicy, FileStamp]:
    """Read, validate and compile the policy file; ConfigError (file, line, key) if it is unusable.

    The file is read once: the version is the hash of exactly the bytes that were validated.
    With ``registry``, the case registry's cases are compiled in too (ConfigError naming the
    registry file when it cannot be decrypted or clashes with the policy). With ``users_file``,
    only members who hold an account are in the committee (``gateway.policy.committee``);
    ``users_file_known``: it existed before, so its absence now means nobody has an account.
    ``previous``: the policy in force, whose identity matcher is reused when the identities are the
    same (a ``user remove`` must not wait for a large matcher to be rebuilt).
    """
    try:
        mtime_ns, size = _stat(path)
    except FileNotFoundError:
        raise ConfigError(missing_policy_hint(path)) from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the policy file: {exc.strerror}") from None
    users_seen = _users_stat(users_file)
    roster = read_roster(users_file, missing_is_empty=users_file_known) if users_file is not None else None
    document, source = read_policy(path)
    snapshot = registry.read() if registry is not None else None
    accounts = roster.digest if roster is not None else None
    build_finder = _reusing_finder(previous) if previous is not None else None
    digest = hashlib.sha256(source).hexdigest()
    if snapshot is None or registry is None:
        policy = compile_policy(document, source, accounts=roster, build_finder=build_finder)
        return policy, FileStamp(mtime_ns, size, digest, users_seen=users_seen, accounts=accounts)
    policy = compile_policy(
        document,
        source,
        registry=snapshot.for_policy(registry.path),
        accounts=roster,
        build_finder=build_finder,
    )
    registry_stamp = FileStamp(snapshot.mtime_ns, snapshot.size, snapshot.sha256, inode=snapshot.inode)
    return policy, FileStamp(mtime_ns, size, digest, registry_stamp, users_seen=users_seen, accounts=accounts)


def _reusing_finder(previous: CompiledPolicy) -> FinderFactory:
    def build(identities: Iterable[ProtectedIdentity]) -> IdentityFinder:
        wanted = tuple(identities)
        return previous.finder if wanted == previous.identities else IdentityMatcher.build(wanted)

    return build


def load_policy_for(settings: GatewaySettings) -> tuple[CompiledPolicy, FileStamp]:
    """The policy in force for these settings: the policy file, the case registry and the accounts."""
    return load_compiled_policy(settings.policy.path, open_state(settings).cases, settings.auth.users_file)


def log_committee_notes(policy: CompiledPolicy, previous: CompiledPolicy | None = None) -> None:
    """Name every difference between the policy's members and the accounts (new ones only on reload)."""
    known = set(previous.committee_notes) if previous is not None else set()
    for note in policy.committee_notes:
        if note not in known:
            log_event(log, "committee-differs-from-accounts", logging.WARNING, detail=note)


class PolicySource:
    """The policy in force, and the files it came from (the policy file and the case registry)."""

    def __init__(
        self,
        path: Path,
        policy: CompiledPolicy,
        stamp: FileStamp,
        registry: CasesPort | None = None,
        users_file: Path | None = None,
    ) -> None:
        self.path = path
        self.registry = registry
        self.users_file = users_file
        self._policy = policy
        self._stamp = stamp
        self._seen: tuple[object, ...] | None = stamp.seen()  # last stat looked at
        self._last_error: str | None = None  # the refusal last reported
        self.registry_unreadable = False  # the last refusal was the case registry's
        self._lock = threading.Lock()

    @classmethod
    def load(
        cls, path: Path, registry: CasesPort | None = None, users_file: Path | None = None
    ) -> PolicySource:
        policy, stamp = load_compiled_policy(path, registry, users_file)
        return cls(path, policy, stamp, registry, users_file)

    @classmethod
    def from_settings(cls, settings: GatewaySettings) -> PolicySource:
        """The policy file, the case registry and the users file these settings name."""
        return cls.load(settings.policy.path, open_state(settings).cases, settings.auth.users_file)

    @property
    def policy(self) -> CompiledPolicy:
        return self._policy

    def reload(self) -> ReloadResult:
        """Re-read the file (SIGHUP); switch to it if its content changed and it is valid."""
        with self._lock:
            return self._reload(force=True)

    def reload_if_changed(self) -> ReloadResult:
        """Cheap poll: look at the file only if its mtime or size changed since last seen."""
        with self._lock:
            return self._reload(force=False)

    def _reload(self, *, force: bool) -> ReloadResult:
        registry_digest: str | None = None
        try:
            registry_seen = self.registry.stat() if self.registry is not None else None
            users_seen = _users_stat(self.users_file)
            seen = (*_stat(self.path), registry_seen, users_seen)
            if not force and seen == self._seen:
                return ReloadResult.UNCHANGED
            self._seen = seen
            digest = hashlib.sha256(self.path.read_bytes()).hexdigest()
            if self.registry is not None:
                registry_digest = self.registry.digest()
            users_known = self._stamp.accounts is not None
            roster = (
                read_roster(self.users_file, missing_is_empty=users_known)
                if self.users_file is not None
                else None
            )
        except OSError as exc:
            self._seen = None
            return self._refuse(f"{exc.filename or self.path}: cannot read: {exc.strerror}", force=force)
        except ConfigError as exc:  # a broken users file: the committee in force is kept
            return self._refuse(str(exc), force=force)
        known_registry = self._stamp.registry
        if registry_digest is None and known_registry is not None and self.registry is not None:
            # Losing the registry must never quietly drop every case's protection.
            return self._refuse(
                f"{self.registry.path}: the case registry has disappeared; the cases in force are kept. "
                "Restore the file from a backup.",
                force=force,
                registry=True,
            )
        known_digest = known_registry.sha256 if known_registry is not None else None
        accounts = roster.digest if roster is not None else None
        if (
            digest == self._stamp.sha256
            and registry_digest == known_digest
            and accounts == self._stamp.accounts
        ):
            self._last_error, self.registry_unreadable = None, False
            return ReloadResult.UNCHANGED
        try:
            policy, stamp = load_compiled_policy(
                self.path,
                self.registry,
                self.users_file,
                users_file_known=users_known,
                previous=self._policy,
            )
        except RegistryUnreadable as exc:
            return self._refuse(str(exc), force=force, registry=True)
        except ConfigError as exc:
            return self._refuse(str(exc), force=force)
        except Exception as exc:  # a compiler bug must not take the running policy down with it
            message = f"{self.path}: the policy could not be compiled ({type(exc).__name__})"
            return self._refuse(message, force=force)
        previous = self._policy
        self._policy, self._stamp = policy, stamp
        self._seen, self._last_error = stamp.seen(), None
        self.registry_unreadable = False
        log_event(log, "policy-reloaded", previous=previous.version, version=policy.version, file=self.path)
        log_committee_notes(policy, previous)
        return ReloadResult.RELOADED

    @property
    def refused(self) -> bool:
        """Whether the files on disk differ from the policy in force because they were refused."""
        return self._last_error is not None

    def _refuse(self, message: str, *, force: bool, registry: bool = False) -> ReloadResult:
        self.registry_unreadable = registry
        # Polling finds the same broken file every few seconds: report it once (and on every SIGHUP).
        if force or message != self._last_error:
            log_event(
                log, "policy-reload-refused", logging.ERROR, error=message, kept_version=self._policy.version
            )
        self._last_error = message
        return ReloadResult.REFUSED


@dataclass(frozen=True)
class ScreenerStatistics:
    """Snapshot for metrics: decisions by outcome, reloads, internal errors, the policy in force."""

    policy_version: str
    outcomes: Mapping[str, int] = field(default_factory=dict)
    internal_errors: int = 0
    reloads: int = 0
    reload_refusals: int = 0
    reload_pending_refused: int = 0  # 1 while the files on disk are refused and an older policy is in force
    registry_unreadable: int = 0  # 1 while the case registry on disk cannot be decrypted or read
    evaluation_seconds: HistogramSnapshot | None = None  # parse, rules and rewrite, per message


@dataclass(frozen=True)
class _Thread:
    """A relayed message's place in its thread, as the ledger records it (metadata only)."""

    message_id: str | None
    in_reply_to: tuple[str, ...]
    references: tuple[str, ...]
    from_: tuple[Address, ...]
    to: tuple[Address, ...]
    cc: tuple[Address, ...]

    @classmethod
    def of(cls, message: ParsedMessage, added_cc: tuple[Address, ...] = ()) -> _Thread:
        present = {address.address.lower() for address in message.cc}
        cc = message.cc + tuple(a for a in added_cc if a.address.lower() not in present)
        return cls(message.message_id, message.in_reply_to, message.references, message.from_, message.to, cc)


@dataclass(frozen=True)
class _Pending:
    """What ``accepted`` needs from ``screen`` (small: never the message itself)."""

    policy_version: str
    findings: tuple[FindingRecord, ...]
    labels: tuple[str, ...]
    thread: _Thread
    case: str | None


class PolicyScreener:
    """The Screener the SMTP layer calls; owns the policy source, the thread ledger and the audit trail."""

    # Fingerprints of reporters' own words, for protected-content (opened by from_settings).
    fingerprint_store: FingerprintsPort | None = None
    # Worker processes that evaluate for ``screen_async`` (set by the gateway when it starts them).
    workers: PolicyWorkers | None = None
    # Where the CLI leaves audit entries while the gateway holds the trail (set by from_settings).
    audit_later: AuditPort | None = None

    def __init__(
        self,
        source: PolicySource,
        ledger: LedgerPort,
        audit: AuditWriterPort,
        review: ReviewDesk | None = None,
    ) -> None:
        self.source = source
        self.ledger = ledger
        self.audit = audit
        self.review = review  # None: `hold` refuses like `reject` (review.enabled: false)
        self._pending: OrderedDict[str, _Pending] = OrderedDict()
        # Accepted messages the ledger has not learnt yet: (queue id, thread step, case).
        self._unrecorded_threads: list[tuple[str, _Thread, str | None]] = []
        self._lock = threading.Lock()
        self._outcomes: Counter[str] = Counter()
        self._internal_errors = 0
        self._reloads = 0
        self._reload_refusals = 0
        self._evaluation_time = Histogram()

    @classmethod
    def from_settings(cls, settings: GatewaySettings) -> PolicyScreener:
        """Load the policy (ConfigError if invalid) and open the ledger and audit trail in state_dir."""
        source = PolicySource.from_settings(settings)
        state = open_state(settings)
        ledger = state.ledger.open()
        try:
            audit = state.audit.open()
        except GatewayError:
            ledger.close()
            raise
        # Differences between the members and the accounts were logged by preflight (serve).
        log_event(log, "policy-loaded", version=source.policy.version, file=source.path)
        if source.registry is not None and (warning := source.registry.key_warning()) is not None:
            log_event(log, "registry-key-in-state-dir", logging.WARNING, advice=warning)
        review = None
        try:
            store = state.holds.open()
        except GatewayError:
            ledger.close()
            audit.close()
            raise
        if settings.review.enabled:
            review = ReviewDesk(store, settings.review, settings.server.hostname, trail_sink(audit))
        screener = cls(source, ledger, audit, review)
        screener.audit_later = state.audit  # drained even with review off
        try:
            screener.fingerprint_store = state.fingerprints.open()
        except GatewayError:
            screener.close()
            raise
        return screener

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
        with self._lock:
            if result is ReloadResult.RELOADED:
                self._reloads += 1
            elif result is ReloadResult.REFUSED:
                self._reload_refusals += 1
        return result

    def statistics(self) -> ScreenerStatistics:
        with self._lock:
            return ScreenerStatistics(
                policy_version=self.policy_version,
                outcomes=dict(self._outcomes),
                internal_errors=self._internal_errors,
                reloads=self._reloads,
                reload_refusals=self._reload_refusals,
                reload_pending_refused=int(self.source.refused),
                registry_unreadable=int(self.source.registry_unreadable),
                evaluation_seconds=self._evaluation_time.snapshot(),
            )

    # -- the Screener protocol -------------------------------------------------------------------

    def screen(self, submission: Submission) -> Accept | Refuse:
        """Decide; refusals are audited (fsynced) before they are returned."""
        policy = self.source.policy  # one policy for the whole decision, even if a reload happens
        if (intercepted := self._intercepted(submission, policy)) is not None:
            return intercepted
        self._record_threads()  # a reply may follow its parent before anyone flushed
        try:
            evaluation = evaluate_submission(submission, policy, self.ledger, self._protected_content())
        except Exception as exc:
            # Whatever failed, never pass the message: defer it. Log the type only, never content.
            return self._internal_error(submission, policy.version, type(exc).__name__)
        return self._decide(submission, policy, evaluation)

    async def screen_async(self, submission: Submission) -> Accept | Refuse:
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
        self._record_threads()  # the worker reads the ledger: it must hold every accepted parent
        try:
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

    def _intercepted(self, submission: Submission, policy: CompiledPolicy) -> Accept | Refuse | None:
        """A review decision (or a cancel) for the gateway itself: consumed here, never relayed."""
        if self.review is None or not self.review.intercepts(submission, policy):
            return None
        try:
            return self.review.intercept(submission, policy)
        except ReviewError as exc:
            return Refuse(550, "5.7.1", (f"Not accepted: {exc}", f"Reference: {submission.queue_id}"))
        except Exception as exc:
            return self._internal_error(submission, policy.version, type(exc).__name__)

    def _protected_content(self) -> ContentFingerprints:
        store = self.fingerprint_store
        return store.for_message() if store is not None else NO_FINGERPRINTS

    def _decide(
        self, submission: Submission, policy: CompiledPolicy, evaluation: Evaluation
    ) -> Accept | Refuse:
        """Refuse, hold or accept what the policy decided (``screen``'s second half)."""
        with self._lock:
            self._evaluation_time.observe(evaluation.seconds)
        verdict, message, thread = evaluation.verdict, evaluation.message, evaluation.thread
        findings = _finding_records(verdict)
        holding = verdict.outcome is Outcome.HOLD and self.review is not None
        if verdict.outcome not in (Outcome.DELIVER, Outcome.REWRITE) and not holding:
            self._count(verdict.outcome.value)
            reply = refusal(verdict, submission.queue_id)
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
        pending = _Pending(
            policy_version=policy.version,
            findings=findings,
            labels=labels,
            thread=_Thread.of(message, rewrite.add_cc),
            case=_case_of(verdict) or thread.case,
        )
        content = _with_relay_header(relayed, relay_header(submission.queue_id, labels))
        if holding:
            assert self.review is not None
            try:
                held = self.review.hold(
                    submission,
                    policy,
                    findings=_held_findings(verdict),
                    changes=change_descriptions(rewrite),
                    release=content,
                    release_rcpt_tos=rcpt_tos,
                    message_id=message.message_id,
                    subject=message.subject,
                    case=pending.case,
                    cases=_cases_of(verdict, thread.case),
                )
            except Exception as exc:
                return self._internal_error(submission, policy.version, type(exc).__name__)
            if isinstance(held, Refuse):
                return self._audit_refusal(
                    submission, held, Outcome.HOLD.value, policy.version, findings, message.message_id
                )
            self._remember(submission.queue_id, pending)
            return held
        self._remember(submission.queue_id, pending)
        return Accept(
            content=content,
            rcpt_tos=rcpt_tos,
            changes=change_descriptions(rewrite),
            verdict=verdict.outcome.value,
            findings=tuple(f"{d.finding.rule}:{d.finding.code}" for d in verdict.decisions),
            extra=self._warnings_notice(submission, policy, verdict, message),
        )

    def _warnings_notice(
        self, submission: Submission, policy: CompiledPolicy, verdict: Verdict, message: ParsedMessage
    ) -> tuple[Outgoing, ...]:
        """One notice listing the ``warn`` findings of a delivered message (best effort)."""
        if (
            self.review is None
            or not any(d.action is Action.WARN for d in verdict.decisions)
            or submission.mail_from.lower() not in policy.committee
        ):
            return ()
        warned = [d for d in _held_findings(verdict) if d.action == Action.WARN.value]
        try:
            notice = self.review.notices(policy).outgoing(
                warnings_letter(
                    to=submission.mail_from,
                    reference=submission.queue_id,
                    subject=message.subject,
                    message_id=message.message_id,
                    findings=[notice_finding(f) for f in warned],
                )
            )
        except Exception as exc:  # a notice must never stop the message itself
            log_event(
                log, "notice-failed", logging.ERROR, queue_id=submission.queue_id, error=type(exc).__name__
            )
            return ()
        return (notice,) if notice is not None else ()

    def not_stored(self, submission: Submission, accept: Accept) -> None:
        """The SMTP layer could not spool what ``screen`` accepted: undo a hold or a review decision."""
        with self._lock:
            self._pending.pop(submission.queue_id, None)
        if (review := self._review_of(accept)) is not None:
            review.not_stored(submission.queue_id)

    def _review_accepted(self, submission: Submission, accept: Accept) -> None:
        assert self.review is not None
        with self._lock:
            pending = self._pending.pop(submission.queue_id, None)
        released = self.review.accepted(submission.queue_id)
        if accept.verdict == "hold" and pending is not None:
            self.audit.record_decision(
                DecisionRecord(
                    queue_id=submission.queue_id,
                    member=submission.authenticated_as,
                    verdict=Outcome.HOLD.value,
                    reply="250 2.0.0",
                    policy_version=pending.policy_version,
                    findings=pending.findings,
                    changes=pending.labels,
                    message_id=pending.thread.message_id,
                    recipients=submission.rcpt_tos,
                    message=submission.content,
                )
            )
        if released is not None:
            try:
                learn_release(self.ledger, self.review.store, released)
            except Exception as exc:
                log_event(
                    log,
                    "ledger-record-failed",
                    logging.ERROR,
                    queue_id=released.reference,
                    error=type(exc).__name__,
                )

    def _review_of(self, accept: Accept) -> ReviewDesk | None:
        """The review desk that records (or undoes) ``accept``: for a hold or a review decision."""
        return self.review if accept.verdict in ("hold", "review") else None

    def can_record_off_loop(self, accept: Accept) -> bool:
        """Whether ``accepted`` may run on a spool I/O thread (with ``flush_decisions`` after it): not
        for holds and review decisions, whose review store belongs to the event loop's thread."""
        return self._review_of(accept) is None

    def accepted(self, submission: Submission, accept: Accept) -> None:
        """The message is durably spooled: audit it (fsynced; raises AuditError if that fails), then
        teach the ledger its participants (a ledger failure is logged, never raised)."""
        if self._review_of(accept) is not None:
            self._review_accepted(submission, accept)
            return
        with self._lock:
            pending = self._pending.pop(submission.queue_id, None)
        if pending is None:
            # Not screened by us in this process (cannot normally happen): record what we know.
            pending = _Pending(self.policy_version, (), (), _Thread.of(parse_message(accept.content)), None)
        self.audit.record_decision(
            DecisionRecord(
                queue_id=submission.queue_id,
                member=submission.authenticated_as,
                verdict=accept.verdict,
                reply="250",
                policy_version=pending.policy_version,
                findings=pending.findings,
                changes=pending.labels,
                message_id=pending.thread.message_id,
                recipients=accept.rcpt_tos,
                message=submission.content,
                relayed=accept.content,
            )
        )
        if pending.thread.message_id is not None:
            # Written by flush_decisions, in its thread, before the client hears of the message.
            with self._lock:
                self._unrecorded_threads.append((submission.queue_id, pending.thread, pending.case))

    def _record_threads(self) -> None:
        """Teach the ledger the accepted messages' thread steps (a failure is logged, never raised:
        the messages are already accepted, and losing one thread step is not fatal)."""
        with self._lock:
            steps, self._unrecorded_threads = self._unrecorded_threads, []
        if not steps:
            return
        try:
            with self.ledger.batch():
                for queue_id, thread, case in steps:
                    try:
                        _record_step(self.ledger, thread, case)
                    except Exception as exc:
                        _ledger_failed(queue_id, exc)
        except Exception as exc:  # the commit itself failed: none of the batch was recorded
            for queue_id, _thread, _case in steps:
                _ledger_failed(queue_id, exc)

    def review_housekeeping(self) -> tuple[Outgoing, ...]:
        """Periodic: audit what the CLI queued (review decisions, case actions), expire overdue holds;
        the notices to spool."""
        if self.audit_later is not None:
            self.audit_later.drain_later(self.audit)
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
        and record the accepted messages in the thread ledger."""
        self.audit.flush()
        self._record_threads()

    # -- helpers -----------------------------------------------------------------------------------

    def _remember(self, queue_id: str, pending: _Pending) -> None:
        with self._lock:
            self._pending[queue_id] = pending
            while len(self._pending) > MAX_PENDING:
                self._pending.popitem(last=False)

    def _count(self, outcome: str) -> None:
        with self._lock:
            self._outcomes[outcome] += 1

    def _too_complex(self, submission: Submission, version: str, budget: float) -> Refuse:
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

    def _internal_error(self, submission: Submission, version: str, error: str) -> Refuse:
        with self._lock:
            self._internal_errors += 1
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
            None if timed_out else _message_id(submission.content),  # a stuck message is not parsed again
            error=error,
        )

    def refused_at_intake(self, submission: Submission, code: int, status: str, reason: str) -> None:
        """Record a refusal the SMTP layer made before the policy ran (malformed, too big, not yours).

        Raises AuditError when the decision cannot be recorded; the SMTP layer then defers.
        """
        self.audit.record_decision(
            DecisionRecord(
                queue_id=submission.queue_id,
                member=submission.authenticated_as,
                verdict=Outcome.REJECT.value,
                reply=f"{code} {status}",
                policy_version=self.source.policy.version,
                findings=(
                    FindingRecord(rule="intake", code=reason, kind="message", action="reject", case=None),
                ),
                error=None,
                message_id=None,
                recipients=submission.rcpt_tos,
                message=submission.content,
            )
        )

    def _audit_refusal(
        self,
        submission: Submission,
        reply: Refuse,
        verdict: str,
        version: str,
        findings: tuple[FindingRecord, ...],
        message_id: str | None,
        error: str | None = None,
    ) -> Refuse:
        try:
            self.audit.record_decision(
                DecisionRecord(
                    queue_id=submission.queue_id,
                    member=submission.authenticated_as,
                    verdict=verdict,
                    reply=f"{reply.code} {reply.status}",
                    policy_version=version,
                    findings=findings,
                    error=error,
                    message_id=message_id,
                    recipients=submission.rcpt_tos,
                    message=submission.content,
                )
            )
        except AuditError as exc:
            # A decision that cannot be recorded is not made: defer, and let the client retry.
            log_event(log, "audit-append-failed", logging.ERROR, queue_id=submission.queue_id, error=str(exc))
            return tempfail(submission.queue_id)
        return reply

    def close(self) -> None:
        self._record_threads()
        self.ledger.close()
        self.audit.close()
        if self.fingerprint_store is not None:
            self.fingerprint_store.close()

    def __enter__(self) -> PolicyScreener:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def learn_release(ledger: LedgerPort, store: HoldsPort, released: HoldRecord) -> None:
    """The thread ledger learns a held message only once it is really sent: when its release is
    in the spool (released by a reviewer's reply to the gateway, or with the CLI)."""
    ledger.record_message(parse_message(store.release_content(released.reference)), case=released.case)


def _record_step(ledger: LedgerPort, thread: _Thread, case: str | None) -> None:
    if thread.message_id is not None:
        ledger.record(
            thread.message_id,
            in_reply_to=thread.in_reply_to,
            references=thread.references,
            from_=thread.from_,
            to=thread.to,
            cc=thread.cc,
            case=case,
        )


def _ledger_failed(queue_id: str, exc: Exception) -> None:
    log_event(log, "ledger-record-failed", logging.ERROR, queue_id=queue_id, error=type(exc).__name__)


def _finding_records(verdict: Verdict) -> tuple[FindingRecord, ...]:
    return tuple(
        FindingRecord(
            rule=d.finding.rule,
            code=d.finding.code,
            kind=d.finding.kind,
            action=d.action.value,
            case=d.finding.case,
            consent=d.finding.consent.key if d.finding.consent is not None else None,
            consent_date=d.finding.consent.date if d.finding.consent is not None else None,
        )
        for d in verdict.decisions
    )


def _held_findings(verdict: Verdict) -> list[HeldFinding]:
    """What reviewers and the sender are shown of each finding (never ``private_detail``)."""
    return [
        HeldFinding(
            rule=d.finding.rule,
            code=d.finding.code,
            where=d.finding.where,
            kind=d.finding.kind,
            advice=d.finding.advice,
            action=d.action.value,
            recipients=d.finding.recipients,
        )
        for d in verdict.decisions
        if d.action is not Action.AUDIT
    ]


def _cases_of(verdict: Verdict, thread_case: str | None) -> tuple[str, ...]:
    """Every case a held message concerns: its findings' cases, and its thread's case."""
    cases = sorted({d.finding.case for d in verdict.decisions if d.finding.case})
    return tuple(dict.fromkeys((*cases, *((thread_case,) if thread_case else ()))))


def _case_of(verdict: Verdict) -> str | None:
    cases = sorted({d.finding.case for d in verdict.decisions if d.finding.case})
    return cases[0] if cases else None


def _message_id(content: bytes) -> str | None:
    # Only after an internal error, when there may be no parsed message: a second, careful look.
    try:
        message_id = parse_message(content).message_id
    except Exception:
        return None
    return message_id if isinstance(message_id, str) else None


def _header_block_end(raw: bytes) -> int:
    """Offset of the blank line that ends the top-level header block (len(raw) if there is none)."""
    crlf = raw.find(b"\r\n\r\n")
    # A bare-LF blank line counts only if it comes first: no need to look past the CRLF one.
    lf = raw.find(b"\n\n", 0, crlf + 2 if crlf >= 0 else len(raw))
    candidates = [index + 2 for index in (crlf,) if index >= 0] + [index + 1 for index in (lf,) if index >= 0]
    return min(candidates) if candidates else len(raw)


def _without_header(raw: bytes, name: str) -> bytes:
    """Remove every top-level header field ``name`` (with its folded continuation lines), bytewise."""
    end = _header_block_end(raw)
    head = raw[:end]
    if name.lower().encode("ascii") not in head.lower():
        return raw
    wanted = name.lower().encode("ascii") + b":"
    kept: list[bytes] = []
    dropping = False
    for line in head.splitlines(keepends=True):
        if line[:1] in (b" ", b"\t"):
            if not dropping:
                kept.append(line)
            continue
        # Only "Name:" exactly, as the MIME parser reads headers: stripping a line the parser saw
        # as something else would relay a message other than the one the policy judged.
        dropping = line.lower().startswith(wanted)
        if not dropping:
            kept.append(line)
    return b"".join(kept) + raw[end:]


def _with_relay_header(content: bytes, header: bytes) -> bytes:
    """Exactly one relay header, at the top; the rest of the message is not re-serialised.

    A sender's own approval header is dropped too: only a release after review may carry one.
    """
    return header + _without_header(_without_header(content, APPROVED_HEADER), RELAY_HEADER)
