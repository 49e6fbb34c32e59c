"""The failed-login throttle shared by every gateway: a client's failures count wherever they happen.

``blocked`` and ``record_failure`` are called by the SMTP session on the event loop, so they never
touch the network: they answer from this gateway's own ``LoginThrottle`` plus the other gateways'
failures as of the last ``sync``. ``sync`` (blocking: run it on a thread, every few seconds) sends
this gateway's new failures and fetches everyone's within the window, and deletes rows older than
it. A client spreading guesses over N gateways is held to the limit within one sync interval.

Not wired into the intake yet (``SubmissionService`` makes its own ``LoginThrottle``).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable

from gateway.login_throttle import LoginThrottle
from gateway.state.postgresql.database import Database


class SharedLoginThrottle:
    """``LoginThrottle``'s interface over the ``login_failures`` table (see the module docstring)."""

    def __init__(
        self,
        database: Database,
        max_failures: int,
        window: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_failures = max_failures
        self.window = window
        self._database = database
        self._local = LoginThrottle(max_failures, window, clock)
        self._lock = threading.Lock()
        self._unsent: list[str] = []
        self._elsewhere: Counter[str] = Counter()  # failures in the window, as of the last sync
        self._sent_ids: set[int] = set()  # our own rows, not to be counted twice

    def blocked(self, client: str) -> bool:
        if self._local.blocked(client):
            return True
        with self._lock:
            return self._elsewhere[client] + self._local.failures(client) >= self.max_failures

    def record_failure(self, client: str) -> None:
        self._local.record_failure(client)
        with self._lock:
            self._unsent.append(client)

    def sync(self) -> None:
        """Send this gateway's new failures, fetch every gateway's in the window (blocking)."""
        with self._lock:
            unsent, self._unsent = self._unsent, []
        try:
            with self._database.connection() as connection:
                for client in unsent:
                    row = connection.execute(
                        "INSERT INTO login_failures (client) VALUES (%s) RETURNING id", (client,)
                    ).fetchone()
                    if row is not None:
                        self._sent_ids.add(int(row[0]))
                connection.execute(
                    "DELETE FROM login_failures WHERE failed_at < now() - make_interval(secs => %s)",
                    (self.window,),
                )
                rows = connection.execute(
                    "SELECT id, client FROM login_failures"
                    " WHERE failed_at >= now() - make_interval(secs => %s)",
                    (self.window,),
                ).fetchall()
        except BaseException:
            with self._lock:
                self._unsent[:0] = unsent  # sent next time
            raise
        live = {int(row_id) for row_id, _client in rows}
        elsewhere = Counter(client for row_id, client in rows if int(row_id) not in self._sent_ids)
        with self._lock:
            self._sent_ids &= live
            self._elsewhere = elsewhere
