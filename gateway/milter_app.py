"""Wiring of milter mode: settings -> screener, queue, delivery, milter listener, hold queue -> one TaskGroup.

The same screener the SMTP gateway builds (``gateway.decision.build``) judges every message; the
gateway's own messages (review requests, notices) are delivered by the same delivery worker, to
``delivery.upstream`` (a Postfix listener without the milter, so they are not screened twice).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable

from gateway import systemd
from gateway.decision.build import policy_screener
from gateway.decision.commit import CommitState
from gateway.decision.policy_screener import PolicyScreener
from gateway.decision.presence import Presence
from gateway.decision.shared_limits import sync_shared_counts
from gateway.delivery.worker import DeliveryWorker
from gateway.logs import log_event
from gateway.metrics import Health, MetricsServer, build_registry
from gateway.milter.holding import HoldQueue, PostfixQueue
from gateway.milter.judging import Judge
from gateway.milter.server import MilterServer
from gateway.netaddr import host_port
from gateway.review.outgoing import spool_outgoing
from gateway.review.tokens import is_review_address
from gateway.settings import GatewaySettings
from gateway.state.holds import HoldRecord
from gateway.state.opening import open_state
from gateway.state.ports import QueuePort

log = logging.getLogger("gateway.milter")
POLICY_POLL_INTERVAL = 2.0


def hold_queue(settings: GatewaySettings, screener: PolicyScreener, spool: QueuePort) -> HoldQueue:
    """The review desk's holds as Postfix's hold queue should follow them."""
    desk = screener.review
    milter = settings.milter
    queue = PostfixQueue(
        milter.postsuper,
        str(milter.postfix_config_directory) if milter.postfix_config_directory else None,
    )

    def records() -> list[HoldRecord]:
        return desk.store.records() if desk else []

    return HoldQueue(queue, records, lambda queue_id: spool.locate(queue_id) is not None)


def held_release(screener: PolicyScreener) -> Callable[[str], tuple[bytes, tuple[str, ...]] | None]:
    def release(reference: str) -> tuple[bytes, tuple[str, ...]] | None:
        desk = screener.review
        if desk is None:
            return None
        try:
            record = desk.store.get(reference)
            return desk.store.release_content(reference), record.release_rcpt_tos
        except Exception:  # no hold under this reference: not a hold
            return None

    return release


class MilterGateway:
    """Everything milter mode runs, until ``request_stop``."""

    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        self._stop = asyncio.Event()
        self.server: MilterServer | None = None
        self.metrics: MetricsServer | None = None
        self.ready = asyncio.Event()
        self._serving = False
        self._delivery_task: asyncio.Task[None] | None = None

    def health(self) -> Health:
        """Healthy while the milter listens and the delivery worker runs (what /healthz reports)."""
        delivery = self._delivery_task is not None and not self._delivery_task.done()
        return Health({"milter": self._serving, "delivery": delivery and not self._stop.is_set()})

    def request_stop(self) -> None:
        self._stop.set()

    async def run(self, *, handle_signals: bool = True) -> None:
        settings = self.settings
        settings.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        state = open_state(settings)
        accounts = state.accounts.open()
        spool = state.queue.open()
        screener = policy_screener(settings, accounts)
        await screener.start()
        holds = hold_queue(settings, screener, spool)
        source = screener.policy_source
        judge = Judge(
            screener,
            CommitState.of(spool, screener.stores),
            settings.milter,
            committee=lambda: frozenset(source.policy.committee),
            held_release=held_release(screener),
            release=holds.round,
            max_size=settings.limits.max_message_size,
            review_address=lambda address: is_review_address(address, settings.review, source.policy),
        )
        server = self.server = MilterServer(judge, settings.milter, settings.limits.max_message_size)
        worker = DeliveryWorker(spool, settings.delivery, hostname=settings.server.hostname)
        sources = {
            "spool": spool.recent_statistics,
            "delivery": worker.statistics,
            "milter": server.statistics,
        }
        sources.update(screener.metric_sources())
        presence = Presence(state.instances, lambda: source.policy.version)
        sources["presence"] = presence.statistics
        metrics = self.metrics = MetricsServer(settings.metrics, build_registry(sources), self.health)
        loop = asyncio.get_running_loop()
        if handle_signals:
            loop.add_signal_handler(signal.SIGTERM, self.request_stop)
            loop.add_signal_handler(signal.SIGINT, self.request_stop)
            loop.add_signal_handler(signal.SIGHUP, lambda: self._reload(screener))
        delivery_stop = asyncio.Event()
        try:
            await server.start()
            self._serving = True
            log_event(log, "listening", name="milter", address=str(server.address))
            if settings.metrics.enabled:
                await metrics.start()
                host, port = metrics.address
                log_event(log, "listening", name="metrics", address=host_port(host, port))
            async with asyncio.TaskGroup() as group:
                self._delivery_task = group.create_task(worker.run(delivery_stop))
                group.create_task(self._housekeeping(screener, spool, holds, delivery_stop))
                group.create_task(self._watch_policy(screener, delivery_stop))
                if state.counts.shared:  # notice limits counted with the other gateways
                    group.create_task(sync_shared_counts(state.counts, delivery_stop))
                if state.instances.shared:  # the policy version, beside the other gateways'
                    group.create_task(presence.run(delivery_stop, asyncio.Event()))
                self.ready.set()
                log_event(log, "ready")
                systemd.notify("READY=1", f"STATUS=milter on {server.address}")
                await self._stop.wait()
                systemd.notify("STOPPING=1")
                self._serving = False
                await server.stop()
                delivery_stop.set()
        finally:
            self._serving = False
            delivery_stop.set()
            await server.stop()
            await metrics.stop()
            await screener.stop()
            screener.close()
            if handle_signals:
                for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                    loop.remove_signal_handler(signum)

    async def _housekeeping(
        self, screener: PolicyScreener, spool: QueuePort, holds: HoldQueue, stop: asyncio.Event
    ) -> None:
        # Expiry notices, audit entries the CLI left, due expunges, and the hold queue following the desk.
        expunger = screener.expunger
        while not stop.is_set():
            if expunger is not None:
                try:
                    await asyncio.to_thread(expunger.run)
                except Exception as exc:  # e.g. the registry key is missing: review goes on regardless
                    log_event(log, "expunge_round_failed", logging.ERROR, error=str(exc))
            try:
                await spool_outgoing(spool, await asyncio.to_thread(screener.review_housekeeping))
                await holds.round()
            except Exception as exc:  # the next round tries again
                log_event(log, "milter.housekeeping_failed", logging.ERROR, error=type(exc).__name__)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.review.check_interval):
                    await stop.wait()

    def _reload(self, screener: PolicyScreener) -> None:
        """SIGHUP: re-read the policy (an invalid file is refused and the one in force kept)."""
        log_event(log, "policy_reload", result=str(screener.reload()))

    async def _watch_policy(self, screener: PolicyScreener, stop: asyncio.Event) -> None:
        # Policy edits are picked up without a restart, as in gateway mode.
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(POLICY_POLL_INTERVAL):
                    await stop.wait()
            if not stop.is_set():
                await asyncio.to_thread(screener.reload_if_changed)
