"""The screener the running gateway uses, built complete: policy, stores, review rights, workers."""

from __future__ import annotations

import logging

from gateway.decision.cpu_slice import CpuSlice
from gateway.decision.expunge import DueExpunger, Stores
from gateway.decision.overriding import Overrides
from gateway.decision.policy_screener import PolicyScreener
from gateway.decision.policy_source import PolicySource, freeze_loaded_policy
from gateway.decision.policy_workers import INLINE_SLICE_SECONDS, PolicyWorkers, worker_count
from gateway.decision.screening import Screener
from gateway.decision.shadow import ShadowEvaluator
from gateway.errors import GatewayError
from gateway.logs import log_event
from gateway.mail.notices import NOTICE_WINDOW, NoticeLimiter
from gateway.policy.reviewers import AccountCheck
from gateway.review.auditing import trail_sink
from gateway.review.desk import ReviewDesk
from gateway.review.rights import account_check
from gateway.settings import GatewaySettings
from gateway.state.opening import open_state
from gateway.state.ports import AccountsPort

log = logging.getLogger("gateway.policy")


def open_policy_screener(
    settings: GatewaySettings,
    *,
    has_account: AccountCheck | None = None,
    workers: PolicyWorkers | None = None,
    deferred_audit: bool = False,
    inline: bool = False,
    long_lived: bool = False,
) -> PolicyScreener:
    """Load the policy (ConfigError if invalid) and open the ledger and audit trail in state_dir.

    ``has_account``: review rights follow the users file. ``workers``: evaluate in these
    processes (started by ``start``). ``deferred_audit``: appends are made durable by
    ``flush_decisions`` (the running gateway), not one fsync each. ``inline``: with workers, a small
    message that arrives while they are all idle is evaluated on the event loop, within a CPU slice.
    ``long_lived`` (the running gateway): every policy loaded is frozen out of garbage collection
    (``freeze_loaded_policy``).
    """
    source = PolicySource.from_settings(settings)
    state = open_state(settings)
    ledger = state.ledger.open()
    try:
        audit = state.audit.open(deferred=deferred_audit)
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
        fingerprints = state.fingerprints.open()
        overrides = state.overrides.open()
    except GatewayError:
        ledger.close()
        audit.close()
        raise
    if settings.review.enabled:
        # Several gateways on PostgreSQL: a sender's notice budget counts every gateway's notices.
        shared = state.counts.counter("notices", NOTICE_WINDOW)
        review = ReviewDesk(
            store,
            settings.review,
            settings.server.hostname,
            trail_sink(audit),
            limiter=NoticeLimiter(settings.review.notices_per_hour, shared=shared),
            has_account=has_account,
        )
    # Cases past their expunge date are expunged by the running gateway, in the review round.
    expunger = DueExpunger(Stores(state, audit=audit), settings.policy.path)
    shadow = None
    if settings.policy.shadow is not None:
        # Loaded on the shadow's own thread: a candidate that cannot be loaded never stops the gateway.
        shadow = ShadowEvaluator(
            settings.policy.shadow, state, audit, registry=state.cases, accounts=state.accounts
        )
    # Evaluating on the event loop reads the ledger and the fingerprints there: only from local files
    # (a database round trip, or a database that is away, would hold every session up).
    inline_slice = None
    if inline and workers is not None and settings.state.backend == "files":
        inline_slice = CpuSlice(min(INLINE_SLICE_SECONDS, settings.policy.evaluation_budget))
    return PolicyScreener(
        source,
        ledger,
        audit,
        review,
        fingerprint_store=fingerprints,
        workers=workers,
        inline=inline_slice,
        freeze_policies=long_lived,
        audit_later=state.audit,  # what the CLI leaves for us is appended even with review off
        expunger=expunger,
        shadow=shadow,
        overrides=Overrides(overrides, audit, retention=settings.overrides.retention),
        refusal_notices=settings.review.refusal_notices,
    )


def policy_screener(settings: GatewaySettings, accounts: AccountsPort | None = None) -> PolicyScreener:
    """Load ``settings.policy.path`` (ConfigError, naming file, line and key, when it is invalid) and
    open the thread ledger and audit trail; review rights follow ``accounts`` (the users file).

    The audit trail is deferred: the SMTP layer flushes it (in a thread, shared by concurrent
    transactions) before it answers, instead of one fsync per decision on the event loop. The
    ``policy.workers`` evaluation processes are built here and started by ``Screener.start``; with
    them, a small message that arrives while they are all idle is evaluated on the event loop.
    """
    count = worker_count(settings.policy.workers)
    screener = open_policy_screener(
        settings,
        has_account=account_check(accounts) if accounts is not None else None,
        workers=PolicyWorkers(settings, count) if count > 0 else None,
        deferred_audit=True,
        inline=True,
        long_lived=True,
    )
    freeze_loaded_policy()
    return screener


def _checked(screener: PolicyScreener) -> Screener:
    return screener  # mypy: PolicyScreener is a complete Screener
