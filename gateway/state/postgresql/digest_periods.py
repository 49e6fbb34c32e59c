"""The digest periods in PostgreSQL: which gateway sends a period, and its audit event recorded once.

Several gateways share one database and each runs the digest schedule. The election is a row per
period (``digest_periods``, migration 0006), claimed with ``INSERT ... ON CONFLICT DO UPDATE ...
WHERE`` the row is not recorded and its claim is free, this gateway's own, or past its lease (on the
database's clock): one statement, so two gateways never both hold a period, and a gateway that dies
holding one hands it on once the lease runs out (the next gateway finds the digest already in the
shared queue under the period's queue id, and does not send it again).

Recording is one transaction: the row is locked (``FOR UPDATE``), and only if it is not recorded
yet is the ``digest`` entry appended to the chain (``append_in``, on the same connection) and its
seq stored in the row. The entry and the mark commit together or not at all, so a period is recorded
exactly once, whatever restart or race. An advisory lock was the other way: it lives as long as a
session, so a pooled connection would carry it to unrelated work, and it records nothing once
released; a row says, for good, which periods are done.

The rows do not grow for ever: recording a period deletes the kind's rows older than its last
``KEEP_PERIODS`` recorded periods (a month of daily digests, over half a year of weekly ones; the
trail keeps every ``digest`` event). A period older than the newest recorded one is never claimed
or recorded again, its row deleted or not, as on the files backend.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime

from gateway.errors import AuditError, StateError
from gateway.state.audit_format import JsonValue
from gateway.state.postgresql.audit import append_in
from gateway.state.postgresql.database import Connection, Database

DIGEST_EVENT = "digest"

_CLAIM = """
INSERT INTO digest_periods (kind, period_end, period_start, claimed_by, claimed_until)
SELECT %(kind)s, %(end)s, %(start)s, %(owner)s, now() + make_interval(secs => %(lease)s)
WHERE NOT EXISTS (
    SELECT 1 FROM digest_periods
    WHERE kind = %(kind)s AND recorded_seq IS NOT NULL AND period_end > %(end)s
)
ON CONFLICT (kind, period_end) DO UPDATE
    SET claimed_by = excluded.claimed_by, claimed_until = excluded.claimed_until
    WHERE digest_periods.recorded_seq IS NULL
      AND (digest_periods.claimed_by IS NULL OR digest_periods.claimed_by = excluded.claimed_by
           OR digest_periods.claimed_until < now())
RETURNING claimed_by
"""

# Recorded periods kept per kind; older rows are deleted when a period is recorded.
KEEP_PERIODS = 32

_PRUNE = """
DELETE FROM digest_periods
WHERE kind = %(kind)s AND period_end < (
    SELECT period_end FROM digest_periods
    WHERE kind = %(kind)s AND recorded_seq IS NOT NULL
    ORDER BY period_end DESC OFFSET %(keep)s LIMIT 1
)
"""


@dataclass(frozen=True)
class PostgresqlDigestPeriods:
    """The ``DigestPeriodsPort`` of the PostgreSQL backend."""

    database: Callable[[], Database]

    def _run(self, work: Callable[[Connection], object]) -> object:
        try:
            with self.database().connection() as connection:
                return work(connection)
        except StateError as exc:
            raise AuditError(f"cannot use the digest periods: {exc}") from exc

    def recorded(self, kind: str) -> datetime | None:
        row = self._run(
            lambda db: db.execute(
                "SELECT max(period_end) FROM digest_periods WHERE kind = %s AND recorded_seq IS NOT NULL",
                (kind,),
            ).fetchone()
        )
        return row[0] if isinstance(row, tuple) else None

    def claim(self, kind: str, start: datetime, end: datetime, owner: str, lease: float) -> bool:
        values = {"kind": kind, "start": start, "end": end, "owner": owner, "lease": lease}
        return self._run(lambda db: db.execute(_CLAIM, values).fetchone()) is not None

    def record(self, kind: str, end: datetime, fields: Mapping[str, JsonValue]) -> bool:
        start = datetime.fromisoformat(str(fields.get("start", end.isoformat())))

        def work(db: Connection) -> bool:
            newest = db.execute(
                "SELECT max(period_end) FROM digest_periods WHERE kind = %s AND recorded_seq IS NOT NULL",
                (kind,),
            ).fetchone()
            if newest is not None and newest[0] is not None and end < newest[0]:
                return False  # an older period: recorded before, whether its row is kept or not
            db.execute(
                "INSERT INTO digest_periods (kind, period_end, period_start) VALUES (%s, %s, %s)"
                " ON CONFLICT (kind, period_end) DO NOTHING",
                (kind, end, start),
            )
            row = db.execute(
                "SELECT recorded_seq FROM digest_periods WHERE kind = %s AND period_end = %s FOR UPDATE",
                (kind, end),
            ).fetchone()
            if row is None or row[0] is not None:
                return False
            entry = append_in(db, DIGEST_EVENT, fields)
            db.execute(
                "UPDATE digest_periods SET recorded_seq = %s, claimed_by = NULL, claimed_until = NULL"
                " WHERE kind = %s AND period_end = %s",
                (entry.seq, kind, end),
            )
            db.execute(_PRUNE, {"kind": kind, "keep": KEEP_PERIODS - 1})
            return True

        return self._run(work) is True
