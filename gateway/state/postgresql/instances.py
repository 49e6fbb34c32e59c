"""Which gateways run on this database, and the policy version each judges under (``gateway_instances``).

Each gateway upserts its row when it starts, on every policy reload and at each heartbeat, and
deletes it when it stops cleanly; a gateway that died leaves its row, which ``instances`` reports
with its age (``seen_seconds_ago``, by the database's clock, so the hosts' clocks may differ).
"""

from __future__ import annotations

from collections.abc import Callable

from gateway.state.instances import InstanceRecord
from gateway.state.postgresql.database import Database


class PostgresqlInstances:
    """The ``InstancesPort`` of the PostgreSQL backend."""

    shared = True

    def __init__(self, database: Callable[[], Database]) -> None:
        self._database = database  # connects when first used (``open_state`` creates nothing)

    def announce(self, record: InstanceRecord) -> None:
        with self._database().connection() as connection:
            connection.execute(
                "INSERT INTO gateway_instances"
                " (instance, hostname, version, policy_version, started_at, seen_at)"
                " VALUES (%s, %s, %s, %s, to_timestamp(%s), now())"
                " ON CONFLICT (instance) DO UPDATE SET policy_version = EXCLUDED.policy_version,"
                " version = EXCLUDED.version, seen_at = now()",
                (record.instance, record.hostname, record.version, record.policy_version, record.started_at),
            )

    def leave(self, instance: str) -> None:
        with self._database().connection() as connection:
            connection.execute("DELETE FROM gateway_instances WHERE instance = %s", (instance,))

    def instances(self) -> list[InstanceRecord]:
        with self._database().connection() as connection:
            rows = connection.execute(
                "SELECT instance, hostname, version, coalesce(policy_version, ''),"
                " extract(epoch FROM started_at), extract(epoch FROM now() - seen_at)"
                " FROM gateway_instances ORDER BY started_at, instance"
            ).fetchall()
        return [
            InstanceRecord(instance, hostname, version, policy, float(started), max(0.0, float(ago)))
            for instance, hostname, version, policy, started, ago in rows
        ]
