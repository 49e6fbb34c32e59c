"""A CPU slice stops work on the main thread when its CPU time is used up, and only then."""

from __future__ import annotations

import os
import re
import signal
import threading
from collections.abc import Iterator

import pytest

from gateway.decision.cpu_slice import CpuSlice

# Work that would take minutes: finishing it means the slice did not stop it (the test then fails
# on its result, or on pytest's timeout, instead of passing).
ENDLESS = 10**10


@pytest.fixture(autouse=True)
def default_sigprof() -> Iterator[None]:
    """Every test starts and ends with nobody's SIGPROF handler (as a fresh gateway process does)."""
    signal.signal(signal.SIGPROF, signal.SIG_DFL)
    yield
    signal.setitimer(signal.ITIMER_PROF, 0)
    signal.signal(signal.SIGPROF, signal.SIG_DFL)


def spin() -> int:
    total = 0
    for number in range(ENDLESS):
        total += number
    return total


def test_work_that_ends_within_the_slice_returns_its_result() -> None:
    cpu_slice = CpuSlice(5.0)
    assert cpu_slice.available()
    assert cpu_slice.run(lambda: sum(range(1000))) == 499500
    assert cpu_slice.used_up == 0


@pytest.mark.timeout(60)
def test_endless_python_work_is_stopped_when_the_slice_is_used_up() -> None:
    cpu_slice = CpuSlice(0.05)
    assert cpu_slice.available()
    assert cpu_slice.run(spin) is None
    assert cpu_slice.used_up == 1
    # The slice can be used again, and a later signal finds nothing running.
    assert cpu_slice.run(lambda: "next") == "next"
    os.kill(os.getpid(), signal.SIGPROF)  # a late timer: ignored, nothing raised here
    assert cpu_slice.used_up == 1


@pytest.mark.timeout(60)
def test_a_regular_expression_that_backtracks_for_ever_is_stopped() -> None:
    cpu_slice = CpuSlice(0.05)
    assert cpu_slice.available()
    catastrophic = re.compile(r"(a+)+$")
    assert cpu_slice.run(lambda: catastrophic.match("a" * 64 + "b")) is None
    assert cpu_slice.used_up == 1


@pytest.mark.timeout(60)
def test_an_except_exception_inside_the_work_cannot_swallow_the_stop() -> None:
    def careless() -> str:
        try:
            spin()
        except Exception:
            return "swallowed"
        return "finished"

    cpu_slice = CpuSlice(0.05)
    assert cpu_slice.available()
    assert cpu_slice.run(careless) is None


def test_an_exception_of_the_work_is_the_callers() -> None:
    def failing() -> None:
        raise KeyError("a fault in the work")

    cpu_slice = CpuSlice(1.0)
    assert cpu_slice.available()
    with pytest.raises(KeyError):
        cpu_slice.run(failing)
    assert cpu_slice.used_up == 0
    assert signal.getitimer(signal.ITIMER_PROF) == (0.0, 0.0)  # disarmed all the same


def test_no_slice_off_the_main_thread() -> None:
    answers: list[bool] = []
    thread = threading.Thread(target=lambda: answers.append(CpuSlice(1.0).available()))
    thread.start()
    thread.join()
    assert answers == [False]


def test_a_sigprof_handler_someone_else_installed_is_never_taken_over() -> None:
    def profiler(_signum: int, _frame: object) -> None:
        pass

    signal.signal(signal.SIGPROF, profiler)
    assert not CpuSlice(1.0).available()
    assert signal.getsignal(signal.SIGPROF) is profiler


def test_slices_share_one_handler() -> None:
    assert CpuSlice(1.0).available()
    assert CpuSlice(2.0).available()  # a second screener in the same process, say
