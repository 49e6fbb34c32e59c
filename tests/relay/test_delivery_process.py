"""Delivery from a process of its own: it delivers what the gateway commits, survives its own death,
never touches the gateway's half-written files, and stops when told."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from gateway.delivery import process as process_module
from gateway.delivery.model import DeliveryStatistics
from gateway.delivery.process import DeliveryProcess, wants_own_process
from gateway.errors import GatewayError, SpoolError
from gateway.framing import encode_frame, read_frame_async
from gateway.settings import DeliverySettings, GatewaySettings
from gateway.state.spool import QueueState, Spool

from .conftest import envelope, eventually, message


@pytest.fixture
def settings(tmp_path: Path) -> GatewaySettings:
    state = tmp_path / "state"
    return GatewaySettings(state_dir=state, delivery=DeliverySettings(maildir=state / "maildir"))


@pytest.fixture
def spool(settings: GatewaySettings) -> Spool:
    return Spool(settings.state_dir / "spool")


@contextlib.asynccontextmanager
async def delivering(process: DeliveryProcess) -> AsyncIterator[asyncio.Task[None]]:
    stop = asyncio.Event()
    running = asyncio.create_task(process.run(stop))
    try:
        await eventually(lambda: process.alive or running.done(), within=20)
        yield running
    finally:
        stop.set()
        await asyncio.wait_for(running, 30)


def delivered(settings: GatewaySettings) -> list[Path]:
    new = settings.state_dir / "maildir" / "new"
    return sorted(new.iterdir()) if new.is_dir() else []


@pytest.mark.parametrize(
    ("setting", "cpus", "expected"),
    [("auto", 1, False), ("auto", 2, False), ("auto", 3, True), (False, 8, False), (True, 1, True)],
)
def test_auto_uses_a_process_when_there_is_a_core_to_run_it(
    setting: bool | str, cpus: int, expected: bool
) -> None:
    assert wants_own_process(setting, cpus) is expected


async def test_what_the_gateway_commits_is_delivered_and_counted(
    settings: GatewaySettings, spool: Spool
) -> None:
    process = DeliveryProcess(settings, spool)
    async with delivering(process):
        sent = [envelope() for _ in range(3)]
        for number, entry in enumerate(sent):
            await spool.commit(entry, message(subject=f"number {number}"))
        await eventually(lambda: len(delivered(settings)) == 3, within=20)
        await eventually(lambda: process.statistics().outcomes_total["delivered"] == 3)
        assert all(spool.locate(entry.queue_id) is QueueState.DONE for entry in sent)
    assert not process.alive  # stopped with the gateway


async def test_the_delivery_process_shows_what_it_is_in_ps(settings: GatewaySettings, spool: Spool) -> None:
    process = DeliveryProcess(settings, spool)
    async with delivering(process):
        await eventually(lambda: process._process is not None and process._process.pid is not None)
        assert process._process is not None and process._process.pid is not None
        cmdline = Path(f"/proc/{process._process.pid}/cmdline")
        await eventually(lambda: cmdline.read_bytes().rstrip(b"\0 ") == b"conduct-gateway delivery")


async def test_a_delivery_process_that_dies_is_replaced_and_nothing_is_lost(
    settings: GatewaySettings, spool: Spool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("gateway.delivery.process.RESTART_DELAY", 0.1)
    process = DeliveryProcess(settings, spool)
    async with delivering(process):
        await spool.commit(envelope(), message(subject="before"))
        await eventually(lambda: len(delivered(settings)) == 1, within=20)
        await eventually(lambda: process.statistics().attempts_total == 1)
        first = process._process
        assert first is not None and first.pid is not None
        os.kill(first.pid, signal.SIGKILL)
        await eventually(lambda: not first.is_alive())
        await spool.commit(envelope(), message(subject="while it was down"))  # waits in the spool
        await eventually(lambda: len(delivered(settings)) == 2, within=20)
        assert process.restarts == 1
        # Totals survive the restart.
        await eventually(lambda: process.statistics().outcomes_total["delivered"] == 2)


async def test_the_gateways_half_written_files_are_never_cleaned_up_under_it(
    settings: GatewaySettings, spool: Spool
) -> None:
    # A file the gateway's own spool is writing (its token in the name) while delivery starts.
    spool.tmp_dir.mkdir(parents=True, exist_ok=True)
    writing = spool.tmp_dir / f"in-progress.{spool._token}.tmp"
    writing.write_bytes(b"half a message")
    leftover = spool.tmp_dir / "from-a-crashed-run.0123456789abcdef.tmp"
    leftover.write_bytes(b"left behind")
    process = DeliveryProcess(settings, spool)
    async with delivering(process):
        await spool.commit(envelope(), message())
        await eventually(lambda: len(delivered(settings)) == 1, within=20)
    assert writing.exists()
    assert not leftover.exists()


async def test_a_second_deliverer_on_the_same_spool_stops_with_a_clear_reason(
    settings: GatewaySettings, spool: Spool
) -> None:
    # Another gateway is delivering from this spool.
    with (
        spool.delivery_lock(),
        pytest.raises(GatewayError, match="another conduct-gateway process is delivering"),
    ):
        await DeliveryProcess(settings, spool).run(asyncio.Event())


class _OutageWorker:
    """A worker whose shared queue is unreachable for its first two runs, then runs until stopped."""

    runs = 0

    def __init__(self, *args: object, **kwargs: object) -> None:
        pass

    async def run(self, stop: asyncio.Event, *, recover: bool = True) -> None:
        type(self).runs += 1
        if type(self).runs <= 2:
            raise SpoolError("the PostgreSQL queue failed: cannot be reached (AdminShutdown)")
        await stop.wait()

    def statistics(self) -> DeliveryStatistics:
        return DeliveryStatistics.empty()


class _SharedQueue:
    shared = True


async def test_inside_the_delivery_process_a_shared_queue_outage_is_waited_out(
    settings: GatewaySettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The gateway takes a delivery process that says it cannot start for a reason to stop for: the
    # process itself must ride out the database being away, as the in-process worker does.
    monkeypatch.setattr(process_module, "DeliveryWorker", _OutageWorker)
    monkeypatch.setattr(
        process_module,
        "open_state",
        lambda _settings: SimpleNamespace(queue=SimpleNamespace(open=_SharedQueue)),
    )
    monkeypatch.setattr("gateway.delivery.restart.RESTART_DELAY", 0.01)
    ours, theirs = socket.socketpair()
    with ours:
        child = asyncio.create_task(process_module._deliver(theirs, settings))
        reader, writer = await asyncio.open_connection(sock=ours)
        await eventually(lambda: _OutageWorker.runs >= 3, within=20)
        assert not child.done()
        writer.write(encode_frame(process_module._Stop()))
        await asyncio.wait_for(child, 20)
        frames = []
        while (frame := await read_frame_async(reader)) is not None:
            frames.append(frame[1])
        writer.close()
    assert not [f for f in frames if isinstance(f, process_module._CannotStart)]
