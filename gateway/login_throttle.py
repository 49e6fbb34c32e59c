"""Failed logins counted per client address: over the limit, AUTH is refused for a while.

Counted in memory; with ``shared`` (several gateways on PostgreSQL), the other gateways' failures
within the window are added, as of their last sync (``SharedCounts``: the counting never waits on
the network, a thread syncs every few seconds).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Protocol


class SharedCounts(Protocol):
    """Events per key counted by every gateway within a window (failed logins, notices sent).

    Both calls answer from memory: ``note`` queues this gateway's event for the next sync,
    ``elsewhere`` is the other gateways' events within the window as of the last sync.
    """

    def note(self, key: str) -> None: ...

    def elsewhere(self, key: str) -> int: ...


class LoginThrottle:
    """Counts failed logins per client address in a sliding window; over the limit, AUTH is refused."""

    # Forget idle addresses once this many are tracked, so a scan from many addresses cannot grow memory.
    _PRUNE_ABOVE = 10_000

    def __init__(
        self,
        max_failures: int,
        window: float,
        clock: Callable[[], float] = time.monotonic,
        shared: SharedCounts | None = None,
    ) -> None:
        self.max_failures = max_failures
        self.window = window
        self._clock = clock
        self._failures: dict[str, deque[float]] = {}
        self._shared = shared

    def blocked(self, client: str) -> bool:
        """True while ``client`` has ``max_failures`` failures within the window (on every gateway)."""
        elsewhere = self._shared.elsewhere(client) if self._shared is not None else 0
        return self.failures(client) + elsewhere >= self.max_failures

    def failures(self, client: str) -> int:
        """``client``'s failures within the window."""
        recent = self._recent(client)
        return len(recent) if recent is not None else 0

    def record_failure(self, client: str) -> None:
        if self._shared is not None:
            self._shared.note(client)
        recent = self._recent(client)
        if recent is None:
            if len(self._failures) >= self._PRUNE_ABOVE:
                self._prune()
            recent = self._failures[client] = deque(maxlen=self.max_failures)
        recent.append(self._clock())

    def _recent(self, client: str) -> deque[float] | None:
        recent = self._failures.get(client)
        if recent is None:
            return None
        horizon = self._clock() - self.window
        while recent and recent[0] <= horizon:
            recent.popleft()
        if not recent:
            del self._failures[client]
            return None
        return recent

    def _prune(self) -> None:
        for client in list(self._failures):
            self._recent(client)
