"""Fingerprints of protected content: keyed hashes of word shingles, and an index that measures overlap.

A text becomes a sequence of words: :func:`~gateway.policy.normalize.normalize` (case, compatibility
forms, accents, invisible characters, look-alikes, whitespace), then every run of letters and
digits is a word and everything else (punctuation, ``>`` quote markers, line breaks) separates
words. So the same words reflowed to another line width, quoted with ``> `` or ``> > ``, rendered
from HTML or decoded from any transfer encoding give the same sequence.

Every run of :data:`SHINGLE_WORDS` consecutive words (a shingle), each word replaced by its
:func:`~gateway.policy.spelling.spelling_key` (British/American variants, doubled letters), is
hashed with keyed BLAKE2b (64-bit digests). The key is a per-installation secret, so a stolen
fingerprint file cannot be checked against guessed phrases offline. Only the hashes are kept,
never the words. Documents learnt before version 2 (``scheme`` 1) have 8-word shingles of the
words as written; they are still matched, with their own shingles, until learnt again.

:class:`FingerprintIndex` holds every shingle of every protected document (all shingles, not a
winnowed sample, so the overlap it reports is exact) in 8 bytes per shingle: 4096 sorted
``array('Q')`` buckets whose values carry the top 40 bits of the hash and a 24-bit document number.
For a text it reports, per document, the *spans* of the text's words that lie in a run of
shingles the document also has (word for word, after normalisation): a changed, inserted or
dropped word breaks the shingles around it but leaves the words on either side covered, so
``passages.best_passage`` can judge a stretch of text by the share of its words that are covered.

A lookup costs one keyed hash per shingle of the text and, for most shingles, one bit test: a bit
filter over the hashes' top bits (16 bits of filter per held shingle, up to 16 MiB) says which are in
no document without searching a bucket, so the time per text does not grow with the documents
held. Answers for the last few texts are kept by a digest of their words: a message's HTML
alternative usually has the words of its plain-text part, and several rules ask about one text.
"""

from __future__ import annotations

import re
import sys
from array import array
from bisect import bisect_left, bisect_right, insort
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from hashlib import blake2b
from itertools import pairwise

from gateway.policy.model import ContentOverlap, Mention, ParsedMessage, SegmentKind
from gateway.policy.normalize import normalize
from gateway.policy.spelling import spelling_key

KEY_BYTES = 32


@dataclass(frozen=True)
class Scheme:
    """How a document's shingles were made: words per shingle, and whether spelling keys are used."""

    number: int
    words: int
    spelling: bool


LEGACY_SCHEME = Scheme(1, 8, spelling=False)  # exact 8-word runs (fingerprints of version 1)
CURRENT_SCHEME = Scheme(2, 4, spelling=True)
SCHEMES = {scheme.number: scheme for scheme in (LEGACY_SCHEME, CURRENT_SCHEME)}
SHINGLE_WORDS = CURRENT_SCHEME.words
# Verbatim pieces at least this long count towards the share of a document a text repeats
# (shorter ones are too often common phrases).
PIECE_WORDS = 8
# In a passage, only verbatim stretches of at least this many words count as repeated: a lone
# 4-word sequence is too often a common phrase ("please do not reply"), two overlapping ones less so.
SPAN_WORDS = 5

