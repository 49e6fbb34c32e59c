"""After the upstream's 250, a spool that cannot record the result never makes the message go again.

The defect: ``write_status`` failing with ENOSPC inside the settling step made the worker send the
message again about once a second until space returned (21 copies of one message in 20 s), logging
a traceback each time. The result now stays in memory and only the record is retried.
"""

from __future__ import annotations

import collections
import errno
import logging
import os
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from gateway.errors import SpoolError
from gateway.state.spool import QueueState, Spool
from gateway.testing import CaptureUpstream

from .conftest import delivery_settings, envelope, eventually, message, running, upstream_settings


class FullDisk:
    """Makes the spool's writes after a delivery (``write_status``, ``move``) fail with ``error``
    while ``full``."""

    def __init__(self, spool: Spool, monkeypatch: pytest.MonkeyPatch, error: int) -> None:
        self.error = error
        self.full = True
        self.failures = 0
        for name in ("write_status", "move"):
            monkeypatch.setattr(spool, name, self._failing(getattr(spool, name)))

    def _failing(self, original: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
        async def write(*args: Any) -> None:
            if self.full:
                self.failures += 1
                raise OSError(self.error, os.strerror(self.error))
            await original(*args)

        return write


@pytest.mark.parametrize("error", [errno.ENOSPC, errno.EDQUOT], ids=["ENOSPC", "EDQUOT"])
@pytest.mark.parametrize("partial", [False, True], ids=["delivered", "one-recipient-deferred"])
async def test_a_result_that_cannot_be_recorded_is_kept_and_the_message_never_sent_again(
    spool: Spool,
    upstream: CaptureUpstream,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    partial: bool,
    error: int,
) -> None:
    disk = FullDisk(spool, monkeypatch, error)
    recipients = ("bob@example.org", "carol@example.org") if partial else ("bob@example.org",)
    if partial:
        upstream.reply_to_rcpt("451 4.2.1 try later", recipient="carol@example.org", times=1)
    first, second = envelope(rcpt_tos=recipients), envelope()
    await spool.commit(first, message(subject="first"))
    settings = delivery_settings(upstream_settings(upstream))
    with caplog.at_level(logging.INFO, logger="gateway.delivery.worker"):
        async with running(spool, settings) as worker:
            await upstream.wait_for(1)
            # Record tries keep failing (with backoff); the old code sent a copy for each one.
            await eventually(lambda: disk.failures >= 6)
            await spool.commit(second, message(subject="second"))
            await eventually(lambda: disk.failures >= 8)
            assert upstream.received == 1  # and the second waits: its result could not be kept either
            # Every failed record is counted: the count follows the failure a moment later, once the
            # error is back on the event loop.
            await eventually(lambda: worker.statistics().disk_full_total == disk.failures)
            assert worker.statistics().unrecorded == 1
            disk.full = False
            await eventually(lambda: spool.locate(first.queue_id) is QueueState.DONE)
            await eventually(lambda: spool.locate(second.queue_id) is QueueState.DONE)
            assert worker.statistics().unrecorded == 0
    copies = [(m.content, r) for m in upstream.messages for r in m.rcpt_tos]
    assert sorted(copies) == sorted(
        [*((message(subject="first"), r) for r in recipients), (message(subject="second"), "bob@example.org")]
    )
    events = [r.getMessage() for r in caplog.records]
    assert sum("event=spool_disk_full " in e for e in events) == 1
    assert sum("event=spool_disk_full_cleared" in e for e in events) == 1
    assert not [r for r in caplog.records if r.exc_info]  # no traceback per try
    assert worker.statistics().errors_total == 0


async def test_a_record_that_fails_for_another_reason_is_retried_alone_and_logged_each_time(
    spool: Spool, upstream: CaptureUpstream, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    disk = FullDisk(spool, monkeypatch, errno.EIO)
    sent = envelope()
    await spool.commit(sent, message())
    with caplog.at_level(logging.INFO, logger="gateway.delivery.worker"):
        async with running(spool, delivery_settings(upstream_settings(upstream))) as worker:
            await upstream.wait_for(1)
            await eventually(lambda: disk.failures >= 3)
            disk.full = False
            await eventually(lambda: spool.locate(sent.queue_id) is QueueState.DONE)
    assert upstream.received == 1
    assert worker.statistics().errors_total == disk.failures
    assert sum("event=delivery_record_failed" in r.getMessage() for r in caplog.records) == disk.failures


class StoreAway:
    """A shared store that went away: every read, lookup and write of the spool fails while ``away``."""

    def __init__(self, spool: Spool, monkeypatch: pytest.MonkeyPatch) -> None:
        self.away = False
        self.after_next_read = False  # goes away once a message has been read for its attempt
        self.failures: collections.Counter[str] = collections.Counter()
        for name in ("write_status", "move", "read"):
            monkeypatch.setattr(spool, name, self._failing_async(name, getattr(spool, name)))
        for name in ("locate", "pending_ids"):
            monkeypatch.setattr(spool, name, self._failing(name, getattr(spool, name)))

    def _failing_async(
        self, name: str, original: Callable[..., Awaitable[Any]]
    ) -> Callable[..., Awaitable[Any]]:
        async def call(*args: Any) -> Any:
            self._check(name)
            result = await original(*args)
            if name == "read" and self.after_next_read:
                self.away, self.after_next_read = True, False
            return result

        return call

    def _failing(self, name: str, original: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any) -> Any:
            self._check(name)
            return original(*args)

        return call

    def _check(self, name: str) -> None:
        if self.away:
            self.failures[name] += 1
            raise SpoolError("the PostgreSQL queue failed: cannot be reached (AdminShutdown)")


async def test_a_result_owed_while_the_store_is_away_is_recorded_when_it_returns_never_sent_again(
    spool: Spool, upstream: CaptureUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The record fails, then the retry's read and the lookup that would reschedule it fail too.

    The defect (seen with PostgreSQL stopped for 30 s): the retry was dropped, and the scans skip a
    message whose result is owed, so it stayed claimed and pending for ever after the store returned.
    """
    store = StoreAway(spool, monkeypatch)
    sent = envelope()
    settings = delivery_settings(upstream_settings(upstream))
    async with running(spool, settings):
        store.after_next_read = True  # so the upstream's 250 cannot be recorded
        await spool.commit(sent, message())
        await upstream.wait_for(1)
        await eventually(lambda: store.failures["read"] >= 1 and store.failures["locate"] >= 1)
        store.away = False
        await eventually(lambda: spool.locate(sent.queue_id) is QueueState.DONE)
    assert upstream.received == 1
