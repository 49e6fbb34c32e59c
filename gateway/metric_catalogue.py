"""Every metric the gateway exports: its name, type, help text and label, declared once.

The metrics layer reads components' ``statistics()`` snapshots and exports only the fields listed
here, with the type given here: nothing is guessed from a field's name, a field nobody declared is
never exported (a test lists every statistics field and fails on one missing here), and the
operations guide's metrics table is generated from this catalogue, so the documented names and
labels are the served ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

NAMESPACE = "conduct_gateway"

MetricKind = Literal["counter", "gauge", "histogram", "info"]


@dataclass(frozen=True)
class MetricSpec:
    kind: MetricKind
    name: str  # without the namespace; counters without "_total" (the exposition adds it)
    help: str
    label: str | None = None  # for a field holding a mapping: the label its keys go in (info: labels)

    @property
    def exposed(self) -> str:
        """The name as scraped (counters end in ``_total``, histograms show as ``_bucket`` etc.)."""
        base = f"{NAMESPACE}_{self.name}"
        suffix = {"counter": "_total", "info": "_info"}.get(self.kind, "")
        return base + suffix


def _counter(name: str, help_text: str, label: str | None = None) -> MetricSpec:
    return MetricSpec("counter", name, help_text, label)


def _gauge(name: str, help_text: str, label: str | None = None) -> MetricSpec:
    return MetricSpec("gauge", name, help_text, label)


def _histogram(name: str, help_text: str) -> MetricSpec:
    return MetricSpec("histogram", name, help_text)


# "<component>.<statistics field>" -> what it is exported as.
CATALOGUE: dict[str, MetricSpec] = {
    "spool.messages": _gauge(
        "spool_messages", "Messages in the spool by state, counted at scrape time.", "state"
    ),
    "spool.commits_total": _counter(
        "spool_commits", "Messages durably committed to the spool (answered 250)."
    ),
    "spool.commit_failures_total": _counter(
        "spool_commit_failures", "Spool commits that failed (the client got a temporary error)."
    ),
    "spool.directory_syncs_total": _counter(
        "spool_directory_syncs", "Folder fsyncs; one is shared by every commit that waited for it."
    ),
    "spool.file_syncs_total": _counter("spool_file_syncs", "File fsyncs made by the spool."),
    "spool.transactions_total": _counter(
        "spool_transactions",
        "Database transactions the PostgreSQL queue committed; one is shared by every commit that waited "
        "for it.",
    ),
    "spool.quarantined_total": _counter("spool_quarantined", "Unreadable spool entries moved to corrupt/."),
    "spool.oldest_age_seconds": _gauge(
        "spool_oldest_message_age_seconds",
        "Age of the oldest message waiting for delivery, by state.",
        "state",
    ),
    "smtp.connections_open": _gauge("smtp_connections_open", "SMTP connections open now, logged in or not."),
    "smtp.sessions_open": _gauge(
        "smtp_sessions_open",
        "Logged-in SMTP sessions open now (counted apart from connections not logged in).",
    ),
    "smtp.refusals_total": _counter(
        "smtp_refusals",
        "Connections refused or ended by a limit, and MAILs answered 452 4.3.1 for lack of disk space, "
        "by the limit (too_many_from_address, made_room, login_too_slow, insufficient_storage, ...).",
        "reason",
    ),
    "smtp.connections_total": _counter("smtp_connections", "SMTP connections admitted."),
    "smtp.connections_refused_total": _counter(
        "smtp_connections_refused", "SMTP connections refused (limits, or shutting down)."
    ),
    "smtp.auth_successes_total": _counter("smtp_auth_successes", "Successful logins."),
    "smtp.auth_failures_total": _counter("smtp_auth_failures", "Failed logins."),
    "smtp.auth_throttled_total": _counter(
        "smtp_auth_throttled", "Logins refused because the client failed too often."
    ),
    "smtp.messages_accepted_total": _counter(
        "smtp_messages_accepted", "Messages accepted (spooled, answered 250)."
    ),
    "smtp.messages_refused_total": _counter(
        "smtp_messages_refused", "Messages refused with a permanent error (policy, size, ...)."
    ),
    "smtp.messages_deferred_total": _counter(
        "smtp_messages_deferred", "Messages answered with a temporary error."
    ),
    "milter.connections_open": _gauge("milter_connections_open", "MTA connections to the milter open now."),
    "milter.connections_total": _counter("milter_connections", "MTA connections the milter accepted."),
    "milter.messages_total": _counter(
        "milter_messages",
        "Messages the milter judged, by outcome (accepted, held, refused, deferred, passed, failed, ...).",
        "outcome",
    ),
    "milter.edits_not_offered_total": _counter(
        "milter_edits_not_offered",
        "Messages answered with a temporary failure: the MTA did not offer an edit the decision needs.",
    ),
    "smtp.bytes_accepted_total": _counter("smtp_accepted_bytes", "Bytes of accepted messages."),
    "smtp.commits_in_flight": _gauge("smtp_commits_in_flight", "Spool commits under way now."),
    "smtp.submission_seconds": _histogram(
        "smtp_submission_duration_seconds",
        "From the end of DATA to the reply: checks, policy, durable commit (what a sender waits for).",
    ),
    "delivery.in_flight": _gauge("delivery_in_flight", "Messages being worked on by delivery now."),
    "delivery.sending": _gauge("delivery_sending", "Messages being handed to the upstream right now."),
    "delivery.ready": _gauge("delivery_ready", "Messages waiting for a delivery slot."),
    "delivery.scheduled": _gauge("delivery_scheduled", "Deferred messages waiting for their next attempt."),
    "delivery.connections_open": _gauge("delivery_connections_open", "Connections to the upstream open now."),
    "delivery.connections_total": _counter("delivery_connections", "Connections made to the upstream."),
    "delivery.attempts_total": _counter("delivery_attempts", "Delivery attempts."),
    "delivery.outcomes_total": _counter("delivery_outcomes", "Delivery attempts by outcome.", "outcome"),
    "delivery.recipients_total": _counter(
        "delivery_recipients", "Recipient results of delivery attempts.", "result"
    ),
    "delivery.dsns_total": _counter("delivery_dsns", "Delivery status notifications sent to senders."),
    "delivery.errors_total": _counter(
        "delivery_errors", "Internal errors of the delivery worker (the message was kept)."
    ),
    "delivery.out_of_step_total": _counter(
        "delivery_out_of_step", "Upstream connections dropped because a reply matched no command we sent."
    ),
    "delivery.unrecorded": _gauge(
        "delivery_unrecorded", "Messages sent whose result is not on disk yet (kept in memory, retried)."
    ),
    "delivery.disk_full_total": _counter(
        "delivery_disk_full", "Results after a delivery that the spool could not take: disk full."
    ),
    "delivery.delivery_seconds": _histogram(
        "delivery_latency_seconds",
        "From acceptance (250) to the upstream's 250 for the message's last recipient.",
    ),
    "policy.outcomes": _counter("policy_decisions", "Policy verdicts by outcome.", "outcome"),
    "policy.internal_errors": _counter(
        "policy_internal_errors", "Evaluations that failed internally (answered 451, never passed unchecked)."
    ),
    "policy.reloads": _counter("policy_reloads", "Policy (or case registry) reloads that took effect."),
    "policy.reload_refusals": _counter(
        "policy_reload_refusals", "Policy edits refused as invalid (the last good policy stays in force)."
    ),
    "policy.reload_pending_refused": _gauge(
        "policy_reload_refused",
        "1 while the policy files on disk were refused as invalid and the last good policy is in force.",
    ),
    "policy.registry_unreadable": _gauge(
        "policy_registry_unreadable",
        "1 while the case registry on disk cannot be read or decrypted (the cases in force are kept).",
    ),
    "policy.evaluation_seconds": _histogram(
        "policy_evaluation_duration_seconds",
        "Parsing, thread lookup, every rule and the rewrite, per message.",
    ),
    "policy_workers.workers": _gauge("policy_workers_configured", "Policy worker processes configured."),
    "policy_workers.alive": _gauge("policy_workers_alive", "Policy worker processes alive now."),
    "policy_workers.restarts_total": _counter(
        "policy_workers_restarts", "Policy workers started again after one died or was stuck."
    ),
    "policy_workers.lost_total": _counter(
        "policy_workers_lost_messages",
        "Messages deferred (451) because their policy worker died or was stuck.",
    ),
    "policy_workers.stale_total": _counter(
        "policy_workers_stale_messages",
        "Messages evaluated in the gateway process (a worker's policy differed).",
    ),
    "policy_workers.over_budget_total": _counter(
        "policy_workers_over_budget_messages",
        "Messages refused (552) for using up policy.evaluation_budget of CPU time.",
    ),
    "policy_workers.waiting": _gauge(
        "policy_workers_waiting", "Messages waiting for an idle policy worker now."
    ),
    "policy_workers.inline_total": _counter(
        "policy_inline_evaluations",
        "Small messages evaluated on the event loop because every policy worker was idle.",
    ),
    "policy_workers.inline_used_up_total": _counter(
        "policy_inline_slices_used_up",
        "Messages evaluated on the event loop that used up their CPU slice and went to a worker.",
    ),
    "shadow.evaluated_total": _counter(
        "shadow_evaluated",
        "Messages the shadow policy (policy.shadow) evaluated alongside the policy in force.",
    ),
    "shadow.differences_total": _counter(
        "shadow_differences",
        "Messages on which the shadow policy's verdict or findings differ from those in force.",
    ),
    "shadow.verdict_changes": _counter(
        "shadow_verdict_changes",
        "Differences by verdict in force and shadow verdict (e.g. deliver_to_reject; "
        "the same verdict twice: findings only).",
        "change",
    ),
    "shadow.rule_differences": _counter(
        "shadow_rule_differences",
        "Differences by rule whose findings differ (hyphens as underscores).",
        "rule",
    ),
    "shadow.errors_total": _counter(
        "shadow_errors",
        "Messages the shadow policy could not evaluate or record (the message was unaffected).",
    ),
    "shadow.skipped_total": _counter(
        "shadow_skipped",
        "Messages not shadowed: the backlog was full or the shadow policy could not be loaded.",
    ),
    "shadow.load_failed": _gauge(
        "shadow_policy_unusable",
        "1 while the shadow policy file cannot be loaded (or its last edit was refused).",
    ),
    "shadow.backlog": _gauge("shadow_backlog", "Messages waiting for the shadow policy now."),
    "overrides.granted": _counter(
        "overrides_granted",
        "Messages sent with a sender's override of an overridable rule, by rule (hyphens as underscores).",
        "rule",
    ),
    "overrides.refused": _counter(
        "overrides_refused",
        "Override attempts not accepted, by reason (no_justification, unknown, used, other_rules, quota).",
        "reason",
    ),
    "overrides.offered_total": _counter(
        "overrides_offered", "Refusals that offered the sender an override token."
    ),
    "presence.instances": _gauge(
        "instances",
        "Gateways on this shared state that were seen in the last minute, this one included (1 on files).",
    ),
    "presence.policy_versions": _gauge(
        "instances_policy_versions",
        "Distinct policy versions the live gateways run: above 1, they judge under different policies.",
    ),
    "presence.policy": MetricSpec(
        "info",
        "policy",
        "The policy version (a digest, never its content) this gateway judges under, with its instance id.",
        "gateway_instance, version",
    ),
    "journal.copies_total": _counter("journal_copies", "Copies of inbound committee mail received."),
    "journal.learnt_total": _counter(
        "journal_learnt", "Copies whose words were learnt as protected content."
    ),
    "journal.refused_clients_total": _counter(
        "journal_refused_clients", "Connections to the journal intake from clients not allowed to send."
    ),
    "journal.failures_total": _counter("journal_failures", "Copies that could not be processed."),
}

# Statistics fields that are deliberately not exported (text, lists, or per-start bookkeeping).
NOT_EXPORTED = frozenset(
    {
        "policy.policy_version",
        "policy_workers.policy_version",
    }
)


def metrics_reference_markdown() -> str:
    """The operations guide's table of every exported metric (generated; a test keeps it fresh)."""
    rows = ["| Metric | Type | Label | Meaning |", "| :--- | :--- | :--- | :--- |"]
    for spec in sorted(CATALOGUE.values(), key=lambda s: s.name):
        label = f"`{spec.label}`" if spec.label else ""
        rows.append(f"| `{spec.exposed}` | {spec.kind} | {label} | {spec.help} |")
    rows.append("| `conduct_gateway_build_info` | info | `version` | The gateway's version. |")
    return "\n".join(rows) + "\n"
