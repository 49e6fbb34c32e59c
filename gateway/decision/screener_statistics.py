"""What the policy screener counts for metrics: decisions by outcome, reloads, internal errors, time."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

from gateway.decision.policy_source import ReloadResult
from gateway.histogram import Histogram, HistogramSnapshot


@dataclass(frozen=True)
class ScreenerStatistics:
    """Snapshot for metrics: decisions by outcome, reloads, internal errors, the policy in force."""

    policy_version: str
    outcomes: Mapping[str, int] = field(default_factory=dict)
    internal_errors: int = 0
    reloads: int = 0
    reload_refusals: int = 0
    reload_pending_refused: int = 0  # 1 while the files on disk are refused and an older policy is in force
    registry_unreadable: int = 0  # 1 while the case registry on disk cannot be decrypted or read
    evaluation_seconds: HistogramSnapshot | None = None  # parse, rules and rewrite, per message


class ScreenerCounters:
    """The screener's counters; safe to update from the event loop and worker threads at once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._outcomes: Counter[str] = Counter()
        self._internal_errors = 0
        self._reloads = 0
        self._reload_refusals = 0
        self._evaluation_time = Histogram()

    def decided(self, outcome: str) -> None:
        with self._lock:
            self._outcomes[outcome] += 1

    def internal_error(self) -> None:
        with self._lock:
            self._internal_errors += 1

    def reload(self, result: ReloadResult) -> None:
        with self._lock:
            self._reloads += result is ReloadResult.RELOADED
            self._reload_refusals += result is ReloadResult.REFUSED

    def evaluated(self, seconds: float) -> None:
        with self._lock:
            self._evaluation_time.observe(seconds)

    def snapshot(
        self, policy_version: str, *, refused: bool, registry_unreadable: bool
    ) -> ScreenerStatistics:
        with self._lock:
            return ScreenerStatistics(
                policy_version=policy_version,
                outcomes=dict(self._outcomes),
                internal_errors=self._internal_errors,
                reloads=self._reloads,
                reload_refusals=self._reload_refusals,
                reload_pending_refused=int(refused),
                registry_unreadable=int(registry_unreadable),
                evaluation_seconds=self._evaluation_time.snapshot(),
            )
