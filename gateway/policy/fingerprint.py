"""Fingerprints of protected content: keyed hashes of word shingles, and an index that measures overlap.

A text becomes a sequence of words: :func:`~gateway.policy.normalize.normalize` (case, compatibility
forms, accents, invisible characters, look-alikes, whitespace), then every run of letters and
digits is a word and everything else (punctuation, ``>`` quote markers, line breaks) separates
words. So the same words reflowed to another line width, quoted with ``> `` or ``> > ``, rendered
from HTML or decoded from any transfer encoding give the same sequence.

Every run of :data:`SHINGLE_WORDS` consecutive words (a shingle) is hashed with keyed BLAKE2b
(64-bit digests). The key is a per-installation secret, so a stolen fingerprint file cannot be
checked against guessed phrases offline. Only the hashes are kept, never the words.

:class:`FingerprintIndex` holds every shingle of every protected document (all shingles, not a
winnowed sample, so the overlap it reports is exact) in 8 bytes per shingle: 4096 sorted
``array('Q')`` buckets whose values carry the top 40 bits of the hash and a 24-bit document number.
"""

from __future__ import annotations

import re
from array import array
from bisect import bisect_left, insort
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from hashlib import blake2b
from itertools import pairwise

from gateway.policy.model import ContentOverlap, ParsedMessage, SegmentKind
from gateway.policy.normalize import normalize

SHINGLE_WORDS = 8
KEY_BYTES = 32

_WORD = re.compile(r"\w+")
_DOC_BITS = 24
_DOC_MASK = (1 << _DOC_BITS) - 1
_BUCKET_SHIFT = 52  # the top 12 bits of a hash choose one of 4096 buckets
MAX_DOCUMENTS = _DOC_MASK  # document numbers are never reused (the index is rebuilt at start)
# A shingle found in this many protected documents is boilerplate (a disclaimer, a mailing-list
# footer), not anyone's own words: it is not counted.
COMMON_IN_DOCUMENTS = 50

# Where the sender's own words end in a reply: a signature ("-- "), Outlook's original-message
# separators. Quoted lines ("> ...") are dropped wherever they are.
_END_OF_OWN_TEXT = re.compile(r"^(?:--\s*|-{3,}\s*original message\s*-{3,}|_{20,})$", re.IGNORECASE)


def words(text: str) -> list[str]:
    """The words of ``text`` in canonical form; punctuation and quote markers only separate them."""
    return _WORD.findall(normalize(text))


def own_words(text: str) -> str:
    """The part of a plain-text mail body its author wrote: without quoted lines and signature."""
    kept: list[str] = []
    for line in text.splitlines():
        stripped = line.strip()
        if _END_OF_OWN_TEXT.match(stripped):
            break
        if not stripped.startswith(">"):
            kept.append(line)
    return "\n".join(kept)


def learnable_texts(message: ParsedMessage) -> list[str]:
    """The texts of a reporter's message worth protecting: bodies and text attachments, not headers.

    Quoted lines and signatures of text bodies are left out (they are usually the committee's own
    earlier message). Rendered HTML is used only when the message has no plain-text body, because
    HTML quotes (``<blockquote>``) cannot be told from the author's words once rendered.
    """
    has_plain = any(segment.kind is SegmentKind.TEXT for segment in message.segments)
    texts = []
    for segment in message.segments:
        if segment.kind is SegmentKind.TEXT or (segment.kind is SegmentKind.HTML_TEXT and not has_plain):
            texts.append(own_words(segment.text))
        elif segment.kind is SegmentKind.ATTACHMENT_TEXT:
            texts.append(segment.text)
    return texts


def _hasher(key: bytes) -> blake2b:
    if not 16 <= len(key) <= 64:
        raise ValueError("the fingerprint key must be 16 to 64 bytes")
    return blake2b(key=key, digest_size=8)


def shingle_hashes(tokens: Sequence[str], key: bytes) -> list[int]:
    """The keyed 64-bit hash of every run of SHINGLE_WORDS consecutive words, in text order."""
    count = len(tokens) - SHINGLE_WORDS + 1
    if count <= 0:
        return []
    base = _hasher(key)
    joined = " ".join(tokens).encode("utf-8")
    starts = [0] * len(tokens)
    offset = 0
    for index, token in enumerate(tokens):
        starts[index] = offset
        offset += (len(token) if token.isascii() else len(token.encode("utf-8"))) + 1
    ends = [*starts[1:], len(joined) + 1]
    result = [0] * count
    last = SHINGLE_WORDS - 1
    for index in range(count):
        digest = base.copy()
        digest.update(joined[starts[index] : ends[index + last] - 1])
        result[index] = int.from_bytes(digest.digest(), "big")
    return result


def document_shingles(texts: Iterable[str], key: bytes) -> tuple[int, ...]:
    """Every distinct shingle hash of a document made of ``texts`` (each text shingled on its own)."""
    found: set[int] = set()
    for text in texts:
        found.update(shingle_hashes(words(text), key))
    return tuple(sorted(found))


@dataclass(frozen=True)
class ProtectedDocument:
    """One protected document as the index knows it: who and where it is from, and its shingles."""

    case: str
    document: str  # an opaque id, unique within the case (e.g. a Message-ID digest)
    person: str | None  # the protected person who wrote it, when known
    shingles: Sequence[int]  # distinct keyed shingle hashes


@dataclass(frozen=True)
class _Entry:
    case: str
    document: str
    person: str | None
    size: int  # distinct shingles (40-bit prefixes)


@dataclass(frozen=True)
class IndexStatistics:
    """Size of the index: documents, shingles held (including those of replaced documents not yet
    compacted away)."""

    documents: int
    cases: int
    shingles: int


