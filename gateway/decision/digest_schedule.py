"""Sending the committee digest on time: once per period, through the queue, across restarts and gateways.

The running gateway calls ``DigestSchedule.run`` at each review round. A period is due once it has
ended and no digest for it is known: neither a ``digest`` event in the audit trail (or waiting to be
appended, or recorded in the digest periods) nor a message under its queue id in the queue. Before
sending, the gateway claims the period (``DigestPeriodsPort.claim``): with several gateways on one
database exactly one sends it, and a gateway that died holding the claim hands it on when its lease
runs out. The message is spooled first and recorded second (``DigestPeriodsPort.record``, which
appends the ``digest`` event only if the period is not recorded yet), so a crash in between leaves a
spooled digest the next round finds by its queue id: never a second mail, never a second event,
never a gap.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import os
import secrets
import socket
from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace
from typing import Any

from gateway.decision.digest import (
    DIGEST_EVENT,
    Period,
    Window,
    count,
    digest_letter,
    digest_text,
    due,
    last_completed,
)
from gateway.decision.screening import Screener
from gateway.logs import log_event
from gateway.mail.notices import Notices
from gateway.policy.engine import CompiledPolicy
from gateway.review.outgoing import spool_outgoing
from gateway.settings import GatewaySettings
from gateway.state.audit_format import JsonValue
from gateway.state.opening import State
from gateway.state.ports import AuditPort, DigestPeriodsPort, QueuePort
from gateway.state.spool_records import QueueState

log = logging.getLogger("gateway.digest")

# How long a claim on a period keeps the other gateways off it: far longer than spooling one digest
# takes, short enough that a crashed gateway's period goes out at one of the next rounds.
CLAIM_LEASE = 300.0


def _utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


class DigestSchedule:
    """Sends each due period's digest to ``recipients`` (default: the conduct address)."""

    def __init__(
        self,
        kind: Period,
        *,
        audit: AuditPort,
        spool: QueuePort,
        policy: Callable[[], CompiledPolicy],
        hostname: str,
        recipients: tuple[str, ...] = (),
        clock: Callable[[], datetime.datetime] = _utc_now,
        periods: DigestPeriodsPort | None = None,
        lease: float = CLAIM_LEASE,
    ) -> None:
        self.kind = kind
        self.audit = audit
        self.spool = spool
        self.policy = policy
        self.hostname = hostname
        self.recipients = recipients
        self.clock = clock
        self.periods = periods  # None: the CLI's on-demand digests, which record nothing
        self.lease = lease
        # Who claims a period: this process of this host (a restarted gateway is another owner).
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self._last_end: datetime.datetime | None = None
        self._scanned = False

    def _entries(self) -> Iterator[Mapping[str, Any]]:
        return (entry.fields for entry in self.audit.entries())  # either backend's trail

    def last_sent(self) -> datetime.datetime | None:
        """The end of the last period whose digest is recorded (read from the trail once)."""
        if not self._scanned:
            for fields in self._entries():
                if fields.get("event") == DIGEST_EVENT and fields.get("period") == self.kind:
                    self._note(str(fields.get("end", "")))
            self._scanned = True
        if self.periods is not None and (recorded := self.periods.recorded(self.kind)) is not None:
            self._note(recorded.isoformat())  # by another gateway, or waiting to be appended
        return self._last_end

    def _note(self, end: str) -> None:
        try:
            moment = datetime.datetime.fromisoformat(end)
        except ValueError:
            return
        if self._last_end is None or moment > self._last_end:
            self._last_end = moment

    def _failures(self) -> list[datetime.datetime]:
        """When each recipient that failed for good failed (bounced messages, and done ones with a
        failed recipient)."""
        times = []
        for state in (QueueState.BOUNCED, QueueState.DONE):
            for entry in self.spool.entries(state):
                status = entry.status
                for recipient in status.recipients if status is not None else ():
                    if recipient.state == "failed" and recipient.updated_at:
                        times.append(datetime.datetime.fromtimestamp(recipient.updated_at, datetime.UTC))
        return times

    async def run(self) -> int:
        """Send every due digest; how many were spooled now."""
        last_sent = await asyncio.to_thread(self.last_sent)
        if last_sent is None:
            # The very first start: the first digest is of the period the gateway starts in (a
            # digest of a period before it ran would say nothing and surprise a first trial).
            await asyncio.to_thread(self._record, last_completed(self.kind, self.clock()), baseline=True)
            return 0
        windows = due(self.kind, last_sent, self.clock())
        sent = 0
        for window in windows:
            if not await asyncio.to_thread(self._claim, window):
                return sent  # another gateway is sending it; later periods wait their turn
            if await asyncio.to_thread(self.spool.locate, window.queue_id) is None:  # a query on PostgreSQL
                if not await self.send(window):
                    return sent  # tried again at the next round; later periods wait their turn
                sent += 1
            await asyncio.to_thread(self._record, window)
        return sent

    def _claim(self, window: Window) -> bool:
        if self.periods is None:
            return True
        return self.periods.claim(self.kind, window.start, window.end, self.owner, self.lease)

    def text(self, window: Window) -> str:
        """The digest of ``window`` as its mail would say it (``conduct-gateway digest show``)."""
        return digest_text(window, count(list(self._entries()), window, self._failures()))

    async def send(self, window: Window, *, scheduled: bool = True) -> bool:
        """Spool the digest of ``window``; False if it could not be stored (logged).

        ``scheduled`` False (an admin's ``digest send``): under a queue id of its own, so that the
        period's scheduled digest still goes out when the period ends.
        """
        policy = self.policy()
        entries = await asyncio.to_thread(lambda: list(self._entries()))
        counts = count(entries, window, await asyncio.to_thread(self._failures))
        notices = Notices(
            conduct_address=policy.conduct_address, committee=policy.committee, hostname=self.hostname
        )
        messages = []
        for index, to in enumerate(self.recipients or (policy.conduct_address,)):
            built = notices.outgoing(digest_letter(to, window, counts))
            if built is None:
                continue
            # The period's own queue id (one per recipient), so that a restart recognises it.
            queue_id = window.queue_id if index == 0 else f"{window.queue_id[:-2]}{index:02X}"
            messages.append(replace(built, queue_id=queue_id) if scheduled else built)
        failed = await spool_outgoing(self.spool, messages)
        if failed:
            return False
        log_event(
            log, "digest-queued", period=self.kind, start=window.start.isoformat(), queue_id=window.queue_id
        )
        return True

    def _record(self, window: Window, *, baseline: bool = False) -> None:
        end = window.end.isoformat()
        if self._last_end is not None and window.end <= self._last_end:
            return
        fields: dict[str, JsonValue] = {"period": self.kind, "start": window.start.isoformat(), "end": end}
        # A baseline records where the schedule starts; nothing was sent for it.
        fields.update({"baseline": True} if baseline else {"queue_id": window.queue_id})
        if self.periods is not None:
            self.periods.record(self.kind, window.end, fields)  # False: recorded already, by anyone
        else:
            self.audit.append_later(DIGEST_EVENT, fields)
        self._note(end)


def committee_digest(
    settings: GatewaySettings, state: State, spool: QueuePort, screener: Screener
) -> DigestSchedule | None:
    """The digest schedule the running gateway keeps (None: ``digest.period: off``, or no policy)."""
    source = screener.policy_source
    if settings.digest.period == "off" or source is None:
        return None
    return DigestSchedule(
        settings.digest.period,
        audit=state.audit,
        spool=spool,
        policy=lambda: source.policy,
        hostname=settings.server.hostname,
        recipients=settings.digest.to,
        periods=state.digests,
    )


def current_period(kind: Period, now: datetime.datetime) -> Window:
    """The period ``now`` is in, from its start to its end (a digest of it so far counts up to now)."""
    last = last_completed(kind, now)
    return Window(kind, last.end, last.end + (last.end - last.start))
