"""Admin actions from the CLI go to the audit trail: directly when no gateway holds the trail, else
left for the running gateway, which appends them at its review round (with ``recorded_later``; see
``gateway.state.audit_later``). Fields are metadata only: codes, roles, counts, never a protected
identity.
"""

from __future__ import annotations

import getpass
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from gateway.errors import AuditError
from gateway.review.auditing import AuditSink
from gateway.settings import GatewaySettings
from gateway.state.audit_format import JsonValue
from gateway.state.opening import State, open_state

CASE_EVENT = "case"


@contextmanager
def audit_sink(state: State, event: str) -> Iterator[AuditSink]:
    """A sink for ``event`` entries: the trail itself if no gateway holds it, else "append later"."""
    audit = state.audit
    try:
        trail = audit.open()
    except AuditError:  # the running gateway holds it

        def later(fields: Mapping[str, JsonValue]) -> None:
            audit.append_later(event, fields)

        yield later
        return
    try:

        def direct(fields: Mapping[str, JsonValue]) -> None:
            trail.append(event, fields)

        yield direct
    finally:
        trail.close()


def record_case_action(settings: GatewaySettings, action: str, case: str, **details: JsonValue) -> None:
    """Audit one ``case`` command: which, on which case, by which system user, and plain details."""
    open_state(settings).audit.record(
        CASE_EVENT, {"action": action, "case": case, "by": _system_user(), **details}
    )


def _system_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (containers)
        return "unknown"
