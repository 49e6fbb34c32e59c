"""Events counted by every gateway within a window: failed logins per client, notices per sender.

``note`` and ``elsewhere`` are called on the event loop (the SMTP session, the review desk), so
they never touch the network: they queue this gateway's events and answer from the other
gateways' events as of the last ``sync``. ``sync`` (blocking: the gateway runs it on a thread
every two seconds, ``gateway.decision.shared_limits``) sends the queued events, fetches everyone's within the
window and deletes rows older than it. A periodic sync rather than a query per event: a login or
a notice never waits for the database, and an unreachable database leaves each gateway counting
its own events (the limit then holds per gateway, as with the files backend) until it is back.
So a client spreading its attempts over N gateways is held to the limit within one sync interval.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass

from gateway.state.postgresql.database import Database

# Events kept for the next sync at most (the database away for long, a flood of failed logins):
# this gateway's own limit still counts every one in memory.
MAX_UNSENT = 10_000


@dataclass(frozen=True)
class Table:
    """Where one kind of event is kept (fixed names from the migrations, never user input)."""

    name: str
    key: str
    at: str


LOGIN_FAILURES = Table("login_failures", "client", "failed_at")
NOTICES_SENT = Table("notices_sent", "sender", "sent_at")
TABLES = {"login-failures": LOGIN_FAILURES, "notices": NOTICES_SENT}


class SharedWindowCounts:
    """``gateway.login_throttle.SharedCounts`` over one table (see the module docstring)."""

    def __init__(self, database: Database, table: Table, window: float) -> None:
        self.window = window
        self._database = database
        self._table = table
        self._lock = threading.Lock()
        self._unsent: list[str] = []
        self._elsewhere: Counter[str] = Counter()  # other gateways' events in the window, last sync
        self._sent_ids: set[int] = set()  # our own rows, not to be counted twice

    def note(self, key: str) -> None:
        with self._lock:
            if len(self._unsent) >= MAX_UNSENT:  # no sync for a long while: keep the newest
                del self._unsent[: len(self._unsent) - MAX_UNSENT + 1]
            self._unsent.append(key)

    def elsewhere(self, key: str) -> int:
        with self._lock:
            return self._elsewhere[key]

    def sync(self) -> None:
        """Send this gateway's new events, fetch every gateway's in the window (blocking)."""
        table = self._table
        with self._lock:
            unsent, self._unsent = self._unsent, []
        try:
            with self._database.connection() as connection:
                for key in unsent:
                    row = connection.execute(
                        f"INSERT INTO {table.name} ({table.key}) VALUES (%s) RETURNING id",  # noqa: S608 - fixed names
                        (key,),
                    ).fetchone()
                    if row is not None:
                        self._sent_ids.add(int(row[0]))
                connection.execute(
                    f"DELETE FROM {table.name} WHERE {table.at} < now() - make_interval(secs => %s)",  # noqa: S608
                    (self.window,),
                )
                rows = connection.execute(
                    f"SELECT id, {table.key} FROM {table.name}"  # noqa: S608 - fixed names
                    f" WHERE {table.at} >= now() - make_interval(secs => %s)",
                    (self.window,),
                ).fetchall()
        except BaseException:
            with self._lock:
                self._unsent[:0] = unsent  # sent next time
            raise
        live = {int(row_id) for row_id, _key in rows}
        elsewhere = Counter(key for row_id, key in rows if int(row_id) not in self._sent_ids)
        with self._lock:
            self._sent_ids &= live
            self._elsewhere = elsewhere


class SharedCountsRegistry:
    """The counters one process opened on one database, synced together (``sync``)."""

    shared = True

    def __init__(self, database: Database) -> None:
        self._database = database
        self._counters: dict[tuple[str, float], SharedWindowCounts] = {}
        self._lock = threading.Lock()

    def counter(self, kind: str, window: float) -> SharedWindowCounts:
        with self._lock:
            found = self._counters.get((kind, window))
            if found is None:
                found = self._counters[(kind, window)] = SharedWindowCounts(
                    self._database, TABLES[kind], window
                )
            return found

    def sync(self) -> None:
        with self._lock:
            counters = list(self._counters.values())
        for counter in counters:
            counter.sync()
