"""Fingerprints of protected content: words, keyed shingles, the index and the overlap it measures."""

from __future__ import annotations

import random
import re
import textwrap

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.policy.fingerprint import (
    COMMON_IN_DOCUMENTS,
    LEGACY_SCHEME,
    FingerprintIndex,
    ProtectedDocument,
    document_shingles,
    own_words,
    shingle_hashes,
    split_at_spans,
    words,
)
from gateway.policy.model import ContentOverlap, IdentityKind, Mention
from gateway.policy.normalize import normalize
from gateway.policy.passages import Passage, best_passage

KEY = bytes(range(32))
REPORT = (
    "On the second evening of the sprint he followed me from the venue to the tram stop, kept asking "
    "which hotel I was staying in, and when I said I would rather not tell him he laughed and said he "
    "would find out anyway because the organisers always book the same place for speakers."
)
UNRELATED = (
    "The committee met on Thursday to review the travel grant applications. We agreed to fund twelve "
    "people this year and to publish the criteria before the next round opens in the spring."
)


def index_with(*texts: str, key: bytes = KEY) -> FingerprintIndex:
    index = FingerprintIndex(key)
    for number, text in enumerate(texts):
        index.add(
            ProtectedDocument("home shelf", f"doc{number}", "quiet-heron", document_shingles([text], key))
        )
    return index


def reflow(text: str, width: int, prefix: str = "") -> str:
    return "\n".join(prefix + line for line in textwrap.wrap(text, width))


def test_words_drop_punctuation_quote_markers_and_case() -> None:
    assert words("> > Hello, World!\n>  it's  ME") == ["hello", "world", "it", "s", "me"]


def test_shingles_depend_on_the_key() -> None:
    tokens = words(REPORT)
    assert shingle_hashes(tokens, KEY) != shingle_hashes(tokens, bytes(32))
    assert len(shingle_hashes(tokens, KEY)) == len(tokens) - 3
    assert shingle_hashes(tokens[:3], KEY) == []


@pytest.mark.parametrize(
    "copy",
    [
        pytest.param(REPORT, id="verbatim"),
        pytest.param(reflow(REPORT, 40), id="reflowed-40"),
        pytest.param(reflow(REPORT, 72), id="reflowed-72"),
        pytest.param(reflow(REPORT, 60, "> "), id="quoted"),
        pytest.param(reflow(REPORT, 50, "> > "), id="quoted-twice"),
        pytest.param(reflow(REPORT, 50, ">> "), id="quoted-compact"),
        pytest.param(REPORT.upper().replace(",", " ,"), id="case-and-spacing"),
        pytest.param("Dear moderators,\n\nfor context: " + REPORT + "\n\nRegards", id="embedded"),
    ],
)
def test_copies_of_a_protected_message_overlap_completely(copy: str) -> None:
    (overlap,) = index_with(REPORT).overlaps(copy)
    assert overlap.case == "home shelf" and overlap.person == "quiet-heron"
    assert overlap.fraction == 1.0
    assert overlap.longest_run == len(words(REPORT))


def test_a_passage_reports_its_length_and_share() -> None:
    passage = " ".join(REPORT.split()[10:30])  # 20 words from the middle
    (overlap,) = index_with(REPORT).overlaps(f"Summary of the incident. {passage} That is all we know.")
    assert overlap.longest_run == 20
    assert overlap.matched == 20 - 3
    assert overlap.spans == ((4, 24),)  # after "Summary of the incident"
    assert overlap.words == 4 + 20 + 5
    assert 0.2 < overlap.fraction < 0.4


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(UNRELATED, id="unrelated"),
        pytest.param("thank you for your message", id="thanks"),
        pytest.param("please let me know if you have any questions", id="common-phrase-9-words"),
        pytest.param("which hotel I was staying in", id="shared-6-words"),
        pytest.param("", id="empty"),
    ],
)
def test_unrelated_text_and_short_phrases_barely_overlap(text: str) -> None:
    index = index_with(REPORT + " Please let me know if you have any questions.")
    assert all(overlap.longest_run < 12 for overlap in index.overlaps(text))


def test_a_different_key_finds_nothing() -> None:
    index = index_with(REPORT)
    other = FingerprintIndex(bytes(32))
    other.add(ProtectedDocument("home shelf", "x", None, document_shingles([REPORT], bytes(32))))
    assert index.overlaps(REPORT) and other.overlaps(REPORT)
    stranger = FingerprintIndex(KEY)
    stranger.add(ProtectedDocument("home shelf", "x", None, document_shingles([REPORT], bytes(32))))
    assert stranger.overlaps(REPORT) == []


