"""A delivery worker stopped by an unreachable shared queue starts again; anything else stops it for good.

The intake answers 451 while the database is away; delivery must resume on its own once it is back,
whether the worker runs in the gateway's process or in the delivery process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from gateway.errors import SpoolError, StateError, first_leaf, storage_unavailable
from gateway.logs import log_event

log = logging.getLogger("gateway.delivery.restart")

RESTART_DELAY = 2.0
"""Seconds before a worker stopped by an unreachable database starts again."""


async def run_restarting(run: Callable[[], Awaitable[None]], stop: asyncio.Event, *, shared: bool) -> None:
    """Await ``run()`` until it returns; again after ``RESTART_DELAY`` while a shared store is unreachable.

    On a queue of this host's own (files) a failure is not an outage to wait out: it propagates, as
    do corrupt entries and bugs. Returns at once when ``stop`` is set during the delay.
    """
    while True:
        try:
            await run()
            return
        except (SpoolError, StateError, BaseExceptionGroup) as exc:
            if stop.is_set() or not shared or not storage_unavailable(exc):
                raise
            log_event(log, "delivery_worker_restarting", logging.ERROR, error=str(first_leaf(exc)))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(RESTART_DELAY):
                await stop.wait()
        if stop.is_set():
            return
