"""CPU time and resident memory of a process and everything it started (Linux ``/proc``).

A target's CPU per message says what a relay costs independently of how busy the machine was: on a
machine whose cores are all in use, throughput ratios mostly tell who got the cores.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def tree_cpu_seconds(root: int) -> float:
    """User + system CPU seconds of ``root`` and its live descendants, plus what they reaped."""
    return tree_usage(root)[0]


def tree_usage(root: int) -> tuple[float, int]:
    """CPU seconds as :func:`tree_cpu_seconds`, and the resident bytes of the live tree (summed: pages
    shared between processes count once per process, as ``ps`` shows them)."""
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
    resident = 0
    for pid in tree:
        try:
            resident += int((Path("/proc") / str(pid) / "statm").read_text().split()[1]) * _PAGE
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
    return sum(times[pid] for pid in tree) / _TICKS, resident


class CpuSampler:
    """Samples ``tree_cpu_seconds(root)`` every ``interval`` seconds in a thread, so the CPU spent
    between two ``time.monotonic()`` times can be read afterwards (e.g. excluding the clients' logins)."""

    def __init__(self, root: int, interval: float = 0.05) -> None:
        self._root = root
        self._interval = interval
        self._samples: list[tuple[float, float]] = []
        self._resident: list[tuple[float, int]] = []
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
            self._sample()
            if self._stop.wait(self._interval):
                self._sample()
                return

    def _sample(self) -> None:
        when = time.monotonic()
        cpu, resident = tree_usage(self._root)
        self._samples.append((when, cpu))
        self._resident.append((when, resident))

    def between(self, start: float, end: float) -> float:
        """CPU seconds from the last sample at or before ``start`` to the first at or after ``end``."""
        before = [cpu for when, cpu in self._samples if when <= start]
        after = [cpu for when, cpu in self._samples if when >= end]
        first = before[-1] if before else self._samples[0][1]
        last = after[0] if after else self._samples[-1][1]
        return last - first

    def peak_resident(self, start: float, end: float) -> int:
        """The largest resident size of the tree sampled between ``start`` and ``end`` (bytes)."""
        inside = [resident for when, resident in self._resident if start <= when <= end]
        return max(inside or [resident for _, resident in self._resident[-1:]] or [0])
