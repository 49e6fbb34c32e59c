"""Review events in the audit trail: metadata only (no reasons, subjects or bodies), and the CLI's outbox."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping
from typing import Protocol

from gateway.errors import AuditError
from gateway.logs import log_event
from gateway.state.audit_format import JsonValue
from gateway.state.holds import HoldRecord
from gateway.state.ports import AuditWriterPort

log = logging.getLogger("gateway.review")

AUDIT_EVENT = "review"


class AuditSink(Protocol):
    def __call__(self, fields: Mapping[str, JsonValue]) -> None: ...


def trail_sink(trail: AuditWriterPort) -> AuditSink:
    """Record review events in the audit trail (metadata only: no reasons, subjects or bodies)."""

    def record(fields: Mapping[str, JsonValue]) -> None:
        trail.append(AUDIT_EVENT, fields)

    return record


def audit_review(
    audit: AuditSink, record: HoldRecord, event: str, member: str, via: str, *, comment: bool = False
) -> None:
    """One step of a hold's review (``event``: a decision, release, expire, prune...) in the trail.

    ``comment``: the decider wrote the sender a comment (recorded as given, never its text)."""
    fields: dict[str, JsonValue] = {
        "queue_id": record.reference,
        "review": event,
        "member": member,
        "via": via,
        "status": record.status,
        "approvals": len(record.counted_approvers()),
        "required_approvals": record.required_approvals,
        "policy": record.policy_version,
        "cases": list(record.all_cases),
    }
    if comment:
        fields["comment"] = True
    if record.release_queue_id and event == "release":
        fields["release_queue_id"] = record.release_queue_id
    try:
        audit(fields)
    except AuditError as exc:
        # The decision is on disk in the hold record; the trail is missing one line: say so loudly.
        log_event(log, "review-audit-failed", logging.ERROR, reference=record.reference, error=str(exc))


def audit_refusal(audit: AuditSink, reference: str, member: str, reason: str) -> None:
    """A reviewer's reply or CLI action refused (who and why, as a code word)."""
    with contextlib.suppress(AuditError):
        audit({"queue_id": reference, "review": "refused", "member": member, "reason": reason})