def test_replacing_and_removing_documents() -> None:
    index = index_with(REPORT, UNRELATED)
    assert {o.document for o in index.overlaps(REPORT + " " + UNRELATED)} == {"doc0", "doc1"}
    index.add(
        ProtectedDocument("home shelf", "doc0", None, document_shingles(["something else entirely"], KEY))
    )
    assert [o.document for o in index.overlaps(REPORT)] == []
    index.add(ProtectedDocument("other case", "doc9", None, document_shingles([REPORT], KEY)))
    assert [o.case for o in index.overlaps(REPORT)] == ["other case"]
    assert index.remove_case("other case") == 1
    assert index.overlaps(REPORT) == []
    assert len(index) == 2


def test_add_many_equals_adding_one_by_one() -> None:
    documents = [
        ProtectedDocument("c", f"d{n}", None, document_shingles([f"{REPORT} variant number {n}"], KEY))
        for n in range(5)
    ]
    one = FingerprintIndex(KEY)
    for document in documents:
        one.add(document)
    many = FingerprintIndex(KEY)
    many.add_many(documents)
    assert one.overlaps(REPORT) == many.overlaps(REPORT)
    assert one.statistics() == many.statistics()


def test_boilerplate_shared_by_many_documents_does_not_count() -> None:
    disclaimer = "this email and any attachments are confidential and intended solely for the addressee"
    index = FingerprintIndex(KEY)
    for n in range(COMMON_IN_DOCUMENTS):
        index.add(ProtectedDocument("c", f"d{n}", None, document_shingles([f"note {n} {disclaimer}"], KEY)))
    assert index.overlaps(disclaimer) == []


def test_own_words_leave_out_quotes_and_signature() -> None:
    body = "I agree, thank you.\nOn Monday, Ada wrote:\n> Our template text here\n> more\n-- \nRobin\nphone"
    assert own_words(body) == "I agree, thank you."
    assert own_words("Hi\n-----Original Message-----\nFrom: x") == "Hi"


def test_key_length_is_checked() -> None:
    with pytest.raises(ValueError):
        FingerprintIndex(b"short")


def test_spelling_variants_are_the_same_words() -> None:
    british = (
        "The organisers travelled to the centre to discuss his behaviour, and the programme of the dialogue "
        "about our defence of the favourite colour."
    )
    american = (
        "The organizers traveled to the center to discuss his behavior, and the program of the dialog "
        "about our defense of the favorite color."
    )
    (overlap,) = index_with(british).overlaps(american)
    assert overlap.fraction == 1.0 and overlap.longest_run == len(words(american))


def test_an_edited_copy_is_covered_except_for_the_edits() -> None:
    tokens = words(REPORT)
    tokens[10] = "purple"  # substituted
    del tokens[25]  # dropped
    tokens.insert(40, "allegedly")  # inserted
    (overlap,) = index_with(REPORT).overlaps(" ".join(tokens))
    assert overlap.spans == ((0, 10), (11, 25), (25, 40), (41, len(tokens)))
    assert overlap.longest_run == 15


def overlap_with(spans: tuple[tuple[int, int], ...], total: int) -> ContentOverlap:
    return ContentOverlap("c", "d", 0, 0.0, 0, spans=spans, words=total)


@pytest.mark.parametrize(
    ("spans", "total", "expected"),
    [
        pytest.param(((0, 16),), 16, Passage(0, 16, 16), id="exact"),
        pytest.param(((0, 15),), 15, None, id="shorter-than-the-window"),
        pytest.param(((3, 10), (11, 20)), 30, Passage(3, 20, 16), id="one-word-changed"),
        pytest.param(((0, 12),), 30, Passage(0, 12, 12), id="an-exact-run-of-12"),
        pytest.param(((0, 6), (8, 14), (16, 22)), 22, Passage(0, 22, 18), id="two-words-changed-twice"),
        pytest.param(((0, 5), (9, 14), (18, 23)), 23, None, id="too-many-changes"),
        pytest.param(((0, 4), (5, 9), (10, 14), (15, 19)), 19, None, id="runs-of-4-do-not-count"),
        pytest.param(((0, 11), (40, 51)), 60, None, id="far-apart"),
        pytest.param(((0, 12), (40, 60)), 60, Passage(40, 60, 20), id="the-longer-one"),
    ],
)
def test_best_passage(spans: tuple[tuple[int, int], ...], total: int, expected: Passage | None) -> None:
    assert best_passage(overlap_with(spans, total), 16, 0.75) == expected


def test_split_at_spans_keeps_each_piece_apart() -> None:
    inside, outside = split_at_spans("Hello, Maya Lind was there. Then Sam came: bye!", [(1, 4), (5, 7)])
    assert inside == ["maya lind was", "then sam"]
    assert outside.split("\n") == ["hello, ", " there. ", " came: bye!"]


