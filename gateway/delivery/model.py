"""What delivery passes around: per-recipient results, the Transport protocol, the statistics snapshot."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from gateway.histogram import HistogramSnapshot
from gateway.state.spool import SpoolEnvelope

RecipientOutcome = Literal["delivered", "deferred", "failed"]


@dataclass(frozen=True)
class RecipientResult:
    """What one attempt achieved for one recipient."""

    address: str
    outcome: RecipientOutcome
    reply: str
    remote: str = ""


@dataclass(frozen=True)
class AttemptResult:
    """What one attempt achieved, per recipient."""

    recipients: tuple[RecipientResult, ...]


class Transport(Protocol):
    """Where messages go: the upstream server or the local Maildir."""

    description: str

    async def send(
        self, envelope: SpoolEnvelope, content: bytes, recipients: Sequence[str]
    ) -> AttemptResult: ...

    async def close_idle(self, older_than: float) -> None: ...

    async def close(self) -> None: ...

    def connections_open(self) -> int: ...

    def connections_made(self) -> int: ...

    @property
    def out_of_step(self) -> int: ...


ATTEMPT_OUTCOMES = ("delivered", "partial", "deferred", "bounced", "expired", "corrupt")
RECIPIENT_OUTCOMES: tuple[RecipientOutcome, ...] = ("delivered", "deferred", "failed")


@dataclass(frozen=True)
class DeliveryStatistics:
    """A snapshot for metrics and the CLI."""

    in_flight: int  # messages being worked on (sending, or recording the result)
    sending: int  # messages being handed to the upstream right now (at most ``concurrency``)
    ready: int
    scheduled: int
    connections_open: int
    connections_total: int
    attempts_total: int
    outcomes_total: Mapping[str, int]  # delivered / partial / deferred / bounced / expired / corrupt
    recipients_total: Mapping[str, int]  # delivered / deferred / failed
    dsns_total: int
    errors_total: int
    out_of_step_total: int = 0  # upstream connections dropped: replies that matched no command
    unrecorded: int = 0  # messages sent whose result is not on disk yet (kept in memory, retried)
    disk_full_total: int = 0  # spool writes after a delivery that failed because the disk was full
    delivery_seconds: HistogramSnapshot | None = None  # acceptance to the last recipient's 250

    @classmethod
    def empty(cls) -> DeliveryStatistics:
        """Nothing delivered yet (every count present, at zero)."""
        return cls(
            in_flight=0,
            sending=0,
            ready=0,
            scheduled=0,
            connections_open=0,
            connections_total=0,
            attempts_total=0,
            outcomes_total=dict.fromkeys(ATTEMPT_OUTCOMES, 0),
            recipients_total=dict.fromkeys(RECIPIENT_OUTCOMES, 0),
            dsns_total=0,
            errors_total=0,
        )
