"""The rate limits several gateways count together: the loop that exchanges the counts.

Failed logins per client and notices per sender are counted by each gateway in memory (answered
at once, never waiting on the network) and exchanged with the other gateways through the shared
state on a thread every ``SYNC_INTERVAL`` (``SharedCountsPort.sync``). While the database cannot
be reached each gateway counts alone (logged once), and the next sync sends what it kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from gateway.errors import GatewayError
from gateway.logs import log_event
from gateway.state.ports import SharedCountsPort

log = logging.getLogger("gateway.shared_limits")

SYNC_INTERVAL = 2.0


async def sync_shared_counts(counts: SharedCountsPort, stop: asyncio.Event) -> None:
    """Sync at once, then every ``SYNC_INTERVAL`` until ``stop``."""
    failing = False
    while not stop.is_set():
        try:
            await asyncio.to_thread(counts.sync)
        except GatewayError as exc:
            if not failing:
                log_event(log, "shared_counts_unavailable", logging.WARNING, error=str(exc))
            failing = True
        else:
            if failing:
                log_event(log, "shared_counts_resumed")
            failing = False
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(SYNC_INTERVAL):
                await stop.wait()
