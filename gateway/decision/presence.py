"""This gateway among the others on one shared state: the policy version it runs, recorded and compared.

Several gateways on PostgreSQL must judge under the same policy. Each records its id, host, start
time and policy version in the shared state (``InstancesPort``) at start, after every reload and at
each heartbeat, and compares it with the live others: when they differ for two heartbeats in a row
(a reload reaches every gateway within seconds) it logs ``policy-versions-differ`` (again at each
change), ``/metrics`` counts the versions in use and
``conduct-gateway status`` names them. The gateway keeps running on its own version: a rolling edit
passes through a moment of two versions on every deployment, and each verdict's audit entry names
the version that judged it, so what was decided under which policy stays known.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from gateway import __version__
from gateway.errors import GatewayError
from gateway.logs import log_event
from gateway.state.instances import HEARTBEAT, InstanceRecord, policy_versions
from gateway.state.ports import InstancesPort

log = logging.getLogger("gateway.presence")


@dataclass(frozen=True)
class PresenceStatistics:
    """For ``/metrics``: the live gateways as of the last heartbeat, and this one's policy."""

    instances: int  # live gateways on this state (this one included)
    policy_versions: int  # distinct policy versions among them (more than 1: they judge differently)
    # The info family's labels: this gateway's id and policy version (a digest, never content).
    policy: Mapping[str, str] = field(default_factory=dict)


class Presence:
    """Records this gateway in the shared state and compares its policy version with the others'."""

    def __init__(
        self,
        port: InstancesPort,
        policy_version: Callable[[], str],
        *,
        hostname: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.instance = secrets.token_hex(6)  # lower-case hex: safe as a metric label
        self._port = port
        self._policy_version = policy_version
        self._hostname = hostname or socket.gethostname()
        self._started_at = clock()
        self._live = 1
        self._versions = 1
        self._reported: frozenset[str] = frozenset()
        self._previous: frozenset[str] = frozenset()  # the versions the last beat saw

    def record(self) -> InstanceRecord:
        return InstanceRecord(
            self.instance, self._hostname, __version__, self._policy_version(), self._started_at
        )

    def beat(self) -> None:
        """Record this gateway now and compare (blocking: on a thread)."""
        mine = self.record()
        self._port.announce(mine)
        records = [r for r in self._port.instances() if r.live or r.instance == mine.instance]
        versions = policy_versions(records) | {mine.policy_version}
        self._live = max(1, len(records))
        self._versions = len(versions)
        # A reload (or a `user add`: the accounts are part of the version) reaches every gateway
        # within seconds, so a difference is reported once two beats in a row have seen it.
        lasting = versions == self._previous
        self._previous = frozenset(versions)
        if len(versions) > 1 and not lasting:
            return
        if len(versions) > 1 and versions != self._reported:
            log_event(
                log,
                "policy-versions-differ",
                logging.WARNING,
                mine=mine.policy_version,
                versions=",".join(sorted(versions)),
                gateways=len(records),
                advice="the gateways judge under different policies: give every host the same files",
            )
        elif len(versions) == 1 and len(self._reported) > 1:
            log_event(log, "policy-versions-agree", version=mine.policy_version, gateways=len(records))
        self._reported = frozenset(versions)

    def leave(self) -> None:
        """A clean stop: this gateway's row goes (blocking)."""
        self._port.leave(self.instance)

    async def run(self, stop: asyncio.Event, nudge: asyncio.Event) -> None:
        """Beat at once, then every ``HEARTBEAT`` and at each ``nudge`` (a reload); leave at ``stop``."""
        failing = False
        while not stop.is_set():
            nudge.clear()
            try:
                await asyncio.to_thread(self.beat)
            except GatewayError as exc:
                if not failing:
                    log_event(log, "presence-unavailable", logging.WARNING, error=str(exc))
                failing = True
            else:
                failing = False
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(HEARTBEAT):
                    waiting = (asyncio.ensure_future(stop.wait()), asyncio.ensure_future(nudge.wait()))
                    try:
                        await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                    finally:
                        for task in waiting:
                            task.cancel()
                        await asyncio.gather(*waiting, return_exceptions=True)
        with contextlib.suppress(GatewayError):
            await asyncio.to_thread(self.leave)

    def statistics(self) -> PresenceStatistics:
        return PresenceStatistics(
            self._live,
            self._versions,
            {"gateway_instance": self.instance, "version": self._policy_version()},
        )