def test_own_words_leave_out_attributions_and_closing_footers() -> None:
    body = (
        "He followed me to the tram stop.\n\nThis is confidential, please.\n\nI am still upset.\n"
        "On Mon, 3 Mar 2025 at 14:32, Ada Quill <\nada@example.org> wrote:\n> our earlier message\n\n"
        "You are currently subscribed to events as robin@example.net.\nTo unsubscribe, write to x.\n\n"
        "CONFIDENTIALITY NOTICE: this email is intended solely for the addressee."
    )
    kept = own_words(body)
    assert "tram stop" in kept and "confidential, please" in kept and "still upset" in kept
    assert "wrote" not in kept and "ada@example" not in kept
    assert "subscribed" not in kept and "NOTICE" not in kept
    assert own_words("Le lun. 3 mars 2025, Ada a écrit :\nMerci") == "Merci"
    report = "Hi,\n\nHe followed me to the tram stop and I am still upset. Please keep this confidential."
    assert own_words(report) == report
    told = "On Saturday he came up to me at the venue again and\nhe wrote:\nyou will regret this"
    assert own_words(told) == told


def test_documents_of_the_exact_8_word_scheme_are_still_matched() -> None:
    index = FingerprintIndex(KEY)
    legacy = document_shingles([REPORT], KEY, LEGACY_SCHEME)
    index.add(ProtectedDocument("home shelf", "old", "quiet-heron", legacy, scheme=LEGACY_SCHEME.number))
    index.add(ProtectedDocument("home shelf", "new", "quiet-heron", document_shingles([UNRELATED], KEY)))
    assert [o.document for o in index.overlaps(REPORT)] == ["old"]
    (overlap,) = index.overlaps(REPORT.replace("tram", "bus"))
    assert overlap.document == "old" and best_passage(overlap, 16, 0.75) is not None
    assert [o.document for o in index.overlaps(UNRELATED)] == ["new"]


def test_named_by_gathers_the_mentions_of_an_authors_documents() -> None:
    maya = Mention("home shelf", "w1", IdentityKind.NAME)
    sam = Mention("home shelf", "w2", IdentityKind.ADDRESS)
    index = FingerprintIndex(KEY)
    shingles = document_shingles([REPORT], KEY)
    index.add(ProtectedDocument("home shelf", "a", "quiet-heron", shingles, mentions=frozenset({maya})))
    index.add(ProtectedDocument("home shelf", "b", "quiet-heron", shingles, mentions=frozenset({sam})))
    index.add(ProtectedDocument("home shelf", "c", "amber-finch", shingles, mentions=frozenset({sam})))
    assert index.named_by("home shelf", "quiet-heron") == {maya, sam}
    index.add(ProtectedDocument("home shelf", "b", "quiet-heron", shingles))  # learnt again
    assert index.named_by("home shelf", "quiet-heron") == {maya}
    index.remove_case("home shelf")
    assert index.named_by("home shelf", "amber-finch") == frozenset()


@given(st.text())
def test_words_are_the_runs_of_word_characters_of_the_normalised_text(text: str) -> None:
    assert words(text) == re.findall(r"\w+", normalize(text))


def test_a_document_learnt_after_a_text_was_looked_up_is_found_for_that_text() -> None:
    index = index_with(UNRELATED)
    assert index.overlaps(REPORT) == []
    index.add(ProtectedDocument("home shelf", "later", "quiet-heron", document_shingles([REPORT], KEY)))
    assert [overlap.document for overlap in index.overlaps(REPORT)] == ["later"]
    index.remove_case("home shelf")
    assert index.overlaps(REPORT) == []


def test_a_text_asked_about_again_gets_the_same_answer() -> None:
    index = index_with(REPORT)
    first = index.overlaps(REPORT)
    assert first and index.overlaps(reflow(REPORT, 40, "> ")) == first
    first.clear()  # a caller's list is its own
    assert index.overlaps(REPORT) != []


def test_documents_added_one_by_one_past_the_smallest_filter_are_all_found() -> None:
    # 12,000 shingles: more than the smallest filter is sized for, so it grows on the way.
    rng = random.Random(5)
    texts = [" ".join(f"w{rng.randrange(10**6)}" for _ in range(600)) for _ in range(20)]
    index = index_with(*texts)
    assert [index.overlaps(text)[0].document for text in texts] == [f"doc{n}" for n in range(20)]


def test_after_most_documents_are_removed_the_rest_are_still_found_and_the_removed_are_not() -> None:
    rng = random.Random(6)
    texts = [" ".join(f"w{rng.randrange(10**6)}" for _ in range(300)) for _ in range(8)]
    index = FingerprintIndex(KEY)
    for number, text in enumerate(texts):
        case = "home shelf" if number < 6 else "other shelf"
        index.add(ProtectedDocument(case, f"doc{number}", None, document_shingles([text], KEY)))
    assert index.remove_case("home shelf") == 6  # most of the index: compacted
    assert [bool(index.overlaps(text)) for text in texts] == [False] * 6 + [True] * 2
