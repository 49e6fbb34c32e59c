"""Judge a stretch of a text by the share of its words that repeat a protected document.

``FingerprintIndex.overlaps`` (``gateway.policy.fingerprint``) reports, per document, the word spans of
a text that lie in verbatim runs of the document; :func:`best_passage` finds the largest stretch where
enough of the words are covered, so a copy with a few words changed, added or dropped is still seen.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from dataclasses import dataclass
from itertools import accumulate

from gateway.policy.fingerprint import SPAN_WORDS
from gateway.policy.model import ContentOverlap


@dataclass(frozen=True)
class Passage:
    """A stretch of a text that repeats a protected document: its word span and covered words."""

    start: int
    end: int
    covered: int  # words inside a verbatim run of the document (the rest were changed or added)

    @property
    def length(self) -> int:
        return self.end - self.start


def best_passage(overlap: ContentOverlap, window: int, share: float) -> Passage | None:
    """The largest passage of the text made of stretches of ``window`` words that qualify.

    A stretch of ``window`` consecutive words qualifies when at least ``share`` of its words are
    covered: they lie in a verbatim run of at least SPAN_WORDS words of the document.
    Overlapping qualifying stretches join into one passage, trimmed to its first and last covered
    word. None when no stretch qualifies. Linear in the number of spans (plus a log factor).
    """
    spans = tuple(span for span in overlap.spans if span[1] - span[0] >= SPAN_WORDS)
    total = overlap.words
    if not spans or total < window:
        return None
    need = math.ceil(share * window - 1e-9)
    starts = [start for start, _ in spans]
    ends = [end for _, end in spans]
    sums = [0, *accumulate(end - start for start, end in spans)]

    def covered(low: int, high: int) -> int:
        first = bisect_right(ends, low)  # the first span ending after ``low``
        last = bisect_left(starts, high)  # spans before this one start before ``high``
        if first >= last:
            return 0
        count = sums[last] - sums[first]
        count -= max(0, low - starts[first])
        count -= max(0, ends[last - 1] - high)
        return count

    # A window with the most covered words can always start where a span starts (moving it right
    # loses only uncovered words) or end where one ends; those windows also reach as far as any
    # qualifying window does, so their union is the union of all qualifying windows.
    candidates = sorted(
        {min(start, total - window) for start in starts} | {max(end - window, 0) for end in ends}
    )
    passages: list[tuple[int, int]] = []
    for low in candidates:
        if covered(low, low + window) >= need:
            if passages and low <= passages[-1][1]:
                passages[-1] = (passages[-1][0], low + window)
            else:
                passages.append((low, low + window))
    best: Passage | None = None
    for low, high in passages:
        first = bisect_right(ends, low)
        last = bisect_left(starts, high) - 1
        trimmed = Passage(max(low, starts[first]), min(high, ends[last]), covered(low, high))
        if best is None or trimmed.covered > best.covered:
            best = trimmed
    return best
