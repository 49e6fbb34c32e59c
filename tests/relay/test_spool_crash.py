"""Crash safety: kill -9 at any point loses no committed message and duplicates within the stated bound.

Each test runs the spool or the delivery worker in a child process, kills it with SIGKILL, then
restarts delivery (a new Spool and DeliveryWorker on the same folder) and counts what the capture
upstream received.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import signal
import sys
import textwrap
from pathlib import Path

from gateway.delivery.worker import IN_FLIGHT_PER_CONNECTION
from gateway.state.spool import QueueState, Spool
from gateway.testing import CaptureUpstream

from .conftest import delivery_settings, envelope, eventually, running, upstream_settings

REPO = Path(__file__).resolve().parents[2]


def content_for(queue_id: str, size: int) -> bytes:
    """A message whose every byte follows from its queue id, so a torn copy cannot pass for whole."""
    head = f"From: alice@example.org\r\nTo: bob@example.org\r\nSubject: {queue_id}\r\n\r\n".encode()
    line = hashlib.sha256(queue_id.encode()).hexdigest().encode() + b"\r\n"
    body = line * max(1, size // len(line))
    return head + body + b"end " + queue_id.encode() + b"\r\n"


def queue_id_of(content: bytes) -> str:
    return content.split(b"Subject: ", 1)[1].split(b"\r\n", 1)[0].decode()


COMMITTER = textwrap.dedent(
    """
    import asyncio, sys, time
    from pathlib import Path
    from gateway.state.spool import Spool, SpoolEnvelope
    from tests.relay.test_spool_crash import content_for

    async def main(root):
        spool = Spool(Path(root))
        sizes = [2_000, 8_000, 30_000, 300_000]  # 300 KB takes the large-message path
        count = 0

        async def client(number):
            nonlocal count
            while True:
                queue_id = Spool.new_queue_id()
                count += 1
                content = content_for(queue_id, sizes[count % len(sizes)])
                envelope = SpoolEnvelope(
                    queue_id, "alice@example.org", ("bob@example.org",), "alice@example.org", time.time()
                )
                await spool.commit(envelope, content)
                sys.stdout.write(f"ACK {queue_id}\\n")
                sys.stdout.flush()

        await asyncio.gather(*(client(n) for n in range(8)))

    asyncio.run(main(sys.argv[1]))
    """
)

DELIVERER = textwrap.dedent(
    """
    import asyncio, os, signal, sys
    from pathlib import Path
    from gateway.delivery.worker import DeliveryWorker
    from gateway.settings import DeliverySettings, UpstreamSettings
    from gateway.state.spool import QueueState, Spool

    root, hook = sys.argv[1], sys.argv[3]
    port, nth, concurrency = int(sys.argv[2]), int(sys.argv[4]), int(sys.argv[5])
    calls = 0

    def crash_on_nth(original, counts):
        async def wrapper(self, *args, **kwargs):
            global calls
            if counts(*args):
                calls += 1
                if calls == nth:
                    # The upstream has said 250; the spool has not recorded it yet.
                    os.kill(os.getpid(), signal.SIGKILL)
            return await original(self, *args, **kwargs)
        return wrapper

    if hook != "none":
        # One message at a time, so exactly one is in the window when the crash comes.
        import gateway.delivery.worker
        gateway.delivery.worker.IN_FLIGHT_PER_CONNECTION = 1

    if hook == "move-to-done":
        Spool.move = crash_on_nth(Spool.move, lambda queue_id, source, target: target is QueueState.DONE)
    elif hook == "write-status":
        Spool.write_status = crash_on_nth(Spool.write_status, lambda queue_id, status: True)

    settings = DeliverySettings(
        upstream=UpstreamSettings(host="127.0.0.1", port=port, security="none", timeout=5),
        concurrency=concurrency, initial_backoff=0.05, max_backoff=0.2, poll_interval=0.02,
    )
    print("READY", flush=True)
    asyncio.run(DeliveryWorker(Spool(Path(root)), settings, hostname="crash.test").run(asyncio.Event()))
    """
)


async def child(script: str, *args: object) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        script,
        *(str(a) for a in args),
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
    )


async def killed(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        process.send_signal(signal.SIGKILL)
    async with asyncio.timeout(10):
        await process.wait()
    assert process.returncode == -signal.SIGKILL


async def deliver_everything(spool_root: Path, upstream: CaptureUpstream) -> Spool:
    spool = Spool(spool_root)
    async with running(spool, delivery_settings(upstream_settings(upstream))):
        await eventually(
            lambda: not spool.pending_ids(QueueState.INCOMING) and not spool.pending_ids(QueueState.DEFERRED),
            within=20,
        )
    return spool


async def test_kill_during_commits_loses_no_acknowledged_message_and_delivers_no_torn_one(
    tmp_path: Path, upstream: CaptureUpstream
) -> None:
    root = tmp_path / "spool"
    process = await child(COMMITTER, root)
    acknowledged: list[str] = []
    assert process.stdout is not None
    async with asyncio.timeout(30):
        while len(acknowledged) < 60:
            line = await process.stdout.readline()
            assert line.startswith(b"ACK "), line
            acknowledged.append(line.split()[1].decode())
    await killed(process)  # mid-flight: eight clients were committing at that moment

    spool = await deliver_everything(root, upstream)
    delivered = collections.Counter(queue_id_of(m.content) for m in upstream.messages)
    assert set(acknowledged) <= set(delivered), "a message that got its commit back was lost"
    assert max(delivered.values()) == 1
    sizes = [2_000, 8_000, 30_000, 300_000]
    for captured in upstream.messages:
        queue_id = queue_id_of(captured.content)
        assert any(captured.content == content_for(queue_id, size) for size in sizes), (
            "torn message delivered"
        )
    assert list(spool.tmp_dir.iterdir()) == [], "half-written files must be cleaned at restart"


async def test_a_torn_tmp_file_is_never_delivered(tmp_path: Path, upstream: CaptureUpstream) -> None:
    spool = Spool(tmp_path / "spool")
    whole = envelope()
    await spool.commit(whole, content_for(whole.queue_id, 1000))
    torn_id = Spool.new_queue_id()
    (spool.tmp_dir / f"{torn_id}.0123456789ab.tmp").write_bytes(content_for(torn_id, 5000)[:700])
    await deliver_everything(spool.root, upstream)
    assert [queue_id_of(m.content) for m in upstream.messages] == [whole.queue_id]


async def prefill(root: Path, count: int, rcpt_tos: tuple[str, ...] = ("bob@example.org",)) -> list[str]:
    spool = Spool(root)
    ids = []
    for _ in range(count):
        sent = envelope(rcpt_tos=rcpt_tos)
        await spool.commit(sent, content_for(sent.queue_id, 3000))
        ids.append(sent.queue_id)
    return ids


async def test_crash_between_upstream_250_and_spool_update_sends_at_most_one_extra_copy(
    tmp_path: Path, upstream: CaptureUpstream
) -> None:
    root = tmp_path / "spool"
    ids = await prefill(root, 10)
    process = await child(DELIVERER, root, upstream.port, "move-to-done", 4, 1)
    async with asyncio.timeout(30):
        await process.wait()
    await killed(process)
    assert upstream.received == 4  # the fourth was accepted upstream, then the worker died

    await deliver_everything(root, upstream)
    copies = collections.Counter(queue_id_of(m.content) for m in upstream.messages)
    assert set(copies) == set(ids)
    assert sorted(copies.values()) == [1] * 9 + [2]  # exactly the one in the window came twice


async def test_crash_before_recording_a_partial_delivery_repeats_only_that_recipient(
    tmp_path: Path, upstream: CaptureUpstream
) -> None:
    upstream.reply_to_rcpt("451 4.2.1 busy", recipient="later@example.org", times=1)
    root = tmp_path / "spool"
    [queue_id] = await prefill(root, 1, ("ok@example.org", "later@example.org"))
    process = await child(DELIVERER, root, upstream.port, "write-status", 1, 1)
    async with asyncio.timeout(30):
        await process.wait()
    await killed(process)
    assert [m.rcpt_tos for m in upstream.messages] == [("ok@example.org",)]

    await deliver_everything(root, upstream)
    received = collections.Counter(r for m in upstream.messages for r in m.rcpt_tos)
    assert received == {"ok@example.org": 2, "later@example.org": 1}
    assert all(queue_id_of(m.content) == queue_id for m in upstream.messages)


async def test_kill_at_a_random_moment_of_busy_delivery_stays_within_the_bound(
    tmp_path: Path, upstream: CaptureUpstream
) -> None:
    root = tmp_path / "spool"
    ids = await prefill(root, 60)
    upstream.data_delay = 0.005
    process = await child(DELIVERER, root, upstream.port, "none", 0, 4)
    await eventually(lambda: upstream.received >= 20, within=30)
    await killed(process)

    await deliver_everything(root, upstream)
    copies = collections.Counter(queue_id_of(m.content) for m in upstream.messages)
    assert set(copies) == set(ids)
    # Only messages in flight when it died can have been in the window, and each came at most twice.
    assert max(copies.values()) <= 2
    assert sum(copies.values()) - len(ids) <= 4 * IN_FLIGHT_PER_CONNECTION
