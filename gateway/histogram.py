"""A latency histogram that lives in a statistics() snapshot: fixed buckets, counts and a sum.

Components keep one per thing they time and hand a frozen :class:`HistogramSnapshot` out with their
other statistics, so a histogram observed in a helper process (delivery) reaches ``/metrics`` the
same way a counter does, pickled with the snapshot. The metrics layer exports it as a Prometheus
histogram.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

# Seconds: from a fast local commit to a slow upstream, roughly 2.5x apart.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# Seconds a message waits in the queue: minutes to days.
AGE_BUCKETS = (1.0, 10.0, 60.0, 300.0, 900.0, 3600.0, 4 * 3600.0, 86400.0, 3 * 86400.0, 7 * 86400.0)


@dataclass(frozen=True)
class HistogramSnapshot:
    """Cumulative counts per upper bound (``+Inf`` last), the sum and the number of observations."""

    buckets: tuple[tuple[float, int], ...]
    total: float
    count: int


class Histogram:
    """Counts observations into fixed buckets; ``snapshot()`` for the metrics layer."""

    def __init__(self, bounds: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        if list(bounds) != sorted(set(bounds)) or not bounds:
            raise ValueError("bucket bounds must be distinct and increasing")
        self._bounds = bounds
        self._counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self._total = 0.0

    def observe(self, value: float) -> None:
        self._counts[bisect.bisect_left(self._bounds, value)] += 1
        self._total += value

    def snapshot(self) -> HistogramSnapshot:
        cumulative: list[tuple[float, int]] = []
        running = 0
        for bound, count in zip((*self._bounds, float("inf")), self._counts, strict=True):
            running += count
            cumulative.append((bound, running))
        return HistogramSnapshot(tuple(cumulative), self._total, running)


def snapshot_of(values: list[float], bounds: tuple[float, ...]) -> HistogramSnapshot:
    """A histogram of ``values`` made at once (for gauges-like distributions such as queue age)."""
    histogram = Histogram(bounds)
    for value in values:
        histogram.observe(value)
    return histogram.snapshot()
