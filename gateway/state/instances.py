"""The gateways sharing one state, each with the policy version it judges under (``InstancesPort``).

On the files backend one gateway owns the state and nothing is recorded (``LocalInstances``); on
PostgreSQL every gateway keeps a row in ``gateway_instances`` (``postgresql/instances.py``), which
``conduct-gateway status`` lists and the gateways compare to warn when their policies differ.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

# A row not refreshed for this long belongs to a gateway that died (or lost the database): it is
# listed as such and left out of the comparison. Three heartbeats (``HEARTBEAT``) and some slack.
STALE_AFTER = 60.0
HEARTBEAT = 15.0


@dataclass(frozen=True)
class InstanceRecord:
    """One gateway process: its id, host, software version, policy version and start time."""

    instance: str
    hostname: str
    version: str  # conduct-gateway's
    policy_version: str  # the policy in force (its digest), "" while none is loaded
    started_at: float  # seconds since the epoch
    seen_seconds_ago: float = 0.0  # when read back: since its last heartbeat

    @property
    def live(self) -> bool:
        return self.seen_seconds_ago < STALE_AFTER


def policy_versions(records: Sequence[InstanceRecord]) -> frozenset[str]:
    """The policy versions the live gateways run (more than one: they judge differently)."""
    return frozenset(r.policy_version for r in records if r.live and r.policy_version)


class LocalInstances:
    """The files backend: one gateway, nothing to share or record."""

    shared = False

    def announce(self, record: InstanceRecord) -> None:
        return None

    def leave(self, instance: str) -> None:
        return None

    def instances(self) -> list[InstanceRecord]:
        return []
