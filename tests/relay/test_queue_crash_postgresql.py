"""Crash safety of the PostgreSQL queue: kill -9 the committing gateway, and crash the server too;
every message whose commit returned (the 250) is there, whole, and each is delivered once."""

from __future__ import annotations

import asyncio
import collections
import textwrap

from gateway.state.postgresql.queue import PostgresQueue
from gateway.state.spool import QueueState
from gateway.testing import CaptureUpstream
from tests.postgresql import ScratchDatabase

from .conftest import delivery_settings, eventually, running, upstream_settings
from .test_spool_crash import child, killed, queue_id_of

COMMITTER = textwrap.dedent(
    """
    import asyncio, sys, time
    from gateway.state.postgresql.database import Database
    from gateway.state.postgresql.queue import PostgresQueue
    from gateway.state.spool import SpoolEnvelope
    from tests.relay.test_spool_crash import content_for

    async def main(dsn, password):
        queue = PostgresQueue(Database.connect(dsn, password=password).connection)
        sizes = [2_000, 30_000, 300_000]
        count = 0

        async def client(number):
            nonlocal count
            while True:
                queue_id = PostgresQueue.new_queue_id()
                count += 1
                content = content_for(queue_id, sizes[count % len(sizes)])
                envelope = SpoolEnvelope(
                    queue_id, "alice@example.org", ("bob@example.org",), "alice@example.org", time.time()
                )
                await queue.commit(envelope, content)
                sys.stdout.write(f"ACK {queue_id}\\n")
                sys.stdout.flush()

        await asyncio.gather(*(client(n) for n in range(8)))

    asyncio.run(main(sys.argv[1], sys.argv[2]))
    """
)


async def test_every_acknowledged_commit_survives_a_killed_gateway_and_a_crashed_server(
    pg_database: ScratchDatabase, upstream: CaptureUpstream
) -> None:
    process = await child(COMMITTER, pg_database.dsn, pg_database.password)
    assert process.stdout is not None
    acknowledged: list[str] = []
    async with asyncio.timeout(60):
        while len(acknowledged) < 60:
            line = await process.stdout.readline()
            assert line, "the committer ended early"
            acknowledged.append(line.decode().split()[1])
    # The server crashes (no checkpoint, no clean shutdown) while commits are in flight, then the
    # gateway is killed: what was acknowledged must be in the WAL.
    pg_database.cluster.stop("immediate")
    await killed(process)
    pg_database.cluster.start()

    with pg_database.connect() as database:
        queue = PostgresQueue(database.connection)
        stored = {entry.queue_id: entry for entry in queue.entries()}
        assert set(acknowledged) <= set(stored)  # nothing that got its 250 is lost
        for queue_id in stored:
            content = queue.load(queue_id).content  # its checksum holds: no torn row
            assert queue_id_of(content) == queue_id and content.endswith(f"end {queue_id}\r\n".encode())
        async with running(queue, delivery_settings(upstream_settings(upstream))):
            await eventually(lambda: not queue.pending_ids(QueueState.INCOMING), within=30)
        counts = collections.Counter(queue_id_of(m.content) for m in upstream.messages)
        assert set(counts) == set(stored) and set(counts.values()) == {1}
        assert queue.statistics().messages["done"] == len(stored)