_WORD = re.compile(r"\w+")
# ASCII text: every character ``\w`` does not match becomes a space, and str.split() then gives
# what _WORD.findall gives, in a third of the time.
_ASCII_NON_WORD = {code: " " for code in range(128) if not re.match(r"\w", chr(code))}
_DOC_BITS = 24
_LITTLE_ENDIAN = sys.byteorder == "little"
_DOC_MASK = (1 << _DOC_BITS) - 1
_BUCKET_SHIFT = 52  # the top 12 bits of a hash choose one of 4096 buckets
# The filter: one bit for each value of a hash's top bits, set when some held shingle has them, so
# a text's shingle whose bit is clear (almost all of them) is answered without searching a bucket.
# At least _FILTER_SPARSENESS bits per held shingle (2 MiB of filter per million shingles), so
# about one absent shingle in that many still searches; at most 2**27 bits (16 MiB).
_FILTER_SPARSENESS = 16
_FILTER_MIN_BITS = 16
_FILTER_MAX_BITS = 27
# Recent texts' answers, by a digest of their words: a message's HTML alternative usually has the
# words of its plain-text part, and several rules ask about the same text.
_RECENT_ANSWERS = 16
MAX_DOCUMENTS = _DOC_MASK  # document numbers are never reused (the index is rebuilt at start)
# A shingle found in this many protected documents is boilerplate (a disclaimer, a mailing-list
# footer), not anyone's own words: it is not counted.
COMMON_IN_DOCUMENTS = 50

# Where the sender's own words end in a reply: a signature ("-- "), Outlook's original-message
# separators. Quoted lines ("> ...") are dropped wherever they are.
_END_OF_OWN_TEXT = re.compile(r"^(?:--\s*|-{3,}\s*original message\s*-{3,}|_{20,})$", re.IGNORECASE)
# Attribution lines ("On Mon, 3 Mar 2025, Ada Quill <ada@example.org> wrote:") are the mail
# client's words, repeated by every reply that quotes the same message: never the author's.
_ATTRIBUTION_END = re.compile(
    r"(?:\bwrote|\ba [ée]crit|\bschrieb|\bescribi[óo]|\bha scritto|\bschreef|\bnapisa[łl]?)\b[^:]{0,40}:\s*$",
    re.IGNORECASE,
)
_ATTRIBUTION_START = re.compile(r"^(?:on|le|am|el|il|op|w dniu)\b", re.IGNORECASE)
_ATTRIBUTION_DETAIL = re.compile(r"@|\d:\d\d")
# A closing paragraph that is a list footer or a legal disclaimer, which the same list or employer
# adds to everyone's mail: not the author's words, and shared with unrelated mail. Both signs are
# needed, so a reporter's own closing words ("please keep this confidential") are still learnt.
_FOOTER_SIGNS = (
    (
        re.compile(r"\bunsubscribe", re.IGNORECASE),
        re.compile(r"subscribed|mailing list|this (?:list|group)", re.IGNORECASE),
    ),
    (
        re.compile(r"intended (?:solely |only |exclusively )?(?:for|recipient)|\baddressee", re.IGNORECASE),
        re.compile(r"confidential|privileged", re.IGNORECASE),
    ),
)


def words(text: str) -> list[str]:
    """The words of ``text`` in canonical form; punctuation and quote markers only separate them."""
    folded = normalize(text)
    if folded.isascii():
        return folded.translate(_ASCII_NON_WORD).split()
    return _WORD.findall(folded)


def split_at_spans(text: str, spans: Sequence[tuple[int, int]]) -> tuple[list[str], str]:
    """The normalised text of ``text`` inside each of the word ``spans`` (sorted, as ``overlaps``
    reports them), and the rest joined by line breaks (a name cut by a span may join up there:
    the rest is where identities are *not* allowed, so that errs on the safe side)."""
    folded = normalize(text)
    bounds = [match.span() for match in _WORD.finditer(folded)]
    inside: list[str] = []
    outside: list[str] = []
    position = 0
    for start, end in spans:
        if start >= len(bounds) or end <= start:
            continue
        low = max(position, bounds[start][0])
        high = bounds[min(end, len(bounds)) - 1][1]
        if high <= low:
            continue
        outside.append(folded[position:low])
        inside.append(folded[low:high])
        position = high
    outside.append(folded[position:])
    return inside, "\n".join(outside)


