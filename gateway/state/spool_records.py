"""What the spool holds and shows: queue states (folders), queue ids, envelopes, entries, statistics."""

from __future__ import annotations

import enum
import random
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from gateway.errors import SpoolError

if TYPE_CHECKING:
    from gateway.state.delivery_status import DeliveryStatus

# Queue ids name files: letters, digits, '-' and '_' only, so no id can climb out of its folder.
QUEUE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")
CORRUPT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,200}$")


class QueueState(enum.StrEnum):
    """The folder a message is in. The folder is the state."""

    INCOMING = "incoming"
    DEFERRED = "deferred"
    DONE = "done"
    BOUNCED = "bounced"
    CORRUPT = "corrupt"


PENDING_STATES = (QueueState.INCOMING, QueueState.DEFERRED)
"""States whose messages the delivery worker still has to deliver."""


@dataclass(frozen=True)
class SpoolEnvelope:
    """Who a spooled message is from and for, as the SMTP transaction said."""

    queue_id: str
    mail_from: str  # "" = null sender (DSNs)
    rcpt_tos: tuple[str, ...]
    authenticated_as: str  # "" for gateway-generated mail
    received_at: float  # unix time
    client_address: str = ""


@dataclass(frozen=True)
class SpoolEntry:
    """One message in the spool as listings show it: envelope and status, never the content."""

    queue_id: str
    state: QueueState
    size: int  # bytes of the message content (the file's size for an unreadable entry)
    envelope: SpoolEnvelope | None  # None when the entry cannot be read
    status: DeliveryStatus | None  # None until the first attempt that left something to remember
    problem: str = ""  # why the entry cannot be read, for corrupt ones


@dataclass(frozen=True)
class SpoolMessage:
    """A readable spooled message with its exact bytes."""

    envelope: SpoolEnvelope
    content: bytes
    state: QueueState
    status: DeliveryStatus | None


@dataclass(frozen=True)
class SpoolStatistics:
    """A snapshot for metrics and the CLI (``messages`` is counted on disk at call time)."""

    messages: Mapping[str, int]
    commits_total: int
    commit_failures_total: int
    directory_syncs_total: int
    file_syncs_total: int
    quarantined_total: int
    # Seconds since the oldest message waiting in incoming/ and deferred/ was accepted (0: none waits).
    oldest_age_seconds: Mapping[str, float] = field(default_factory=dict)
    transactions_total: int = 0  # the PostgreSQL queue's committed transactions (files: 0)


@dataclass(frozen=True)
class RecoveryReport:
    """What ``recover()`` cleaned up after an unclean stop."""

    removed_tmp_files: int = 0
    removed_orphan_status_files: int = 0
    quarantined: tuple[str, ...] = field(default=())


def checked_id(queue_id: str) -> str:
    """``queue_id`` if it can name a spool file; SpoolError otherwise."""
    if not QUEUE_ID.match(queue_id):
        raise SpoolError(f"{queue_id!r} is not a valid queue id")
    return queue_id


def new_queue_id() -> str:
    """Unique, sortable by arrival time, safe as a file name: 14 hex digits of microseconds, 8 random."""
    # Not a secret, only unique: the random module is reseeded in forked children, and cheaper
    # than a getrandom() system call per message.
    return f"{time.time_ns() // 1000:014X}{random.getrandbits(32):08X}"
