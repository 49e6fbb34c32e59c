"""A slice of CPU time for work on the event loop's thread: stopped when the slice is used up.

A small message evaluated where it arrived saves the round trip to a policy worker process (two
process wake-ups and a pickle each way), which is most of what one sender waits for beyond the
evaluation itself. But nothing may hold the event loop for long: every other session waits on it.
So the work gets a slice of CPU time, counted by the process's profiling timer (``ITIMER_PROF``,
the same timer the workers use for the evaluation budget); when the slice runs out, SIGPROF
interrupts the work between two bytecodes, it is dropped, and the caller sends the message to a
worker, which has the whole budget. The timer counts the CPU of every thread of the process, so a
busy I/O thread can only make the slice shorter, never longer.

Only on the main thread (Python runs signal handlers there) and only while nobody else claimed
SIGPROF (a profiler, say): ``available`` says whether a slice can be used at all.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import TypeVar

Result = TypeVar("Result")


class SliceUsedUp(BaseException):
    """Raised inside the work by the timer. A BaseException, so that no ``except Exception`` in the
    parser or the engine (which turn a fault into a refusal or a rule error) can swallow it."""


# One handler for the process, whichever slice is running (only the main thread runs slices, one at a time).
_running = False  # a signal that arrives once the work has ended is ignored


def _out_of_time(_signum: int, _frame: FrameType | None) -> None:
    if _running:
        raise SliceUsedUp


def _installed() -> bool:
    """Whether our SIGPROF handler is in place, putting it there if nobody else claimed the signal."""
    current = signal.getsignal(signal.SIGPROF)
    if current is _out_of_time:
        return True
    if current not in (signal.SIG_DFL, None):
        return False  # somebody else's timer (a profiler): never take it over
    signal.signal(signal.SIGPROF, _out_of_time)
    # Other threads' system calls interrupted by SIGPROF are restarted, not failed with EINTR.
    signal.siginterrupt(signal.SIGPROF, False)
    return True


class CpuSlice:
    """Runs work for at most ``seconds`` of the process's CPU time."""

    def __init__(self, seconds: float) -> None:
        if seconds <= 0:
            raise ValueError("a CPU slice needs a positive length")
        self.seconds = seconds
        self.used_up = 0  # how many times work was stopped

    @staticmethod
    def available() -> bool:
        """Whether ``run`` can stop work here: on the main thread, with SIGPROF ours or unclaimed."""
        if not hasattr(signal, "setitimer") or threading.current_thread() is not threading.main_thread():
            return False
        return _installed()

    def run(self, work: Callable[[], Result]) -> Result | None:
        """``work()``, or None when it used up the slice (its effects so far are the caller's to
        discard). Call ``available`` first."""
        global _running
        if _running:
            raise RuntimeError("a CPU slice is already running")
        try:
            try:
                _running = True
                signal.setitimer(signal.ITIMER_PROF, self.seconds)
                result = work()
            finally:
                _running = False
                signal.setitimer(signal.ITIMER_PROF, 0)
        except SliceUsedUp:  # also when the timer fired just as the work ended: it was at the limit
            self.used_up += 1
            return None
        return result