def own_words(text: str) -> str:
    """The part of a plain-text mail body its author wrote: without quoted lines, attribution
    lines ("On ..., Ada wrote:"), signature, and closing list footers or legal disclaimers."""
    kept: list[str] = []
    for line in text.splitlines():
        stripped = line.strip()
        if _END_OF_OWN_TEXT.match(stripped):
            break
        if stripped.startswith(">"):
            continue
        if _ATTRIBUTION_END.search(stripped) and len(stripped) <= 250:
            if _ATTRIBUTION_START.match(stripped):
                continue
            previous = kept[-1].strip() if kept else ""
            # An attribution line the mail client wrapped in two: it names an address or a time.
            if (
                _ATTRIBUTION_START.match(previous)
                and len(previous) + len(stripped) <= 250
                and _ATTRIBUTION_DETAIL.search(f"{previous} {stripped}")
            ):
                kept.pop()
                continue
        kept.append(line)
    paragraphs = re.split(r"\n\s*\n", "\n".join(kept).strip())
    while len(paragraphs) > 1 and any(
        first.search(paragraphs[-1]) and second.search(paragraphs[-1]) for first, second in _FOOTER_SIGNS
    ):
        paragraphs.pop()
    return "\n\n".join(paragraphs)


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


class _SpellingKeys(dict[str, str]):
    """Words' spelling keys, looked up by ``dict.__getitem__`` (a C call) from ``map``."""

    def __missing__(self, word: str) -> str:
        if len(self) >= _SPELLING_KEYS_KEPT:
            self.clear()  # a bound on memory; the words of the next texts come back at once
        key = self[word] = spelling_key(word)
        return key


_SPELLING_KEYS_KEPT = 65536
_spelling_keys = _SpellingKeys()


def scheme_words(tokens: Sequence[str], scheme: Scheme = CURRENT_SCHEME) -> Sequence[str]:
    """``tokens`` as ``scheme`` hashes them (spelling keys in the current scheme)."""
    if not scheme.spelling:
        return tokens
    # spelling_key leaves words under 5 letters as they are.
    return list(map(_spelling_keys.__getitem__, tokens))


def shingle_hashes(tokens: Sequence[str], key: bytes, size: int = SHINGLE_WORDS) -> list[int]:
    """The keyed 64-bit hash of every run of ``size`` consecutive words, in text order."""
    return _hashes(_shingle_bytes(tokens, size), _hasher(key)).tolist()


def _shingle_bytes(tokens: Sequence[str], size: int) -> list[bytes]:
    """Every run of ``size`` consecutive words joined by spaces, UTF-8 encoded, in text order.

    The runs are joined and split by C calls (``str.join`` over ``zip``, ``bytes.split``) rather
    than sliced one by one in Python: a shingle's bytes are the same either way.
    """
    count = len(tokens) - size + 1
    if count <= 0:
        return []
    listed = list(tokens)
    runs = zip(*(listed[offset:] for offset in range(size)), strict=False)
    pieces = "\n".join(map(" ".join, runs)).encode("utf-8").split(b"\n")
    if len(pieces) == count:
        return pieces
    # A word with a line break in it (never one of ``words``'s): one shingle at a time.
    return [" ".join(listed[start : start + size]).encode("utf-8") for start in range(count)]


def _hashes(pieces: list[bytes], hasher: blake2b) -> array[int]:
    """The keyed hash of each piece as a 64-bit integer (its 8 digest bytes read big-endian)."""
    copy = hasher.copy
    digests: list[bytes] = []
    append = digests.append
    for piece in pieces:
        digest = copy()
        digest.update(piece)
        append(digest.digest())
    values = array("Q", b"".join(digests))
    if _LITTLE_ENDIAN:
        values.byteswap()
    return values


def document_shingles(texts: Iterable[str], key: bytes, scheme: Scheme = CURRENT_SCHEME) -> tuple[int, ...]:
    """Every distinct shingle hash of a document made of ``texts`` (each text shingled on its own)."""
    found: set[int] = set()
    for text in texts:
        found.update(shingle_hashes(scheme_words(words(text), scheme), key, scheme.words))
    return tuple(sorted(found))


