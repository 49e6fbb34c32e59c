"""Crash points for fault tests: the process exits at once, as after kill -9, when delivery reaches one.

``crash_at: after-upstream-250`` (or ``CONDUCT_GATEWAY_CRASH_AT=after-upstream-250`` in the
environment) makes the process that delivers call ``os._exit`` the first time an upstream has
answered 250 to a message whose result is not yet recorded; ``after-upstream-250@3`` the third
time. Nothing is flushed or closed, as with kill -9, so a test can restart the gateway and count
what arrives. The setting is refused unless ``fault_injection`` is true as well
(``CONDUCT_GATEWAY_FAULT_INJECTION=true``): never set either in production.
"""

from __future__ import annotations

import os
import re
from typing import Final

POINTS: Final = ("after-upstream-250",)
PATTERN: Final = r"^(after-upstream-250)(@[1-9][0-9]{0,5})?$"
EXIT_STATUS: Final = 86
"""The exit status of a process that stopped at a crash point (tests tell it from a real crash)."""


class CrashPoints:
    """The one crash point a process honours (none when ``spec`` is None)."""

    def __init__(self, spec: str | None) -> None:
        self._point: str | None = None
        self._at = 1
        self._count = 0
        if spec is not None:
            match = re.fullmatch(PATTERN, spec)
            if match is None:
                raise ValueError(f"unknown crash point {spec!r}; known: {', '.join(POINTS)} (optionally @N)")
            self._point = match.group(1)
            self._at = int(match.group(2)[1:]) if match.group(2) else 1

    def reached(self, point: str) -> None:
        """Exit now if ``point`` is the armed one and this is the time to."""
        if point != self._point:
            return
        self._count += 1
        if self._count == self._at:
            os.write(2, f"event=crash_point point={point} count={self._count}\n".encode())
            os._exit(EXIT_STATUS)
