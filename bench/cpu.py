"""CPU time of a process and everything it started (Linux ``/proc``), for per-message CPU figures.

A target's CPU per message says what a relay costs independently of how busy the machine was: on a
machine whose cores are all in use, throughput ratios mostly tell who got the cores.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(root: int) -> float:
    """User + system CPU seconds of ``root`` and its live descendants, plus what they reaped."""
    parents: dict[int, int] = {}
    times: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        pid = int(entry.name)
        parents[pid] = int(fields[1])
        # utime, stime, and cutime, cstime: the children this process has waited for.
        times[pid] = sum(int(value) for value in fields[11:15])
    tree = {root} if root in times else set()
    grew = True
    while grew:
        found = {pid for pid, parent in parents.items() if parent in tree and pid not in tree}
        tree |= found
        grew = bool(found)
    return sum(times[pid] for pid in tree) / _TICKS


class CpuSampler:
    """Samples ``tree_cpu_seconds(root)`` every ``interval`` seconds in a thread, so the CPU spent
    between two ``time.monotonic()`` times can be read afterwards (e.g. excluding the clients' logins)."""

    def __init__(self, root: int, interval: float = 0.05) -> None:
        self._root = root
        self._interval = interval
        self._samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> CpuSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while True:
            self._samples.append((time.monotonic(), tree_cpu_seconds(self._root)))
            if self._stop.wait(self._interval):
                self._samples.append((time.monotonic(), tree_cpu_seconds(self._root)))
                return

    def between(self, start: float, end: float) -> float:
        """CPU seconds from the last sample at or before ``start`` to the first at or after ``end``."""
        before = [cpu for when, cpu in self._samples if when <= start]
        after = [cpu for when, cpu in self._samples if when >= end]
        first = before[-1] if before else self._samples[0][1]
        last = after[0] if after else self._samples[-1][1]
        return last - first