@dataclass(frozen=True)
class ProtectedDocument:
    """One protected document as the index knows it: who and where it is from, and its shingles."""

    case: str
    document: str  # an opaque id, unique within the case (e.g. a Message-ID digest)
    person: str | None  # the protected person who wrote it, when known
    shingles: Sequence[int]  # distinct keyed shingle hashes
    scheme: int = CURRENT_SCHEME.number
    # The protected people (ids and kinds, never the identities) the document names.
    mentions: frozenset[Mention] = frozenset()


@dataclass(frozen=True)
class _Entry:
    case: str
    document: str
    person: str | None
    size: int  # distinct shingles (40-bit prefixes)
    scheme: int
    mentions: frozenset[Mention]


@dataclass(frozen=True)
class IndexStatistics:
    """Size of the index: documents, shingles held (including those of replaced documents not yet
    compacted away)."""

    documents: int
    cases: int
    shingles: int


class FingerprintIndex:
    """Every protected document's shingles, in memory; answers ``overlaps(text)`` (ContentFingerprints).

    Not thread-safe: the owner (``gateway.state.fingerprints.FingerprintStore``) serialises calls.
    """

    def __init__(self, key: bytes) -> None:
        self._hasher = _hasher(key)  # validates the key now, not at the first message; copied per shingle
        self._buckets = [array("Q") for _ in range(1 << (64 - _BUCKET_SHIFT))]
        self._entries: list[_Entry | None] = []
        self._by_name: dict[tuple[str, str], int] = {}
        self._by_author: dict[tuple[str, str], set[int]] = {}
        self._schemes: dict[int, int] = {}  # scheme number -> live documents
        self._stored = 0  # values in the buckets
        self._dead = 0  # values belonging to removed documents
        self._filter_bits = _FILTER_MIN_BITS
        self._filter = bytearray(1 << (_FILTER_MIN_BITS - 3))
        self._recent: dict[bytes, list[ContentOverlap]] = {}

    # -- building -----------------------------------------------------------------------------------

    def add(self, document: ProtectedDocument) -> None:
        """Add (or replace: same case and id) a document; usable at once."""
        self._discard((document.case, document.document))
        if len(self._entries) >= MAX_DOCUMENTS:
            raise OverflowError("the fingerprint index is full; restart the gateway to renumber it")
        number, prefixes = self._register(document)
        buckets = self._buckets
        shift = _BUCKET_SHIFT - _DOC_BITS
        for prefix in sorted(prefixes):
            insort(buckets[prefix >> shift], (prefix << _DOC_BITS) | number)
        if (
            self._filter_bits < _FILTER_MAX_BITS
            and self._stored * _FILTER_SPARSENESS > 1 << self._filter_bits
        ):
            self._build_filter()  # grown past its size: a larger filter, built once per doubling
        else:
            self._mark(prefix << _DOC_BITS for prefix in prefixes)

    def add_many(self, documents: Iterable[ProtectedDocument]) -> None:
        """Add many documents at once (start-up): appends, then sorts each bucket once."""
        buckets = self._buckets
        shift = _BUCKET_SHIFT - _DOC_BITS
        for document in documents:
            self._discard((document.case, document.document))
            if len(self._entries) >= MAX_DOCUMENTS:
                raise OverflowError("the fingerprint index is full")
            number, prefixes = self._register(document)
            for prefix in prefixes:
                buckets[prefix >> shift].append((prefix << _DOC_BITS) | number)
        for index, bucket in enumerate(buckets):
            buckets[index] = array("Q", sorted(bucket))
        self._build_filter()

    def _register(self, document: ProtectedDocument) -> tuple[int, set[int]]:
        if document.scheme not in SCHEMES:
            raise ValueError(f"unknown fingerprint scheme {document.scheme}")
        self._recent.clear()
        number = len(self._entries)
        prefixes = {value >> _DOC_BITS for value in document.shingles}
        self._entries.append(
            _Entry(
                document.case,
                document.document,
                document.person,
                len(prefixes),
                document.scheme,
                document.mentions,
            )
        )
        self._by_name[(document.case, document.document)] = number
        if document.person is not None:
            self._by_author.setdefault((document.case, document.person), set()).add(number)
        self._schemes[document.scheme] = self._schemes.get(document.scheme, 0) + 1
        self._stored += len(prefixes)
        return number, prefixes

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
        self._recent.clear()
        entry = self._entries[number]
        self._entries[number] = None
        if entry is not None:
            self._dead += entry.size
            self._schemes[entry.scheme] -= 1
            if entry.person is not None:
                self._by_author.get((entry.case, entry.person), set()).discard(number)
        # Values of removed documents are skipped at lookup; drop them once they are a quarter.
        if self._dead * 4 > self._stored:
            self._compact()

    def _compact(self) -> None:
        entries = self._entries
        for index, bucket in enumerate(self._buckets):
            self._buckets[index] = array("Q", (v for v in bucket if entries[v & _DOC_MASK] is not None))
        self._stored -= self._dead
        self._dead = 0
        self._build_filter()

    def _build_filter(self) -> None:
        """Size the filter for the shingles held and set their bits (drops removed documents' bits)."""
        bits = _FILTER_MIN_BITS
        while bits < _FILTER_MAX_BITS and 1 << bits < self._stored * _FILTER_SPARSENESS:
            bits += 1
        self._filter_bits = bits
        self._filter = bytearray(1 << (bits - 3))
        for bucket in self._buckets:
            self._mark(bucket)

    def _mark(self, values: Iterable[int]) -> None:
        shift = 64 - self._filter_bits
        bits = self._filter
        for slot in {value >> shift for value in values}:
            bits[slot >> 3] |= 1 << (slot & 7)

    def statistics(self) -> IndexStatistics:
        return IndexStatistics(
            documents=len(self._by_name),
            cases=len({case for case, _ in self._by_name}),
            shingles=self._stored,
        )

    def __len__(self) -> int:
        return len(self._by_name)

    # -- matching ----------------------------------------------------------------------------------

    def named_by(self, case: str, person: str) -> frozenset[Mention]:
        """The protected people that the documents ``person`` of ``case`` wrote name."""
        found: set[Mention] = set()
        for number in self._by_author.get((case, person), ()):
            entry = self._entries[number]
            if entry is not None:
                found.update(entry.mentions)
        return frozenset(found)

    def overlaps(self, text: str) -> list[ContentOverlap]:
        """Every protected document ``text`` repeats any shingle of (strongest first)."""
        if not self._by_name:
            return []
        tokens = words(text)
        # The answer depends only on the words (and the index, whose changes empty this memo).
        key = blake2b(" ".join(tokens).encode("utf-8"), digest_size=16).digest()
        known = self._recent.get(key)
        if known is not None:
            return list(known)
        result = []
        for number, live in sorted(self._schemes.items()):
            if live:
                result.extend(self._overlaps(tokens, SCHEMES[number]))
        result.sort(key=lambda o: (-o.longest_run, -o.fraction, o.case, o.document))
        if len(self._recent) >= _RECENT_ANSWERS:
            self._recent = dict(list(self._recent.items())[_RECENT_ANSWERS // 2 :])  # the newer half
        self._recent[key] = result
        return list(result)

    def _overlaps(self, tokens: list[str], scheme: Scheme) -> list[ContentOverlap]:
        if len(tokens) <= scheme.words:
            return []  # one shingle at most, and a lone shingle is never reported (most headers)
        values = _hashes(_shingle_bytes(scheme_words(tokens, scheme), scheme.words), self._hasher)
        bits = self._filter
        slot_shift = 64 - self._filter_bits
        byte_shift = slot_shift + 3
        # Most shingles of most texts are in no document: the filter says so with one bit test,
        # and only those that may be in one are kept (with their position).
        candidates = {
            position: value >> _DOC_BITS
            for position, value in enumerate(values)
            if bits[value >> byte_shift] >> ((value >> slot_shift) & 7) & 1
        }
        positions: dict[int, list[int]] = {}
        seen: dict[int, tuple[int, ...]] = {}
        buckets = self._buckets
        shift = _BUCKET_SHIFT - _DOC_BITS
        # No removed document's values are held and every live document is of this scheme: each
        # value found counts, without looking at its document.
        every_value = not self._dead and sum(1 for live in self._schemes.values() if live) == 1
        for position, prefix in candidates.items():
            documents = seen.get(prefix)
            if documents is None:
                # A bit another shingle set: search the bucket, without a call when it is not there.
                bucket = buckets[prefix >> shift]
                index = bisect_left(bucket, prefix << _DOC_BITS)
                if index == len(bucket) or bucket[index] >> _DOC_BITS != prefix:
                    documents = seen[prefix] = ()
                else:
                    documents = seen[prefix] = self._lookup(bucket, index, prefix, scheme.number, every_value)
            for number in documents:
                positions.setdefault(number, []).append(position)
        result = []
        for number, found in positions.items():
            entry = self._entries[number]
            if entry is None or len(found) < 2 or all(b - a > 1 for a, b in pairwise(found)):
                continue  # lone shingles only: common phrases, below every threshold
            runs = _runs(found)
            longest = max(last - first for first, last in runs) + scheme.words
            pieces = {
                candidates[position]
                for first, last in runs
                if last - first + scheme.words >= PIECE_WORDS
                for position in range(first, last + 1)
            }
            result.append(
                ContentOverlap(
                    case=entry.case,
                    document=entry.document,
                    matched=len(pieces),
                    fraction=len(pieces) / entry.size,
                    longest_run=longest,
                    person=entry.person,
                    spans=_spans(runs, scheme.words),
                    words=len(tokens),
                )
            )
        return result

    def _lookup(
        self, bucket: array[int], index: int, prefix: int, scheme: int, every_value: bool
    ) -> tuple[int, ...]:
        """The live documents of ``scheme`` that have the shingle ``prefix`` (none if it is common),
        whose values start at ``bucket[index]``."""
        end = bisect_right(bucket, (prefix << _DOC_BITS) | _DOC_MASK, index)
        if every_value:
            if end - index >= COMMON_IN_DOCUMENTS:
                return ()
            return tuple(value & _DOC_MASK for value in bucket[index:end])
        entries = self._entries
        found: list[int] = []
        for value in bucket[index:end]:
            number = value & _DOC_MASK
            entry = entries[number]
            if entry is not None and entry.scheme == scheme:
                found.append(number)
        if len(found) >= COMMON_IN_DOCUMENTS:
            return ()
        return tuple(found)


def _runs(positions: list[int]) -> list[tuple[int, int]]:
    """Maximal runs of consecutive integers (first, last) in an ascending list."""
    runs = []
    first = last = positions[0]
    for position in positions[1:]:
        if position != last + 1:
            runs.append((first, last))
            first = position
        last = position
    runs.append((first, last))
    return runs


def _spans(runs: list[tuple[int, int]], size: int) -> tuple[tuple[int, int], ...]:
    """The word spans [start, end) the shingle runs cover, overlapping ones merged.

    Spans that only touch stay apart: the text joins two pieces of the document there (a dropped
    word, or pieces from two places), and a name must not be read across the seam.
    """
    spans: list[tuple[int, int]] = []
    for first, last in runs:
        end = last + size
        if spans and first < spans[-1][1]:
            spans[-1] = (spans[-1][0], max(spans[-1][1], end))
        else:
            spans.append((first, end))
    return tuple(spans)
