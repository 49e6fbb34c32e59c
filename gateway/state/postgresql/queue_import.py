"""Moving a files-backed queue and holds into PostgreSQL (for ``state import``), inside its transaction.

The queue's messages keep their queue ids, envelopes, exact bytes (checked against their checksum
as they are read), states and per-recipient status, unclaimed, so whichever gateway starts first
delivers them; finished mail counts its retention from the import. Entries set aside as unreadable
(``corrupt/``) are not moved: they stay in the folder for an operator. The holds keep their records
(with the hashes of their review tokens, so a reviewer's pending reply still works), and both their
bytes. The files are only read.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from psycopg.types.json import Jsonb

from gateway.state.delivery_status import DeliveryStatus, encode_status
from gateway.state.holds import HoldStore
from gateway.state.postgresql.database import Connection
from gateway.state.spool import QueueState, Spool

_INSERT_MESSAGE = (
    "INSERT INTO queue_messages (queue_id, state, mail_from, rcpt_tos, authenticated_as, received_at, "
    "client_address, size, sha256, content, status, next_attempt_at, finished_at) "
    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, "
    "CASE WHEN %s THEN queue_now() END)"
)


@dataclass(frozen=True)
class QueueImported:
    messages: int
    left_unreadable: int  # corrupt entries left in the folder


def copy_queue(connection: Connection, spool_root: Path) -> QueueImported:
    """Insert every readable message of the files queue at ``spool_root``."""
    if not spool_root.is_dir():
        return QueueImported(0, 0)
    spool = Spool(spool_root)
    moved = unreadable = 0
    with connection.cursor() as cursor:
        for entry in spool.entries():
            if entry.state is QueueState.CORRUPT or entry.envelope is None:
                unreadable += 1
                continue
            message = spool.load(entry.queue_id)  # CorruptSpoolEntry stops the import: nothing is moved
            envelope, status = message.envelope, message.status
            cursor.execute(
                _INSERT_MESSAGE,
                (
                    envelope.queue_id,
                    message.state.value,
                    envelope.mail_from,
                    list(envelope.rcpt_tos),
                    envelope.authenticated_as,
                    envelope.received_at,
                    envelope.client_address,
                    len(message.content),
                    hashlib.sha256(message.content).hexdigest(),
                    message.content,
                    None if status is None else Jsonb(_status_json(status)),
                    0.0 if status is None else status.next_attempt_at,
                    message.state in (QueueState.DONE, QueueState.BOUNCED),
                ),
            )
            moved += 1
    return QueueImported(moved, unreadable)


def copy_holds(connection: Connection, holds_root: Path) -> int:
    """Insert every readable hold at ``holds_root`` with its bytes and token hashes; how many."""
    if not holds_root.is_dir():
        return 0
    store = HoldStore(holds_root)
    count = 0
    with connection.cursor() as cursor:
        for record in store.records():
            cursor.execute(
                "INSERT INTO holds (reference, status, record, original, release) "
                "VALUES (%s, %s, %s::jsonb, %s, %s)",
                (
                    record.reference,
                    record.status,
                    record.model_dump_json(),
                    store.original(record.reference),
                    store.release_content(record.reference),
                ),
            )
            cursor.executemany(
                "INSERT INTO hold_tokens (token_hash, reference) VALUES (%s, %s)",
                [(digest, record.reference) for digest in record.grants],
            )
            count += 1
    return count


def _status_json(status: DeliveryStatus) -> object:
    return json.loads(encode_status(status))
