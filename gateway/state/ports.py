"""The state layer's ports: one typed Protocol per store, what the rest of the gateway may ask of it.

Today's implementations (files and SQLite) sit behind them; ``open_state`` assigns each to a field
of ``State`` typed with its port, so mypy checks that every implementation conforms. A second
backend (PostgreSQL) implements the same ports. Modelled on Mailman 3's interfaces: the queue is
a switchboard (``commit`` enqueues, ``read`` dequeues, ``move`` finishes, ``recover`` after a
crash), the holds are its pendings (``HoldsPort`` in ``holds_port``: ``create`` adds a record with
its review tokens, ``find_token`` confirms one, ``discard`` evicts).

A store that holds an open resource (a database, a lock) is reached through an ``Opener``: nothing
is created or locked until a caller opens it, so a CLI command opens only what it needs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Literal, Protocol, Self, TypeVar

from gateway.login_throttle import SharedCounts
from gateway.policy.committee import Roster
from gateway.policy.config import Case
from gateway.policy.fingerprint import IndexStatistics
from gateway.policy.model import (
    Address,
    ContentFingerprints,
    ContentOverlap,
    IdentityFinder,
    Mention,
    ParsedMessage,
    ThreadFacts,
)
from gateway.state.audit import AuditEntry, DecisionRecord
from gateway.state.audit_format import Digestible, JsonValue
from gateway.state.audit_reading import StoredEntry, Verification
from gateway.state.fingerprints import Learnt as Learnt  # named by the journal: it reports what was learnt
from gateway.state.instances import InstanceRecord
from gateway.state.overrides import OverrideRecord, Redemption
from gateway.state.registry import RegistryKey, RegistrySnapshot
from gateway.state.spool import (
    DeliveryStatus,
    FollowUp,
    QueueState,
    RecoveryReport,
    SpoolEntry,
    SpoolEnvelope,
    SpoolMessage,
    SpoolStatistics,
)

T_co = TypeVar("T_co", covariant=True)


class Closing(Protocol):
    """A store holding an open resource: close it, or use it in a ``with`` block."""

    def close(self) -> None: ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...


class Opener(Protocol[T_co]):
    """A store not opened yet."""

    def exists(self) -> bool:
        """Whether the store has been created (opening creates it)."""
        ...

    def open(self) -> T_co: ...


# -- the queue ---------------------------------------------------------------------------------------


class QueuePort(Protocol):
    """The spool: accepted messages waiting for delivery, and their per-recipient status."""

    @property
    def disk_path(self) -> Path | None:
        """The folder on this host's disk the queue fills, for the intake's free-space check; None
        when the queue is elsewhere (a database)."""
        ...

    @property
    def shared(self) -> bool:
        """Whether other gateway instances deliver from this queue too (each message is then claimed
        by one of them before an attempt, and the worker looks for the others' pending work)."""
        ...

    def describe(self) -> str:
        """Where the queue is, in plain words for messages ("the spool at /var/lib/...")."""
        ...

    @staticmethod
    def new_queue_id() -> str: ...

    async def commit(
        self, envelope: SpoolEnvelope, content: bytes, follow_up: FollowUp | None = None
    ) -> None:
        """Enqueue: returns once the message is durable (the 250 may go out)."""
        ...

    def on_commit(self, listener: Callable[[str], None]) -> Callable[[], None]: ...

    async def run_with_next_batch(self, task: Callable[[], None]) -> None: ...

    def delivery_lock(self) -> contextlib.AbstractContextManager[None]:
        """Held while this process delivers: exclusive on the files queue; on a shared queue it keeps
        this instance's claims alive (and gives them up when it ends)."""
        ...

    def recover(self) -> RecoveryReport: ...

    def pending_ids(self, state: QueueState) -> list[str]:
        """Queue ids in a pending state that this process may deliver, oldest first."""
        ...

    def locate(self, queue_id: str) -> QueueState | None: ...

    async def read(self, queue_id: str, state: QueueState) -> SpoolMessage:
        """The message for an attempt (on a shared queue, claimed for this instance).

        FileNotFoundError if it is not in ``state`` (or another instance holds it);
        CorruptSpoolEntry if it cannot be read back whole."""
        ...

    async def write_status(self, queue_id: str, status: DeliveryStatus) -> None: ...

    async def move(self, queue_id: str, source: QueueState, target: QueueState) -> None: ...

    async def quarantine(self, queue_id: str, state: QueueState, reason: str) -> None: ...

    async def prune(self, *, now: float, done_retention: float, bounced_retention: float) -> int: ...

    def prune_now(self, now: float, done_retention: float, bounced_retention: float) -> int: ...

    def entries(self, state: QueueState | None = None) -> list[SpoolEntry]: ...

    def find(self, queue_id: str) -> SpoolEntry: ...

    def load(self, queue_id: str) -> SpoolMessage: ...

    def retry(self, queue_id: str) -> None: ...

    def retry_all(self) -> int: ...

    def delete(self, queue_id: str) -> QueueState: ...

    def statistics(self) -> SpoolStatistics: ...

    def recent_statistics(self) -> SpoolStatistics:
        """For ``/metrics`` on the event loop: never waits on a network (a database queue serves
        its last count and counts again in the background)."""
        ...


# -- the audit trail -----------------------------------------------------------------------------------


class AuditWriterPort(Closing, Protocol):
    """The trail opened for appending: one writer at a time (the running gateway, or a CLI action)."""

    deferred: bool

    @property
    def last_seq(self) -> int: ...

    @property
    def unflushed(self) -> bool: ...

    def append(
        self, event: str, fields: Mapping[str, JsonValue], private: Mapping[str, Digestible] | None = None
    ) -> AuditEntry: ...

    def record_decision(self, record: DecisionRecord) -> AuditEntry: ...

    def forget_salts(self, seqs: Iterable[int]) -> int: ...

    def flush(self) -> None: ...


class AuditPort(Protocol):
    """The audit trail: open it to write, read it, or act on it "later" while a gateway holds it."""

    def open(self, *, deferred: bool = False) -> AuditWriterPort:
        """The writer; ``AuditError`` if another process (a running gateway) holds the trail.

        ``deferred``: appends are made durable by ``flush`` (the running gateway), not one fsync each.
        """
        ...

    def record(self, event: str, fields: Mapping[str, JsonValue]) -> None:
        """Append now if no gateway holds the trail, else leave the entry for the gateway to append
        (with ``recorded_later``). ``AuditError`` if neither can be done."""
        ...

    def append_later(self, event: str, fields: Mapping[str, JsonValue]) -> None:
        """Leave the entry for the gateway holding the trail (``AuditError`` if that fails)."""
        ...

    def forget(
        self, case: str, queue_ids: Iterable[str], writer: AuditWriterPort | None = None
    ) -> int | None:
        """Forget the salts of the entries about ``case`` or ``queue_ids``: how many, or None when a
        running gateway holds the trail and will do it at its next round."""
        ...

    def waiting(self) -> list[str]:
        """The actions left for later and not carried out yet, oldest first (by name)."""
        ...

    def drain_later(self, writer: AuditWriterPort) -> int:
        """In the gateway holding the trail: carry out what was left for later, oldest first."""
        ...

    def entries(self) -> Iterator[StoredEntry]: ...

    def salts(self) -> dict[int, bytes | None]: ...

    def verify(self) -> Verification: ...

    def entries_about(self, case: str, queue_ids: Iterable[str] = ()) -> list[int]: ...


# -- thread ledger, fingerprints ------------------------------------------------------------------------


class LedgerPort(Closing, Protocol):
    """The thread ledger: which messages belong to which thread, case and participants."""

    def record(
        self,
        message_id: str,
        *,
        in_reply_to: Sequence[str] = (),
        references: Sequence[str] = (),
        from_: Iterable[Address] = (),
        to: Iterable[Address] = (),
        cc: Iterable[Address] = (),
        case: str | None = None,
        when: datetime | None = None,
    ) -> bool: ...

    def batch(self) -> contextlib.AbstractContextManager[None]: ...

    def record_message(self, message: ParsedMessage, *, case: str | None = None) -> bool: ...

    def lookup(self, message: ParsedMessage) -> ThreadFacts: ...

    def lookup_parent(self, in_reply_to: Sequence[str], references: Sequence[str]) -> ThreadFacts: ...

    def record_lists(self, addresses: Iterable[str]) -> int:
        """Remember mailing list addresses seen in journalled mail (issue 18: the reply-all net)."""
        ...

    def lists_among(self, addresses: Iterable[str]) -> frozenset[str]:
        """Which of ``addresses`` (lower-cased) are known mailing lists."""
        ...

    def forget_case(self, case: str) -> int: ...

    def forget_participants(self, matches: Callable[[str, str], bool]) -> int: ...

    def scrub(self) -> None: ...

    def count(self) -> int: ...


class LedgerOpener(Opener[LedgerPort], Protocol):
    def open_read_only(self) -> LedgerPort | None:
        """For lookups only (policy workers, ``check``): None while the ledger does not exist."""
        ...


class FingerprintsPort(Closing, Protocol):
    """Fingerprints of protected messages (reporters' own words), keyed per installation."""

    def learn(
        self,
        case: str,
        document: str,
        texts: str | Sequence[str],
        *,
        person: str | None = None,
        source: str = "api",
        finder: IdentityFinder | None = None,
    ) -> Learnt: ...

    def learn_message(
        self,
        case: str,
        message: ParsedMessage,
        *,
        person: str | None = None,
        source: str = "api",
        finder: IdentityFinder | None = None,
    ) -> Learnt: ...

    def forget_case(self, case: str) -> int: ...

    def overlaps(self, text: str) -> list[ContentOverlap]: ...

    def named_by(self, case: str, person: str) -> frozenset[Mention]: ...

    def for_message(self) -> ContentFingerprints: ...

    def refresh(self) -> None: ...

    def cases(self) -> dict[str, int]: ...

    def statistics(self) -> IndexStatistics: ...


# -- overrides -----------------------------------------------------------------------------------------


class OverridesPort(Closing, Protocol):
    """One-time override tokens, the overrides made with them, and the keys of "false positive"
    reports (``gateway.state.overrides``; shared by every gateway on PostgreSQL)."""

    def issue(self, token: str, sender: str, rules: tuple[str, ...], now: float) -> None: ...

    def redeem(
        self,
        token: str,
        *,
        sender: str,
        message: str,
        rules: tuple[str, ...],
        justification: str,
        quotas: Mapping[str, tuple[int, float]],
        now: float,
        queue_id: str | None = None,
        case: str | None = None,
    ) -> Redemption:
        """One transaction: the token checked, the quota counted, the override recorded (once, even
        when two gateways redeem the same token at the same moment)."""
        ...

    def find(self, reference: str) -> OverrideRecord | None: ...

    def since(self, when: float) -> list[OverrideRecord]: ...

    def prune(self, *, now: float, retention: float) -> int:
        """Expired tokens go; overrides and report keys older than ``retention`` seconds too."""
        ...

    def forget(self, case: str, queue_ids: Iterable[str], names: Callable[[str], bool]) -> int:
        """``case expunge``: the overrides of the case, of those messages, or naming its people."""
        ...

    def note_report(self, key: str, reference: str, now: float) -> bool:
        """Record a "false positive" report's idempotency key: True only the first time."""
        ...


# -- committee digest periods -----------------------------------------------------------------------------


class DigestPeriodsPort(Protocol):
    """Which committee digest periods were sent: one gateway sends each period, and the period's
    ``digest`` audit event is recorded once, whatever restarts and however many gateways."""

    def recorded(self, kind: str) -> datetime | None:
        """The end of the last period of ``kind`` recorded here (the trail may know older ones)."""
        ...

    def claim(self, kind: str, start: datetime, end: datetime, owner: str, lease: float) -> bool:
        """Whether ``owner`` may send this period now: False while another live gateway holds it
        (for ``lease`` seconds from its claim), once it is recorded, or once a later period is."""
        ...

    def record(self, kind: str, end: datetime, fields: Mapping[str, JsonValue]) -> bool:
        """Append the period's ``digest`` audit event with ``fields`` unless it, or a later period,
        is recorded already: True if this call recorded it. A store keeps a bounded number of
        periods; the trail keeps every event."""
        ...


# -- case registry, accounts ----------------------------------------------------------------------------


class CasesPort(Protocol):
    """The encrypted case registry."""

    @property
    def path(self) -> Path:
        """Where the registry is, for messages to admins (files backend)."""
        ...

    def key(self, *, create: bool = False) -> RegistryKey: ...

    def key_warning(self) -> str | None: ...

    def stat(self) -> tuple[int, int, int] | None: ...

    def digest(self) -> str | None: ...

    def read(self) -> RegistrySnapshot | None: ...

    def cases(self) -> tuple[Case, ...]: ...

    def update(self, change: Callable[[tuple[Case, ...]], Sequence[Case]]) -> tuple[Case, ...]: ...

    def rekey(self, new_key: RegistryKey) -> int: ...

    def write(self, cases: Sequence[Case]) -> None: ...


class AccountsPort(Protocol):
    """The committee members' accounts (the users file)."""

    @property
    def path(self) -> Path:
        """The users file, for messages to admins."""
        ...

    def members(self) -> list[str]: ...

    def addresses_of(self, member: str) -> frozenset[str]: ...

    def aliases_of(self, member: str) -> tuple[str, ...]: ...

    def verify(self, login: str, password: str) -> str | None: ...

    def add(self, address: str, password: str, aliases: Sequence[str] = ()) -> None: ...

    def set_password(self, address: str, password: str) -> None: ...

    def remove(self, address: str) -> None: ...

    def reload_if_changed(self) -> None:
        """Pick up changes another process made (``user add`` on any host). On a database this
        waits on the network, so it never does on an event loop: there it returns at once, and the
        gateway's poll (on a thread) brings changes within seconds."""
        ...


class AccountsOpener(Opener[AccountsPort], Protocol):
    """The accounts, and what the policy reads of them without opening the store."""

    def roster(self) -> Roster | None:
        """Who holds an account now (never a password hash); None while accounts are not in use
        (no users file; on a database, none was ever added)."""
        ...

    def seen(self) -> object:
        """A cheap token that changes whenever the accounts may have (the users file's stat
        fields; the database's change counter), for the policy's poll."""
        ...


# -- limits counted by every gateway ---------------------------------------------------------------

CountedKind = Literal["login-failures", "notices"]


class SharedCountsPort(Protocol):
    """Rate limits counted across gateways: failed logins per client, notices per sender.

    On the files backend (one gateway) there is nothing to share: ``counter`` is None and each limit
    counts in memory. On PostgreSQL each counter answers from memory and ``sync`` (blocking: on a
    thread, every two seconds, ``gateway.decision.shared_limits``) exchanges the counts with the
    other gateways.
    """

    @property
    def shared(self) -> bool: ...

    def counter(self, kind: CountedKind, window: float) -> SharedCounts | None: ...

    def sync(self) -> None: ...


class InstancesPort(Protocol):
    """The gateways sharing this state and the policy version each runs (``gateway.state.instances``).

    Every call waits on the database on PostgreSQL: run it on a thread."""

    @property
    def shared(self) -> bool: ...

    def announce(self, record: InstanceRecord) -> None:
        """Record (or refresh) this gateway: at start, on each policy reload, at each heartbeat."""
        ...

    def leave(self, instance: str) -> None:
        """This gateway stops cleanly: its row goes."""
        ...

    def instances(self) -> list[InstanceRecord]: ...
