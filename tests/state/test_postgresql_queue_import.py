"""A files queue and holds moved into PostgreSQL: every message, state, status, hold and token kept."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from gateway.review.tokens import new_token
from gateway.state.holds import HoldStore
from gateway.state.postgresql.database import Database
from gateway.state.postgresql.holds import PostgresHolds
from gateway.state.postgresql.queue import PostgresQueue
from gateway.state.postgresql.queue_import import copy_holds, copy_queue
from gateway.state.spool import DeliveryStatus, QueueState, RecipientStatus, Spool

from .test_holds import record
from .test_queue_contract import envelope, message


async def files_queue(root: Path) -> tuple[Spool, dict[str, QueueState]]:
    spool = Spool(root)
    states: dict[str, QueueState] = {}
    for state in (QueueState.INCOMING, QueueState.DEFERRED, QueueState.DONE, QueueState.BOUNCED):
        sent = envelope(("bob@example.net", "carol@example.net"))
        await spool.commit(sent, message(f"{state.value} \u2014 {sent.queue_id}"))
        if state is not QueueState.INCOMING:
            status = DeliveryStatus(
                (
                    RecipientStatus(
                        "bob@example.net", "delivered", "250 2.0.0 Ok", time.time(), "mx.example.net"
                    ),
                    RecipientStatus("carol@example.net", "deferred", "451 4.3.0 later", time.time()),
                ),
                attempts=2,
                next_attempt_at=time.time() + 600,
            )
            await spool.write_status(sent.queue_id, status)
            await spool.move(sent.queue_id, QueueState.INCOMING, state)
        states[sent.queue_id] = state
    (spool.folder(QueueState.CORRUPT) / "BROKEN1").write_bytes(b"junk")
    return spool, states


def test_every_message_moves_with_its_state_status_and_bytes_and_corrupt_ones_stay(
    tmp_path: Path, pg_db: Database
) -> None:
    spool, states = asyncio.run(files_queue(tmp_path / "spool"))
    with pg_db.connection() as connection:
        imported = copy_queue(connection, spool.root)
    assert (imported.messages, imported.left_unreadable) == (4, 1)
    queue = PostgresQueue(pg_db.connection)
    assert {e.queue_id: e.state for e in queue.entries()} == states
    for queue_id in states:
        before, after = spool.load(queue_id), queue.load(queue_id)
        assert (after.envelope, after.content, after.state, after.status) == (
            before.envelope,
            before.content,
            before.state,
            before.status,
        )
    assert queue.pending_ids(QueueState.DEFERRED) == [
        q for q, s in states.items() if s is QueueState.DEFERRED
    ]
    assert (spool.folder(QueueState.CORRUPT) / "BROKEN1").exists()  # the files are only read


def test_holds_move_with_their_bytes_and_a_pending_reply_token_still_finds_its_hold(
    tmp_path: Path, pg_db: Database
) -> None:
    files = HoldStore(tmp_path / "holds")
    token = new_token()
    files.create(record("Q1", token=token), b"original \x00 bytes", b"release bytes")
    files.create(record("Q2", token=new_token()).model_copy(update={"status": "rejected"}), b"o", b"r")
    with pg_db.connection() as connection:
        assert copy_holds(connection, files.root) == 2
    holds = PostgresHolds(pg_db.connection)
    assert holds.records() == files.records()
    assert holds.original("Q1") == b"original \x00 bytes" and holds.release_content("Q1") == b"release bytes"
    found = holds.find_token(token)
    assert found is not None and found[0].reference == "Q1"


def test_nothing_to_move_from_a_state_folder_without_queue_or_holds(tmp_path: Path, pg_db: Database) -> None:
    with pg_db.connection() as connection:
        assert copy_queue(connection, tmp_path / "spool").messages == 0
        assert copy_holds(connection, tmp_path / "holds") == 0
    assert not (tmp_path / "spool").exists()