class FingerprintIndex:
    """Every protected document's shingles, in memory; answers ``overlaps(text)`` (ContentFingerprints).

    Not thread-safe: the owner (``gateway.fingerprints.FingerprintStore``) serialises calls.
    """

    def __init__(self, key: bytes) -> None:
        _hasher(key)  # validate the key now, not at the first message
        self._key = key
        self._buckets = [array("Q") for _ in range(1 << (64 - _BUCKET_SHIFT))]
        self._entries: list[_Entry | None] = []
        self._by_name: dict[tuple[str, str], int] = {}
        self._stored = 0  # values in the buckets
        self._dead = 0  # values belonging to removed documents

    # -- building -----------------------------------------------------------------------------------

    def add(self, document: ProtectedDocument) -> None:
        """Add (or replace: same case and id) a document; usable at once."""
        self._discard((document.case, document.document))
        if len(self._entries) >= MAX_DOCUMENTS:
            raise OverflowError("the fingerprint index is full; restart the gateway to renumber it")
        number = len(self._entries)
        prefixes = sorted({value >> _DOC_BITS for value in document.shingles})
        self._entries.append(_Entry(document.case, document.document, document.person, len(prefixes)))
        self._by_name[(document.case, document.document)] = number
        buckets = self._buckets
        shift = _BUCKET_SHIFT - _DOC_BITS
        for prefix in prefixes:
            insort(buckets[prefix >> shift], (prefix << _DOC_BITS) | number)
        self._stored += len(prefixes)

    def add_many(self, documents: Iterable[ProtectedDocument]) -> None:
        """Add many documents at once (start-up): appends, then sorts each bucket once."""
        buckets = self._buckets
        shift = _BUCKET_SHIFT - _DOC_BITS
        for document in documents:
            self._discard((document.case, document.document))
            number = len(self._entries)
            if number >= MAX_DOCUMENTS:
                raise OverflowError("the fingerprint index is full")
            prefixes = {value >> _DOC_BITS for value in document.shingles}
            self._entries.append(_Entry(document.case, document.document, document.person, len(prefixes)))
            self._by_name[(document.case, document.document)] = number
            for prefix in prefixes:
                buckets[prefix >> shift].append((prefix << _DOC_BITS) | number)
            self._stored += len(prefixes)
        for index, bucket in enumerate(buckets):
            buckets[index] = array("Q", sorted(bucket))

    def remove_case(self, case: str) -> int:
        """Forget every document of ``case``; returns how many."""
        names = [name for name in self._by_name if name[0] == case]
        for name in names:
            self._discard(name)
        return len(names)

    def _discard(self, name: tuple[str, str]) -> None:
        number = self._by_name.pop(name, None)
        if number is None:
            return
        entry = self._entries[number]
        self._entries[number] = None
        self._dead += entry.size if entry is not None else 0
        # Values of removed documents are skipped at lookup; drop them once they are a quarter.
        if self._dead * 4 > self._stored:
            self._compact()

    def _compact(self) -> None:
        entries = self._entries
        for index, bucket in enumerate(self._buckets):
            self._buckets[index] = array("Q", (v for v in bucket if entries[v & _DOC_MASK] is not None))
        self._stored -= self._dead
        self._dead = 0

    def statistics(self) -> IndexStatistics:
        return IndexStatistics(
            documents=len(self._by_name),
            cases=len({case for case, _ in self._by_name}),
            shingles=self._stored,
        )

    def __len__(self) -> int:
        return len(self._by_name)

    # -- matching ----------------------------------------------------------------------------------

    def overlaps(self, text: str) -> list[ContentOverlap]:
        """Every protected document ``text`` repeats any shingle of (strongest first)."""
        if not self._by_name:
            return []
        hashes = shingle_hashes(words(text), self._key)
        positions: dict[int, list[int]] = {}
        matched: dict[int, set[int]] = {}
        seen: dict[int, tuple[int, ...]] = {}
        for position, value in enumerate(hashes):
            prefix = value >> _DOC_BITS
            documents = seen.get(prefix)
            if documents is None:
                documents = seen[prefix] = self._lookup(prefix)
            for number in documents:
                positions.setdefault(number, []).append(position)
                matched.setdefault(number, set()).add(prefix)
        result = []
        for number, found in positions.items():
            entry = self._entries[number]
            if entry is None:
                continue
            result.append(
                ContentOverlap(
                    case=entry.case,
                    document=entry.document,
                    matched=len(matched[number]),
                    fraction=len(matched[number]) / entry.size,
                    longest_run=_longest_run(found) + SHINGLE_WORDS - 1,
                    person=entry.person,
                )
            )
        result.sort(key=lambda o: (-o.longest_run, -o.fraction, o.case, o.document))
        return result

    def _lookup(self, prefix: int) -> tuple[int, ...]:
        bucket = self._buckets[prefix >> (_BUCKET_SHIFT - _DOC_BITS)]
        low = prefix << _DOC_BITS
        index = bisect_left(bucket, low)
        found: list[int] = []
        high = low | _DOC_MASK
        size = len(bucket)
        entries = self._entries
        while index < size and bucket[index] <= high:
            number = bucket[index] & _DOC_MASK
            if entries[number] is not None:
                found.append(number)
            index += 1
        if len(found) >= COMMON_IN_DOCUMENTS:
            return ()
        return tuple(found)


def _longest_run(positions: list[int]) -> int:
    """Longest run of consecutive integers in an ascending list (1 for a single position)."""
    best = run = 1
    for previous, current in pairwise(positions):
        run = run + 1 if current == previous + 1 else 1
        best = max(best, run)
    return best
