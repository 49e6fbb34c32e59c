"""How a message's delivery status changes: each recipient's state machine and the attempt's bookkeeping.

The record itself (``DeliveryStatus``, one ``RecipientStatus`` per recipient, and its file
``status/<queue id>.json``) lives in the state layer (``gateway.state.delivery_status``): the spool
stores it and the queue listings read it, and the state layer may not import delivery. Every change
to it is made here, by pure functions of (status, results, time), so the rules can be read in one
place and tested without a spool, a clock or a connection:

    pending  --2xx-->        delivered   (final)
    pending  --5xx-->        failed      (final; reported once a DSN is spooled)
    pending  --4xx/other-->  deferred    (tried again after a backoff)
    pending/deferred --retry_lifetime ran out--> failed, expired

A deferred recipient moves exactly as a pending one does. The on-disk format is not touched here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Literal

from gateway.delivery.model import RecipientResult
from gateway.state.delivery_status import DeliveryStatus, RecipientState, RecipientStatus

Event = Literal["delivered", "deferred", "failed", "expired"]
"""What can happen to a recipient: an upstream reply's outcome, or retry_lifetime running out."""

TRANSITIONS: Mapping[tuple[RecipientState, Event], RecipientState] = {
    ("pending", "delivered"): "delivered",
    ("pending", "deferred"): "deferred",
    ("pending", "failed"): "failed",
    ("pending", "expired"): "failed",
    ("deferred", "delivered"): "delivered",
    ("deferred", "deferred"): "deferred",
    ("deferred", "failed"): "failed",
    ("deferred", "expired"): "failed",
}
"""Every allowed change of a recipient's state; delivered and failed are final (no entry)."""

NO_ATTEMPT_REPLY = "no delivery attempt could be made"


def next_state(state: RecipientState, event: Event) -> RecipientState:
    """The state ``event`` moves a recipient in ``state`` to; ValueError from a final state."""
    try:
        return TRANSITIONS[(state, event)]
    except KeyError:
        raise ValueError(f"a {state} recipient cannot become {event}") from None


def record_attempt(status: DeliveryStatus, results: Sequence[RecipientResult], now: float) -> DeliveryStatus:
    """``status`` after an attempt that gave ``results`` (one per recipient tried) at ``now``."""
    by_address = {r.address: r for r in status.recipients}
    changes = {}
    for result in results:
        current = by_address.get(result.address)
        if current is not None:
            next_state(current.state, result.outcome)  # only pending and deferred recipients are tried
        changes[result.address] = RecipientStatus(
            result.address, result.outcome, result.reply, now, result.remote
        )
    return replace(status.updated(changes), attempts=status.attempts + 1, last_attempt_at=now)


def expire(status: DeliveryStatus, now: float) -> DeliveryStatus:
    """Every recipient still to be tried fails for good: retry_lifetime has run out."""
    changes = {
        r.address: replace(
            r,
            state=next_state(r.state, "expired"),
            expired=True,
            reply=r.reply or NO_ATTEMPT_REPLY,
            updated_at=r.updated_at or now,
        )
        for r in status.recipients
        if r.state in ("pending", "deferred")
    }
    return status.updated(changes)


def schedule(status: DeliveryStatus, when: float) -> DeliveryStatus:
    """``status`` with its next attempt due at ``when``."""
    return replace(status, next_attempt_at=when)


def reported(status: DeliveryStatus) -> DeliveryStatus:
    """Every failure not reported yet marked reported (no DSN is counted: the sender was null)."""
    return status.updated({r.address: replace(r, reported=True) for r in status.unreported_failures()})


def dsn_sent(status: DeliveryStatus) -> DeliveryStatus:
    """Every failure marked reported, and one more DSN counted (its number names the DSN's queue id)."""
    return replace(reported(status), dsn_count=status.dsn_count + 1)


def backoff(attempts: int, initial: float, maximum: float) -> float:
    """``initial`` after the first attempt, doubling after each further one, up to ``maximum``."""
    exponent = min(max(attempts - 1, 0), 62)
    return min(maximum, initial * 2.0**exponent)


def attempt_outcome(results: Sequence[RecipientResult], expired: bool) -> str:
    """The attempt as one word for logs and metrics: delivered, partial, deferred, bounced or expired."""
    if expired:
        return "expired"
    kinds = {r.outcome for r in results}
    if kinds == {"delivered"} or not kinds:
        return "delivered"
    if "delivered" in kinds:
        return "partial"
    return "deferred" if "deferred" in kinds else "bounced"


def next_attempt_text(status: DeliveryStatus, now: float) -> str | None:
    """How long until the next attempt, for the log ("300s"); None when nothing is left to try."""
    if not status.pending():
        return None
    return f"{max(0.0, status.next_attempt_at - now):.0f}s"
