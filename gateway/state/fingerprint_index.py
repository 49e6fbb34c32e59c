"""What both fingerprint stores share: the in-memory index kept in step with the stored rows.

Each process keeps its own :class:`~gateway.policy.fingerprint.FingerprintIndex`. A store adds its
own writes to it at once and picks up other processes' on the next lookup: rows with a higher id
than the last one read are added; a changed epoch (``forget_case`` deletes rows, which ids cannot
show) reloads every row. The files (SQLite) and PostgreSQL stores differ only in how they read and
write rows; the catching up, the lookups and how texts become a document to store live here once.
"""

from __future__ import annotations

import hashlib
import sys
import threading
from abc import ABC, abstractmethod
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Self

from gateway.policy.fingerprint import (
    CURRENT_SCHEME,
    FingerprintIndex,
    IndexStatistics,
    ProtectedDocument,
    document_shingles,
    learnable_texts,
)
from gateway.policy.model import (
    ContentFingerprints,
    ContentOverlap,
    IdentityFinder,
    Mention,
    ParsedMessage,
)
from gateway.state.ledger import normalise_message_id

_KEY_CHECK_INPUT = b"conduct-gateway fingerprint key check"

# A row as the stores read it: its id (ever growing) and the document it holds.
Row = tuple[int, ProtectedDocument]


@dataclass(frozen=True)
class Learnt:
    """What one ``learn`` call stored."""

    case: str
    document: str
    shingles: int  # 0: too short to fingerprint (under 8 words); nothing stored


@dataclass(frozen=True)
class Learning:
    """One document to store: what ``learn`` made of the texts (hashes and mentions, never text)."""

    case: str
    document: str
    person: str | None
    source: str
    learnt_at: datetime  # UTC
    shingles: Sequence[int]
    mentions: frozenset[Mention]


def key_check(key: bytes) -> str:
    """What a store keeps to recognise the key it was made with (never the key itself)."""
    return hashlib.blake2b(_KEY_CHECK_INPUT, key=key, digest_size=16).hexdigest()


def message_document_id(message: ParsedMessage) -> str:
    """A stable opaque id for a message: a digest of its Message-ID (else of its bytes).

    The journal copy and an ``add-report`` of the same message get the same id, so learning it
    twice replaces it rather than counting it twice.
    """
    message_id = normalise_message_id(message.message_id) if message.message_id else None
    basis = f"message-id:{message_id}".encode() if message_id else b"raw:" + message.raw
    return hashlib.sha256(basis).hexdigest()[:24]


def pack_shingles(shingles: Sequence[int]) -> bytes:
    """Shingle hashes as stored: big-endian uint64s, whatever the machine's byte order."""
    values = array("Q", shingles)
    if sys.byteorder == "little":
        values.byteswap()
    return values.tobytes()


def unpack_shingles(blob: bytes) -> array[int]:
    values = array("Q")
    values.frombytes(blob)
    if sys.byteorder == "little":
        values.byteswap()
    return values


def _mentions(texts: Sequence[str], finder: IdentityFinder) -> frozenset[Mention]:
    return frozenset(
        Mention(identity.case, identity.person, identity.kind)
        for text in texts
        for identity in finder.find(text)
    )


class IndexedFingerprints(ABC):
    """A fingerprint store's index and lookups; a backend says how rows are read and written."""

    def __init__(self, key: bytes, clock: Callable[[], datetime]) -> None:
        self._key = key
        self._clock = clock
        self._lock = threading.RLock()
        self._index = FingerprintIndex(key)
        self._last_id = 0
        self._epoch = ""

    # -- what a backend provides -----------------------------------------------------------------

    @abstractmethod
    def _read_all(self) -> tuple[str, list[Row]]:
        """The current epoch and every row, in id order."""

    @abstractmethod
    def _read_since(self, last_id: int, epoch: str) -> list[Row] | None:
        """The rows after ``last_id`` in id order; None when the epoch is no longer ``epoch``."""

    @abstractmethod
    def _write(self, learning: Learning) -> None:
        """Store one document, replacing the case's document with that id."""

    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- writing ---------------------------------------------------------------------------------

    def learn(
        self,
        case: str,
        document: str,
        texts: str | Sequence[str],
        *,
        person: str | None = None,
        source: str = "api",
        finder: IdentityFinder | None = None,
    ) -> Learnt:
        """Fingerprint ``texts`` as one protected document of ``case`` (replacing one with that id).

        Only the keyed shingle hashes are stored, and, when ``finder`` is given, which protected
        people the texts name (case, person id and kind of identity: never the identity).
        Texts of fewer than 8 words store nothing.
        """
        texts = [texts] if isinstance(texts, str) else list(texts)
        shingles = document_shingles(texts, self._key)
        if len(shingles) < 8 - CURRENT_SCHEME.words + 1:
            return Learnt(case, document, 0)
        mentions = _mentions(texts, finder) if finder is not None else frozenset()
        learning = Learning(case, document, person, source, self._clock().astimezone(UTC), shingles, mentions)
        with self._lock:
            self._write(learning)
            self._catch_up()
        return Learnt(case, document, len(shingles))

    def learn_message(
        self,
        case: str,
        message: ParsedMessage,
        *,
        person: str | None = None,
        source: str = "api",
        finder: IdentityFinder | None = None,
    ) -> Learnt:
        """Learn a reporter's or witness's message: its bodies and text attachments, without the
        quoted text and signature of its plain-text bodies (see ``learnable_texts``), and which
        protected people those texts name (with ``finder``, the policy's)."""
        return self.learn(
            case,
            message_document_id(message),
            learnable_texts(message),
            person=person,
            source=source,
            finder=finder,
        )

    # -- reading ---------------------------------------------------------------------------------

    def overlaps(self, text: str) -> list[ContentOverlap]:
        """``ContentFingerprints.overlaps``, after picking up other processes' changes."""
        with self._lock:
            self._catch_up()
            return self._index.overlaps(text)

    def named_by(self, case: str, person: str) -> frozenset[Mention]:
        """``ContentFingerprints.named_by``, after picking up other processes' changes."""
        with self._lock:
            self._catch_up()
            return self._index.named_by(case, person)

    def for_message(self) -> ContentFingerprints:
        """Pick up other processes' changes once, for every lookup of one message's texts."""
        with self._lock:
            self._catch_up()
        return _CheckedIndex(self)

    def refresh(self) -> None:
        """Pick up documents learnt or forgotten by other processes (cheap when nothing changed)."""
        with self._lock:
            self._catch_up()

    def statistics(self) -> IndexStatistics:
        with self._lock:
            return self._index.statistics()

    # -- keeping the index in step ---------------------------------------------------------------

    def _catch_up(self) -> None:
        rows = self._read_since(self._last_id, self._epoch)
        if rows is None:
            self._load_all()
            return
        for row_id, document in rows:
            self._index.add(document)
            self._last_id = max(self._last_id, row_id)

    def _load_all(self) -> None:
        epoch, rows = self._read_all()
        index = FingerprintIndex(self._key)
        index.add_many(document for _, document in rows)
        self._index, self._epoch = index, epoch
        self._last_id = max((row_id for row_id, _ in rows), default=0)


class _CheckedIndex:
    """A store already checked for other processes' changes: lookups read its index only."""

    def __init__(self, store: IndexedFingerprints) -> None:
        self._store = store

    def overlaps(self, text: str) -> list[ContentOverlap]:
        with self._store._lock:
            return self._store._index.overlaps(text)

    def named_by(self, case: str, person: str) -> frozenset[Mention]:
        with self._store._lock:
            return self._store._index.named_by(case, person)
