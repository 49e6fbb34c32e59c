"""protected-content, generated: edited copies of a protected passage are found; shuffled fragments are not.

With the default thresholds (``passage_words`` 16, ``min_share`` 0.75, runs of 5 words), a copy
of at least 16 words of a protected message is a finding whatever its edits (a word substituted,
inserted or dropped, or a letter changed inside a word) as long as at least 5 unchanged words
separate two edits. Fragments of the same message of at most 4 words, put in another order, are
never a finding.
"""

from __future__ import annotations

import itertools

from hypothesis import assume, given
from hypothesis import strategies as st

from gateway.policy.fingerprint import FingerprintIndex, ProtectedDocument, document_shingles, words
from gateway.policy.matcher import IdentityMatcher
from gateway.policy.mime import parse_message
from gateway.policy.model import Envelope, RuleContext
from gateway.policy.rules import protected_content
from gateway.policy.rules.protected_content import Params

KEY = bytes(range(3, 35))
OUTSIDER = "mods@forum.example.com"
# The protected message's words, and unrelated words for edits and surrounding text: the two sets
# share no word, and no letter q, so an edit never recreates a protected word by chance.
SYLLABLES = ("ba", "de", "fi", "go", "ku", "la", "me", "ni", "po", "ru", "sa", "te", "vi", "wo", "zu")
VOCABULARY = sorted({a + b + c for a, b, c in itertools.product(SYLLABLES, repeat=3)})[:400]
OTHER_WORDS = ("kelp", "otter", "marsh", "heron", "quill", "fjord", "cairn", "thistle", "moss", "birch")

documents = st.lists(st.sampled_from(VOCABULARY), min_size=40, max_size=90)
edit_kinds = st.sampled_from(("substitute", "insert", "delete", "letter"))


def finds(document: list[str], text: str) -> bool:
    index = FingerprintIndex(KEY)
    index.add(
        ProtectedDocument("home shelf", "report", "quiet-heron", document_shingles([" ".join(document)], KEY))
    )
    context = RuleContext(
        conduct_address="conduct@example.org",
        committee=frozenset({"ada@example.org"}),
        member_names=(),
        internal_domains=frozenset({"example.org"}),
        finder=IdentityMatcher.build(()),
        consents=frozenset(),
        protected_content=index,
    )
    raw = (
        f"From: ada@example.org\r\nTo: {OUTSIDER}\r\nSubject: notes\r\n"
        f"Content-Type: text/plain; charset=utf-8\r\n\r\n{text}\r\n"
    ).encode()
    envelope = Envelope(mail_from="ada@example.org", rcpt_tos=(OUTSIDER,), authenticated_as="ada@example.org")
    return bool(protected_content.check(parse_message(raw), envelope, context, Params()))


def edit(word: str, kind: str, other: str) -> list[str]:
    if kind == "substitute":
        return [other]
    if kind == "insert":
        return [word, other]
    if kind == "delete":
        return []
    middle = len(word) // 2
    return [word[:middle] + "q" + word[middle + 1 :]]


@given(
    document=documents,
    data=st.data(),
    before=st.lists(st.sampled_from(OTHER_WORDS), max_size=20),
    after=st.lists(st.sampled_from(OTHER_WORDS), max_size=20),
)
def test_an_edited_copy_of_a_passage_is_found(
    document: list[str], data: st.DataObject, before: list[str], after: list[str]
) -> None:
    length = data.draw(st.integers(16, len(document)), label="passage length")
    start = data.draw(st.integers(0, len(document) - length), label="passage start")
    passage = document[start : start + length]
    # Edit positions: 5 unchanged words before the first, between two, and after the last.
    gaps = data.draw(st.lists(st.integers(5, 12), max_size=8), label="gaps")
    positions = list(itertools.accumulate(gap + 1 for gap in gaps))
    positions = [p - 1 for p in positions if p - 1 <= length - 6]
    copy: list[str] = []
    for number, word in enumerate(passage):
        if number in positions:
            kind = data.draw(edit_kinds, label="edit")
            copy.extend(edit(word, kind, data.draw(st.sampled_from(OTHER_WORDS))))
        else:
            copy.append(word)
    assume(len(copy) >= 16)
    assert finds(document, " ".join([*before, *copy, *after]))


@given(document=documents, data=st.data())
def test_short_fragments_in_another_order_are_not_found(document: list[str], data: st.DataObject) -> None:
    sizes = data.draw(st.lists(st.integers(1, 4), min_size=len(document), max_size=len(document)))
    cuts = [cut for cut in itertools.accumulate(sizes) if cut < len(document)]
    fragments = [document[a:b] for a, b in itertools.pairwise([0, *cuts, len(document)])]
    shuffled = [word for fragment in data.draw(st.permutations(fragments)) for word in fragment]
    in_order = {tuple(document[i : i + 5]) for i in range(len(document) - 4)}
    assume(not any(tuple(shuffled[i : i + 5]) in in_order for i in range(len(shuffled) - 4)))
    assert words(" ".join(shuffled)) == shuffled
    assert not finds(document, " ".join(shuffled))
