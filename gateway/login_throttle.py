"""Failed logins counted per client address: over the limit, AUTH is refused for a while (memory only)."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable


class LoginThrottle:
    """Counts failed logins per client address in a sliding window; over the limit, AUTH is refused."""

    # Forget idle addresses once this many are tracked, so a scan from many addresses cannot grow memory.
    _PRUNE_ABOVE = 10_000

    def __init__(self, max_failures: int, window: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_failures = max_failures
        self.window = window
        self._clock = clock
        self._failures: dict[str, deque[float]] = {}

    def blocked(self, client: str) -> bool:
        """True while ``client`` has ``max_failures`` failures within the window."""
        recent = self._recent(client)
        return recent is not None and len(recent) >= self.max_failures

    def failures(self, client: str) -> int:
        """``client``'s failures within the window."""
        recent = self._recent(client)
        return len(recent) if recent is not None else 0

    def record_failure(self, client: str) -> None:
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
