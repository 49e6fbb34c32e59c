"""Screening time grows linearly with the input: doubling a hostile message at most ~doubles the work.

One message used to stall every member: a run of empty lines made the quote splitter quadratic
(16,000 lines took 10 s). Each case here builds a message from one repeated piece (blank lines,
quote markers, tags, headers, encoded-words, recipients, parts...) at a size n and 2n and compares
two costs of screening it (parse, evaluate under the shipped policy, rewrite):

* the number of Python function calls (``sys.setprofile``): deterministic, must grow at most 2.2x;
* the thread's CPU time, best of three: this is the only measure that sees inside C code such as the
  regular expression engine, where catastrophic backtracking hides. It is a ratio of two runs of the
  same code seconds apart, never a threshold in seconds; a quadratic cost shows as 4x, an exponential
  one as far more; the bound (2.6x, looked at up to three times before failing) sits clear of both the
  noise of a linear cost and the faults it catches.

A fresh word in each message keeps per-text caches from answering a repeated run.
"""

from __future__ import annotations

import gc
import itertools
import sys
import time
from collections.abc import Callable
from types import FrameType

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fuzz.harness import GROWTH_FAMILIES, screen

MAX_CALL_GROWTH = 2.2
MAX_CPU_GROWTH = 2.6
_nonces = itertools.count()


def _fresh() -> str:
    return f"w{next(_nonces)}x"


def _calls(raw: bytes) -> int:
    count = 0

    def profile(_frame: FrameType, event: str, _arg: object) -> None:
        nonlocal count
        if event in ("call", "c_call"):
            count += 1

    sys.setprofile(profile)
    try:
        screen(raw)
    finally:
        sys.setprofile(None)
    return count


def _cpu(build: Callable[[int, str], bytes], n: int) -> float:
    best = float("inf")
    for _ in range(3):
        raw = build(n, _fresh())
        gc.disable()
        started = time.thread_time()
        try:
            screen(raw)
        finally:
            best = min(best, time.thread_time() - started)
            gc.enable()
    return best


def assert_linear(build: Callable[[int, str], bytes], n: int) -> None:
    screen(build(max(1, n // 100), _fresh()))  # compiled patterns and caches warm
    small, large = _calls(build(n, _fresh())), _calls(build(2 * n, _fresh()))
    assert large <= MAX_CALL_GROWTH * small, f"calls grew {large / small:.2f}x ({small} -> {large})"
    ratios = []
    for _ in range(3):  # a second look before failing: one measurement can be disturbed
        ratios.append(_cpu(build, 2 * n) / max(_cpu(build, n), 1e-4))
        if ratios[-1] <= MAX_CPU_GROWTH:
            return
    pytest.fail(f"CPU time grew {min(ratios):.2f}x when the input doubled")


@pytest.mark.parametrize("family", sorted(GROWTH_FAMILIES))
def test_screening_cost_is_linear_in_each_hostile_shape(family: str) -> None:
    build, n = GROWTH_FAMILIES[family]
    assert_linear(build, n)


_PIECES = " \t\r\n>-_<@:=?\"'\\/*(){}0a"


def _run_of(piece: str) -> Callable[[int, str], bytes]:
    from tests.fuzz.harness import _body_run

    return _body_run(piece)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(piece=st.text(alphabet=_PIECES, min_size=1, max_size=6))
def test_a_run_of_any_piece_of_punctuation_costs_linear_time(piece: str) -> None:
    # Mail text can be any run of the characters patterns care about: quote marks, brackets,
    # colons, escapes, line breaks. About 60 KB of it, then twice that.
    assert_linear(_run_of(piece), max(1, 60_000 // len(piece)))
