"""The fingerprint hot path (shingles joined and hashed by C calls, spelling keys by dict lookup)
gives the same hashes and the same overlaps as the one-shingle-at-a-time code it replaced.

The replaced code is kept here, as it was, as the reference: stored fingerprints were made by it,
so every hash must stay the same, and every answer of the index with it.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from hashlib import blake2b
from itertools import pairwise

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.policy.fingerprint import (
    _BUCKET_SHIFT,
    _DOC_BITS,
    _DOC_MASK,
    COMMON_IN_DOCUMENTS,
    CURRENT_SCHEME,
    LEGACY_SCHEME,
    PIECE_WORDS,
    SCHEMES,
    FingerprintIndex,
    ProtectedDocument,
    Scheme,
    _runs,
    _spans,
    document_shingles,
    scheme_words,
    shingle_hashes,
    words,
)
from gateway.policy.model import ContentOverlap
from gateway.policy.spelling import spelling_key

KEY = bytes(range(32))


def reference_scheme_words(tokens: Sequence[str], scheme: Scheme = CURRENT_SCHEME) -> Sequence[str]:
    if not scheme.spelling:
        return tokens
    return [token if len(token) < 5 else spelling_key(token) for token in tokens]


def reference_joined(tokens: Sequence[str]) -> tuple[bytes, list[int]]:
    starts = [0]
    offset = 0
    for token in tokens:
        offset += (len(token) if token.isascii() else len(token.encode("utf-8"))) + 1
        starts.append(offset)
    return " ".join(tokens).encode("utf-8"), starts


def reference_shingle_hashes(tokens: Sequence[str], key: bytes, size: int) -> list[int]:
    if len(tokens) < size:
        return []
    copy = blake2b(key=key, digest_size=8).copy
    joined, starts = reference_joined(tokens)
    result: list[int] = []
    for start, end in zip(starts, starts[size:], strict=False):
        digest = copy()
        digest.update(joined[start : end - 1])
        result.append(int.from_bytes(digest.digest(), "big"))
    return result


class ReferenceIndex(FingerprintIndex):
    """The index with ``_overlaps`` as it was before the hot path was rewritten."""

    def _overlaps(self, tokens: list[str], scheme: Scheme) -> list[ContentOverlap]:
        if len(tokens) <= scheme.words:
            return []
        keyed = reference_scheme_words(tokens, scheme)
        joined, starts = reference_joined(keyed)
        copy = self._hasher.copy
        from_bytes = int.from_bytes
        bits = self._filter
        slot_shift = 64 - self._filter_bits
        byte_shift = slot_shift + 3
        candidates: dict[int, int] = {}
        for position, (start, end) in enumerate(zip(starts, starts[scheme.words :], strict=False)):
            digest = copy()
            digest.update(joined[start : end - 1])
            value = from_bytes(digest.digest(), "big")
            if bits[value >> byte_shift] >> ((value >> slot_shift) & 7) & 1:
                candidates[position] = value >> _DOC_BITS
        positions: dict[int, list[int]] = {}
        seen: dict[int, tuple[int, ...]] = {}
        buckets = self._buckets
        shift = _BUCKET_SHIFT - _DOC_BITS
        for position, prefix in candidates.items():
            documents = seen.get(prefix)
            if documents is None:
                bucket = buckets[prefix >> shift]
                index = bisect_left(bucket, prefix << _DOC_BITS)
                if index == len(bucket) or bucket[index] >> _DOC_BITS != prefix:
                    documents = seen[prefix] = ()
                else:
                    documents = seen[prefix] = self._reference_lookup(prefix, scheme.number)
            for number in documents:
                positions.setdefault(number, []).append(position)
        result = []
        for number, found in positions.items():
            entry = self._entries[number]
            if entry is None or all(b - a > 1 for a, b in pairwise(found)):
                continue
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

    def _reference_lookup(self, prefix: int, scheme: int) -> tuple[int, ...]:
        bucket = self._buckets[prefix >> (_BUCKET_SHIFT - _DOC_BITS)]
        low = prefix << _DOC_BITS
        index = bisect_left(bucket, low)
        found: list[int] = []
        high = low | _DOC_MASK
        size = len(bucket)
        entries = self._entries
        while index < size and bucket[index] <= high:
            number = bucket[index] & _DOC_MASK
            entry = entries[number]
            if entry is not None and entry.scheme == scheme:
                found.append(number)
            index += 1
        if len(found) >= COMMON_IN_DOCUMENTS:
            return ()
        return tuple(found)


# Words as ``words`` gives them (lower case, accents folded) and as other callers may pass them:
# spelling variants, non-ASCII letters, digits, and short and long words.
VOCABULARY = [
    "colour",
    "color",
    "organise",
    "organised",
    "organized",
    "travelled",
    "centre",
    "theatre",
    "dialogue",
    "defence",
    "programme",
    "behaviour",
    "a",
    "to",
    "he",
    "the",
    "tram",
    "hotel",
    "stop",
    "straße",
    "österreich",
    "naïve",
    "日本語",
    "привет",
    "2025",
    "x9",
    "committee",
    "followed",
]
tokens_of = st.lists(st.sampled_from(VOCABULARY) | st.text(min_size=1, max_size=12), max_size=40)


@given(tokens_of, st.sampled_from([1, 2, 4, 8]))
def test_shingle_hashes_are_the_reference_hashes(tokens: list[str], size: int) -> None:
    assert shingle_hashes(tokens, KEY, size) == reference_shingle_hashes(tokens, KEY, size)


@given(tokens_of)
def test_spelling_keys_are_the_reference_keys(tokens: list[str]) -> None:
    for scheme in SCHEMES.values():
        assert list(scheme_words(tokens, scheme)) == list(reference_scheme_words(tokens, scheme))


def test_a_word_with_a_line_break_is_hashed_as_the_reference_hashes_it() -> None:
    tokens = ["one", "two\nthree", "four", "five", "", "six", "seven\n"]
    assert shingle_hashes(tokens, KEY) == reference_shingle_hashes(tokens, KEY, 4)


def test_stored_fingerprints_are_the_reference_fingerprints() -> None:
    text = "He followed me from the venue to the tram stop, and the organisers' colour théâtre programme."
    for scheme in SCHEMES.values():
        expected = sorted(
            set(reference_shingle_hashes(reference_scheme_words(words(text), scheme), KEY, scheme.words))
        )
        assert list(document_shingles([text], KEY, scheme)) == expected


sentence = st.lists(st.sampled_from(VOCABULARY), min_size=0, max_size=30).map(" ".join)
document_words = st.lists(st.sampled_from(VOCABULARY), min_size=8, max_size=60)
# Which document, where in it and how many of its words, and the text's own words before them.
quoted_piece = st.tuples(st.integers(0, 5), st.integers(0, 20), st.integers(3, 40), sentence)


@settings(max_examples=100, deadline=None)
@given(
    documents=st.lists(document_words, min_size=1, max_size=6),
    pieces=st.lists(quoted_piece, min_size=1, max_size=5),
    legacy=st.booleans(),
    forget_other_case=st.booleans(),
    replace_first=st.booleans(),
    boilerplate=st.sampled_from([0, COMMON_IN_DOCUMENTS - 1, COMMON_IN_DOCUMENTS]),
)
def test_overlaps_are_the_reference_overlaps(
    documents: list[list[str]],
    pieces: list[tuple[int, int, int, str]],
    legacy: bool,
    forget_other_case: bool,
    replace_first: bool,
    boilerplate: int,
) -> None:
    new, reference = FingerprintIndex(KEY), ReferenceIndex(KEY)
    added = [
        # Documents of two cases, of either scheme, one replaced by another text under its id.
        ("other shelf" if number % 3 == 2 else "home shelf", f"doc{number}", " ".join(document), scheme)
        for number, document in enumerate(documents)
        for scheme in [LEGACY_SCHEME if legacy and number % 2 else CURRENT_SCHEME]
    ]
    if replace_first:
        added.append(("home shelf", "doc0", " ".join(reversed(documents[0])), CURRENT_SCHEME))
    # A footer many documents share: common, so never counted, once in COMMON_IN_DOCUMENTS of them.
    footer = " ".join(VOCABULARY[:12])
    added += [("lists", f"list{number}", footer, CURRENT_SCHEME) for number in range(boilerplate)]
    for case, name, text, scheme in added:
        shingles = document_shingles([text], KEY, scheme)
        for index in (new, reference):
            index.add(ProtectedDocument(case, name, None, shingles, scheme.number))
    if forget_other_case:
        for index in (new, reference):
            index.remove_case("other shelf")
    # A text quoting pieces of the documents between words of its own.
    parts = [footer] if boilerplate else []
    for which, start, length, own in pieces:
        document = documents[which % len(documents)]
        start %= len(document)
        parts += [own, " ".join(document[start : start + length])]
    text = "\n".join(parts)
    assert new.overlaps(text) == reference.overlaps(text)
