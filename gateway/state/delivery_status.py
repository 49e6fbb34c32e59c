"""The per-recipient delivery record of a queued message, as ``status/<queue id>.json`` holds it.

This is the record, not the rules: the spool stores it and listings show it, but how it changes (an
attempt's replies, expiry, a DSN sent, the next attempt) belongs to delivery, in
``gateway.delivery.status``. The record stays here, below delivery, because the state layer reads
and writes it (``Spool.read``, ``Spool.entries``) and may not import delivery; its queries only
read what the file says. The file format is unchanged from earlier releases (``STATUS_VERSION`` 1).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Literal

from gateway.errors import CorruptSpoolEntry
from gateway.state.spool_format import number_field, text_field

if TYPE_CHECKING:
    from gateway.state.spool_records import SpoolEnvelope

STATUS_VERSION = 1

RecipientState = Literal["pending", "delivered", "deferred", "failed"]


@dataclass(frozen=True)
class RecipientStatus:
    """What happened to one recipient so far."""

    address: str
    state: RecipientState = "pending"
    reply: str = ""  # the last reply about this recipient: "250 2.0.0 Ok", "550 5.1.1 ...", or our text
    updated_at: float = 0.0
    remote: str = ""  # the upstream host that gave the reply; "" for local delivery or no connection
    expired: bool = False  # failed because retry_lifetime ran out, not because of a 5xx
    reported: bool = False  # the sender has been sent a DSN about this failure


@dataclass(frozen=True)
class DeliveryStatus:
    """Per-recipient results of the attempts made on one message (``status/<queue id>.json``)."""

    recipients: tuple[RecipientStatus, ...]
    attempts: int = 0
    last_attempt_at: float = 0.0
    next_attempt_at: float = 0.0
    dsn_count: int = 0

    @classmethod
    def initial(cls, envelope: SpoolEnvelope) -> DeliveryStatus:
        """Every envelope recipient pending, duplicates folded (one RCPT TO per address)."""
        unique = dict.fromkeys(envelope.rcpt_tos)
        return cls(recipients=tuple(RecipientStatus(address) for address in unique))

    def pending(self) -> tuple[str, ...]:
        """Recipients still to be tried."""
        return tuple(r.address for r in self.recipients if r.state in ("pending", "deferred"))

    def unreported_failures(self) -> tuple[RecipientStatus, ...]:
        return tuple(r for r in self.recipients if r.state == "failed" and not r.reported)

    def count(self, state: RecipientState) -> int:
        return sum(1 for r in self.recipients if r.state == state)

    def updated(self, changes: Mapping[str, RecipientStatus]) -> DeliveryStatus:
        """A copy with the recipients named in ``changes`` replaced."""
        return replace(self, recipients=tuple(changes.get(r.address, r) for r in self.recipients))


def encode_status(status: DeliveryStatus) -> bytes:
    """The bytes of ``status/<queue id>.json`` (JSON, indented by one space)."""
    data = {
        "version": STATUS_VERSION,
        "attempts": status.attempts,
        "last_attempt_at": status.last_attempt_at,
        "next_attempt_at": status.next_attempt_at,
        "dsn_count": status.dsn_count,
        "recipients": [
            {
                "address": r.address,
                "state": r.state,
                "reply": r.reply,
                "updated_at": r.updated_at,
                "remote": r.remote,
                "expired": r.expired,
                "reported": r.reported,
            }
            for r in status.recipients
        ],
    }
    return json.dumps(data, ensure_ascii=False, indent=1).encode("utf-8")


def decode_status(raw: bytes, name: str) -> DeliveryStatus:
    """Read a status file back; CorruptSpoolEntry if it cannot be."""
    try:
        data = json.loads(raw.decode("utf-8"))
        if data["version"] != STATUS_VERSION:
            raise ValueError(f"unknown version {data['version']!r}")
        recipients = []
        for item in data["recipients"]:
            state = item["state"]
            if state not in ("pending", "delivered", "deferred", "failed"):
                raise ValueError(f"unknown recipient state {state!r}")
            recipients.append(
                RecipientStatus(
                    address=text_field(item["address"]),
                    state=state,
                    reply=text_field(item["reply"]),
                    updated_at=number_field(item["updated_at"]),
                    remote=text_field(item["remote"]),
                    expired=bool(item["expired"]),
                    reported=bool(item["reported"]),
                )
            )
        return DeliveryStatus(
            recipients=tuple(recipients),
            attempts=int(data["attempts"]),
            last_attempt_at=number_field(data["last_attempt_at"]),
            next_attempt_at=number_field(data["next_attempt_at"]),
            dsn_count=int(data["dsn_count"]),
        )
    except (UnicodeDecodeError, KeyError, TypeError, ValueError) as exc:
        raise CorruptSpoolEntry(f"status of {name} is unreadable ({exc})") from None
