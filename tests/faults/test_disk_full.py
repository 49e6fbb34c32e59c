"""A real full disk during delivery: a small tmpfs whose space, or whose inodes, run out mid-delivery.

Each message goes to two recipients; the upstream takes one and defers the other the first time,
so the result must be written to ``status/`` after the upstream's 250, on a disk that has no room.
The defect was a duplicate storm (the message sent again about once a second until space returned).
Now: nothing is sent twice, nothing is lost, and delivery finishes when space returns. The tmpfs needs
root; without it these tests are skipped with the reason (never silently).
"""

from __future__ import annotations

import errno
import logging
import os
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.fake_upstream import FakeUpstream
from gateway.state.spool import QueueState, Spool, SpoolEnvelope

from .conftest import SENDER, delivery_settings, eventually, message_with, running, settled, tmpfs

RECIPIENTS = ("bob@example.net", "carol@example.net")
MESSAGES = 6


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    with tmpfs(tmp_path / "disk", size="2m", inodes=400) as mounted:
        yield mounted


def fill_space(folder: Path) -> Path:
    """Write zeros until the filesystem has no block left; return the file to delete."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (65536, 1):
            while True:
                try:
                    os.write(fd, b"\0" * size)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC
                    break
    finally:
        os.close(fd)
    return filler


def fill_inodes(folder: Path) -> Path:
    """Create empty files until the filesystem has no inode left; return their folder."""
    fillers = folder / "fillers"
    fillers.mkdir()
    for number in range(100_000):
        try:
            (fillers / str(number)).touch()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
            return fillers
    raise AssertionError("the inodes never ran out")


def free(filler: Path) -> None:
    if filler.is_dir():
        for path in filler.iterdir():
            path.unlink()
        filler.rmdir()
    else:
        filler.unlink()


@pytest.mark.parametrize("exhaust", [fill_space, fill_inodes], ids=["space", "inodes"])
async def test_a_full_disk_after_the_upstreams_250_sends_nothing_twice_and_loses_nothing(
    disk: Path, exhaust: object, caplog: pytest.LogCaptureFixture
) -> None:
    spool = Spool(disk / "spool")
    tokens = [f"disk-{n}-{Spool.new_queue_id()}" for n in range(MESSAGES)]
    for token in tokens:
        envelope = SpoolEnvelope(Spool.new_queue_id(), SENDER, RECIPIENTS, SENDER, time.time())
        await spool.commit(envelope, message_with(token))
    with spool.delivery_lock():
        pass  # the lock file exists before the disk fills (taking it then needs no new inode)
    async with FakeUpstream(pipelining=True) as fake:
        fake.on("rcpt", reply=b"451 4.2.1 mailbox busy, try later\r\n", match=b"carol@", times=MESSAGES)
        filler = exhaust(disk)  # type: ignore[operator]
        with caplog.at_level(logging.INFO, logger="gateway.delivery.worker"):
            async with running(spool, delivery_settings(fake)) as worker:
                await eventually(lambda: worker.statistics().disk_full_total >= 5)
                sent_while_full = Counter((m.content, r) for m in fake.accepted for r in m.rcpt_tos)
                assert sent_while_full and set(sent_while_full.values()) == {1}
                assert worker.statistics().unrecorded >= 1
                free(filler)
                await eventually(lambda: settled(spool), within=20)
                assert worker.statistics().unrecorded == 0
    copies = Counter(
        (token, r)
        for m in fake.accepted
        for r in m.rcpt_tos
        for token in tokens
        if token.encode() in m.content
    )
    assert copies == Counter({(token, r): 1 for token in tokens for r in RECIPIENTS})
    assert {spool.locate(e.queue_id) for e in spool.entries()} == {QueueState.DONE}
    events = [r.getMessage() for r in caplog.records]
    assert sum("event=spool_disk_full " in e for e in events) == 1
    assert sum("event=spool_disk_full_cleared" in e for e in events) == 1
    assert not [r for r in caplog.records if r.exc_info]
    assert not list((disk / "spool").rglob("*.tmp")), os.listdir(disk / "spool")
