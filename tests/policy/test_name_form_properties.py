"""Property: every written form of a protected person, however disguised, never reaches an outsider.

Hypothesis picks a protected person and one of the forms the gateway derives for them (full name in
another order, title or initial + surname, name parts, local parts, usernames...: exactly what
``case show --reveal`` lists), then disguises it the ways a sender can: letters swapped for
look-alikes drawn from the Unicode confusables data the gateway uses, letter-spacing with spaces,
dots or hyphens, zero-width characters anywhere. Sent to an outsider, a strong form must be
refused (``PROTECTED_IDENTITY``) and a weak one held (``PROTECTED_NAME_PART``). The control
property builds text from near-miss words (names sharing a prefix, ordinary words, a person's
everyday word used as a common noun) and requires no strong finding.
"""

from __future__ import annotations

import string
from functools import cache

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.policy.matcher import IdentityMatcher
from gateway.policy.mime import parse_message
from gateway.policy.model import Envelope, IdentityKind, ProtectedIdentity, RuleContext, Strength
from gateway.policy.normalize import confusable_table, normalize
from gateway.policy.rules import reporter_protection
from gateway.policy.variants import DEFAULT_TITLES, Example, examples, titles_normalised
from tests.policy.builders import plain


def person(
    code: str, name: str, *others: tuple[IdentityKind, str], everyday: tuple[str, ...] = ()
) -> list[ProtectedIdentity]:
    values = ((IdentityKind.NAME, name), *others)
    return [
        ProtectedIdentity("quiet case", code, kind, value, everyday_words=everyday) for kind, value in values
    ]


PEOPLE = {
    "noor": person(
        "noor",
        "Noor Haddad",
        (IdentityKind.ADDRESS, "noor.h@example.org"),
        (IdentityKind.USERNAME, "@nhaddad"),
        (IdentityKind.ALIAS, "Nooki"),
    ),
    "sam": person("sam", "Sam Okonkwo-Reyes", (IdentityKind.ADDRESS, "sam_or@witness.test")),
    "anna": person("anna", "Anna van der Berg"),
    "mei": person("mei", "Mei Li", (IdentityKind.USERNAME, "meili_88")),
    "ingrid": person("ingrid", "Ingrid Sofia Lindqvist"),
    "robin": person("robin", "Robin Castellano", everyday=("Robin",)),
}
IDENTITIES = tuple(identity for identities in PEOPLE.values() for identity in identities)
FINDER = IdentityMatcher.build(IDENTITIES)
CONTEXT = RuleContext(
    conduct_address="conduct@example.org",
    committee=frozenset({"ada@example.org"}),
    member_names=(),
    internal_domains=frozenset(),
    finder=FINDER,
    consents=frozenset(),
)
OUTSIDE = Envelope("ada@example.org", ("mod@forum.example.net", "conduct@example.org"), "ada@example.org")
TEMPLATES = ("Please note: {} will join the call.", "{}", "Minutes (draft) -- {}, thanks", "cc {}; see below")
INVISIBLE = ("\u200b", "\u200c", "\u200d", "\u2060", "\u00ad", "\ufeff", "\u180e")


@cache
def look_alikes() -> dict[str, tuple[str, ...]]:
    """Each Latin letter's look-alikes from the confusables data, as normalize reads them."""
    found: dict[str, list[str]] = {}
    for code_point, reading in confusable_table().items():
        char = chr(code_point)
        if len(reading) == 1 and reading in string.ascii_lowercase and normalize(char) == reading:
            found.setdefault(reading, []).append(char)
    return {letter: tuple(chars) for letter, chars in found.items()}


def forms_of(code: str) -> list[tuple[ProtectedIdentity, Example]]:
    return [
        (identity, example)
        for identity in PEOPLE[code]
        for example in examples(identity)
        if example.strength is Strength.STRONG or example.reported_alone
    ]


