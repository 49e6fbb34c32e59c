"""Admin actions from the CLI go to the audit trail: directly when no gateway holds the trail, else
through the outbox in the state folder, which the running gateway's review round appends (with
``recorded_later``). Fields are metadata only: codes, roles, counts, never a protected identity.
"""

from __future__ import annotations

import getpass
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from gateway.errors import AuditError
from gateway.review.desk import AuditSink, HoldStore
from gateway.settings import GatewaySettings
from gateway.state.audit import AuditTrail, audit_dir
from gateway.state.audit_format import JsonValue

CASE_EVENT = "case"


@contextmanager
def audit_sink(settings: GatewaySettings, event: str) -> Iterator[AuditSink]:
    """A sink for ``event`` entries: the trail itself if no gateway holds it, else the outbox."""
    try:
        trail: AuditTrail | None = AuditTrail.open(audit_dir(settings.state_dir))
    except AuditError:
        trail = None  # the running gateway holds it
    if trail is None:
        store = HoldStore.in_state_dir(settings.state_dir)

        def queued(fields: Mapping[str, JsonValue]) -> None:
            try:
                store.outbox_put({**fields, "_event": event})
            except OSError as exc:
                raise AuditError(
                    f"{store.root}: cannot record this action for the audit trail ({exc.strerror}). "
                    "Tell the gateway's administrators: case actions must be on record."
                ) from None

        yield queued
        return
    try:

        def direct(fields: Mapping[str, JsonValue]) -> None:
            trail.append(event, fields)

        yield direct
    finally:
        trail.close()


def record_case_action(settings: GatewaySettings, action: str, case: str, **details: JsonValue) -> None:
    """Audit one ``case`` command: which, on which case, by which system user, and plain details."""
    with audit_sink(settings, CASE_EVENT) as sink:
        sink({"action": action, "case": case, "by": _system_user(), **details})


def _system_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (containers)
        return "unknown"
