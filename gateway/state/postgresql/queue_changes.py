"""The changes the PostgreSQL queue batches (``commit``, ``write_status``, ``move``), each run inside
the batch's transaction: each returns None when it applied, or the error its caller gets.

A change to a message another live instance has claimed is refused (``QueueTakenOver``): only the
instance holding a message records what happens to it.
"""

from __future__ import annotations

from typing import Any

from gateway.errors import SpoolError
from gateway.state.delivery_status import DeliveryStatus, encode_status
from gateway.state.postgresql.queue_batches import Cursor
from gateway.state.spool_records import QueueState, SpoolEnvelope


class QueueTakenOver(SpoolError, FileNotFoundError):
    """Another instance has claimed this message (this one's lease ran out): its result is not ours.

    A FileNotFoundError too, so the delivery worker lets the message go as it does one deleted
    under it: the instance holding it now records what happens to it.
    """


def insert(envelope: SpoolEnvelope, content: bytes, digest: str, cursor: Cursor) -> BaseException | None:
    cursor.execute(
        "INSERT INTO queue_messages (queue_id, state, mail_from, rcpt_tos, authenticated_as, "
        "received_at, client_address, size, sha256, content) "
        "VALUES (%s, 'incoming', %s, %s, %s, %s, %s, %s, %s, %s) "
        "ON CONFLICT (queue_id) DO NOTHING",
        (
            envelope.queue_id,
            envelope.mail_from,
            list(envelope.rcpt_tos),
            envelope.authenticated_as,
            envelope.received_at,
            envelope.client_address,
            len(content),
            digest,
            content,
        ),
    )
    if cursor.rowcount == 1:
        return None
    cursor.execute("SELECT sha256 FROM queue_messages WHERE queue_id = %s", (envelope.queue_id,))
    row = cursor.fetchone()
    if row is not None and row[0] == digest:
        return None  # the same message stored before (a recovered release): it is durable
    return SpoolError(f"queue id {envelope.queue_id} is taken by another message")


def write_status(params: dict[str, Any], status: DeliveryStatus, cursor: Cursor) -> BaseException | None:
    cursor.execute(
        "UPDATE queue_messages SET status = %(status)s::jsonb, next_attempt_at = %(next)s, "
        "claimed_by = CASE WHEN state IN ('incoming', 'deferred') THEN %(me)s END, "
        "lease_until = CASE WHEN state IN ('incoming', 'deferred') THEN queue_now() + %(lease)s END "
        "WHERE queue_id = %(id)s AND state <> 'corrupt' AND queue_claimable(claimed_by, lease_until, %(me)s)",
        {**params, "status": encode_status(status).decode("utf-8"), "next": status.next_attempt_at},
    )
    return None if cursor.rowcount == 1 else _missing_or_taken(cursor, params, None)


# Finished mail (done, bounced) is nobody's; mail still pending stays with the instance that moved it.
_FINISH = (
    "UPDATE queue_messages SET state = %(target)s, claimed_by = NULL, lease_until = NULL, "
    "finished_at = queue_now() WHERE queue_id = %(id)s AND state = %(source)s "
    "AND queue_claimable(claimed_by, lease_until, %(me)s)"
)
_MOVE = (
    "UPDATE queue_messages SET state = %(target)s, claimed_by = %(me)s, "
    "lease_until = queue_now() + %(lease)s, finished_at = NULL WHERE queue_id = %(id)s "
    "AND state = %(source)s AND queue_claimable(claimed_by, lease_until, %(me)s)"
)


def move(params: dict[str, Any], cursor: Cursor) -> BaseException | None:
    finished = params["target"] in (QueueState.DONE.value, QueueState.BOUNCED.value)
    cursor.execute(_FINISH if finished else _MOVE, params)
    return None if cursor.rowcount == 1 else _missing_or_taken(cursor, params, params["source"])


def _missing_or_taken(cursor: Cursor, params: dict[str, Any], state: str | None) -> BaseException:
    queue_id = params["id"]
    cursor.execute("SELECT state, claimed_by FROM queue_messages WHERE queue_id = %s", (queue_id,))
    row = cursor.fetchone()
    if row is None or row[0] == QueueState.CORRUPT.value or (state is not None and row[0] != state):
        return FileNotFoundError(f"message {queue_id} is not in the queue as expected")
    return QueueTakenOver(f"message {queue_id} was taken over by {row[1]}; its results are recorded there")
