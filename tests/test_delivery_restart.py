"""A shared queue that cannot be reached stops the delivery worker, never the gateway: it restarts."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from gateway.app import Gateway
from gateway.errors import CorruptSpoolEntry, SpoolError, StateUnavailable
from gateway.settings import GatewaySettings


class FlakyWorker:
    """Fails like a worker whose database went away, ``failures`` times, then runs until stopped."""

    def __init__(self, failures: list[BaseException]) -> None:
        self.failures = failures
        self.runs = 0

    async def run(self, stop: asyncio.Event) -> None:
        self.runs += 1
        if self.failures:
            raise self.failures.pop(0)
        await stop.wait()


async def deliver(tmp_path: Path, worker: FlakyWorker, *, shared: bool) -> None:
    gateway = Gateway(GatewaySettings(state_dir=tmp_path / "state"))
    stop = asyncio.Event()
    task = asyncio.create_task(gateway._deliver(worker, stop, shared=shared))  # type: ignore[arg-type]
    async with asyncio.timeout(30):
        while worker.runs < 3 and not task.done():
            await asyncio.sleep(0.01)
        stop.set()
        await task


@pytest.mark.parametrize(
    "failure",
    [
        pytest.param(SpoolError("the PostgreSQL queue failed: cannot be reached"), id="queue"),
        pytest.param(ExceptionGroup("worker", [StateUnavailable("unreachable")]), id="group"),
    ],
)
async def test_a_shared_queue_outage_restarts_the_worker(
    tmp_path: Path, failure: BaseException, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("gateway.delivery.restart.RESTART_DELAY", 0.01)
    worker = FlakyWorker([failure, failure])
    await deliver(tmp_path, worker, shared=True)
    assert worker.runs == 3


@pytest.mark.parametrize(
    ("failure", "shared"),
    [
        pytest.param(SpoolError("another process is delivering"), False, id="files-queue"),
        pytest.param(CorruptSpoolEntry("unreadable"), True, id="corrupt-entry"),
        pytest.param(ExceptionGroup("worker", [RuntimeError("a bug")]), True, id="a-bug"),
    ],
)
async def test_anything_else_still_stops_the_gateway(
    tmp_path: Path, failure: BaseException, shared: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("gateway.delivery.restart.RESTART_DELAY", 0.01)
    worker = FlakyWorker([failure])
    with pytest.raises(type(failure)):
        await deliver(tmp_path, worker, shared=shared)
    assert worker.runs == 1