@st.composite
def disguised(draw: st.DrawFn, text: str) -> str:
    """``text`` with look-alike letters, maybe letter-spaced, with invisible characters."""
    table = look_alikes()
    letters = [
        draw(st.sampled_from(table[char.lower()]))
        if char.lower() in table and draw(st.integers(0, 2)) == 0
        else char
        for char in text
    ]
    if draw(st.booleans()) and not any(char.isdigit() for char in text):
        gap = draw(st.sampled_from([" ", ".", "-", " \u200b", "_"]))
        spaced: list[str] = []
        for index, char in enumerate(letters):
            spaced.append(char)
            # Spaced where the original has two letters in a row (a look-alike may be a digit).
            if index + 1 < len(text) and text[index].isalpha() and text[index + 1].isalpha():
                spaced.append(gap)
        letters = spaced
    out: list[str] = []
    for char in letters:
        out.append(char)
        if draw(st.integers(0, 5)) == 0:
            out.append(draw(st.sampled_from(INVISIBLE)))
    return "".join(out)


@st.composite
def written_forms(draw: st.DrawFn) -> tuple[ProtectedIdentity, Example, str]:
    code = draw(st.sampled_from(sorted(PEOPLE)))
    identity, example = draw(st.sampled_from(forms_of(code)))
    text = draw(disguised(example.text))
    return identity, example, draw(st.sampled_from(TEMPLATES)).format(text)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(written_forms())
def test_every_written_form_is_refused_or_held(written: tuple[ProtectedIdentity, Example, str]) -> None:
    identity, example, text = written
    findings = reporter_protection.check(
        parse_message(plain(text)), OUTSIDE, CONTEXT, reporter_protection.Params()
    )
    codes = {finding.code for finding in findings if finding.case == identity.case}
    if example.strength is Strength.STRONG:
        assert "PROTECTED_IDENTITY" in codes, (example, text)
    else:
        assert codes == {"PROTECTED_NAME_PART"}, (example, text)
    assert all(finding.recipients == ("mod@forum.example.net",) for finding in findings)


def _name_words() -> set[str]:
    words: set[str] = set()
    for identity in IDENTITIES:
        words.update(normalize(identity.value).replace("-", " ").replace(".", " ").replace("@", " ").split())
    return words


NAME_WORDS = sorted(word for word in _name_words() if len(word) >= 3)
NAME_WORDS_SET = frozenset(NAME_WORDS)
FORMS = frozenset(normalize(example.text) for identity in IDENTITIES for example in examples(identity))
TITLES = titles_normalised(DEFAULT_TITLES)
ORDINARY = (
    "the", "committee", "meeting", "notes", "park", "sofia", "berg", "maria", "john", "smith",
    "reviewed", "agenda", "robin", "sang", "garden", "with", "from", "into", "nearby", "castle",
)  # fmt: skip


@st.composite
def near_misses(draw: st.DrawFn) -> str:
    """A word sharing a prefix with a protected name word, but not that word nor any other form."""
    word = draw(st.sampled_from(NAME_WORDS))
    keep = draw(st.integers(2, len(word)))
    suffix = draw(st.text(alphabet="aeiouhnrsty", min_size=1, max_size=3))
    candidate = word[:keep] + suffix
    taken = FORMS | NAME_WORDS_SET | TITLES
    return "garden" if candidate in taken else candidate


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(near_misses(), st.sampled_from(ORDINARY)), min_size=1, max_size=12))
def test_near_miss_words_are_never_a_strong_form(words: list[str]) -> None:
    text = " ".join(words).capitalize() + "."
    strong = [hit for hit in FINDER.find_hits(text) if hit.strength is Strength.STRONG]
    assert strong == [], text


def test_an_everyday_word_of_a_switched_person_is_no_finding_at_all() -> None:
    assert FINDER.find_hits("A robin sang in the garden; Robin's nest is empty.") == []
    assert {hit.strength for hit in FINDER.find_hits("Robin Castellano")} == {Strength.STRONG}
