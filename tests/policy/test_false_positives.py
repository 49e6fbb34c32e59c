"""False positives: ordinary English prose naming people who are not protected gives no strong form.

The protected people share given names, surnames or parts of them with everyday words and with the
people the prose talks about ("Park", "Sam", "Anna", "van der", "Li", "Lind"...). Weak forms (a
lone given name or surname) may be held for review, and the test pins exactly which ones are; a
strong form (refused outright) must never come from prose about someone else.
"""

from __future__ import annotations

import pytest

from gateway.policy.matcher import IdentityMatcher
from gateway.policy.model import IdentityKind, ProtectedIdentity, Strength

PROTECTED = IdentityMatcher.build(
    ProtectedIdentity("quiet case", person, kind, value, everyday_words=everyday)
    for person, kind, value, everyday in (
        ("jin", IdentityKind.NAME, "Jin Park", ("Park",)),
        ("jin", IdentityKind.ADDRESS, "jin.park@example.org", ()),
        ("maya", IdentityKind.NAME, "Maya Lind", ()),
        ("noor", IdentityKind.NAME, "Noor Haddad", ()),
        ("noor", IdentityKind.USERNAME, "@noorh", ()),
        ("sam", IdentityKind.NAME, "Sam Okonkwo-Reyes", ("Sam",)),
        ("robin", IdentityKind.NAME, "Robin Castellano", ("Robin",)),
        ("anna", IdentityKind.NAME, "Anna van der Berg", ()),
        ("mei", IdentityKind.NAME, "Mei Li", ()),
        ("grace", IdentityKind.NAME, "Grace Hopper-Wells", ("Grace",)),
    )
)

PROSE = {
    "minutes": (
        "Minutes of the venue meeting. Present: Maria Gonzalez, John Smith, Dr Patel and Ms. Johnson. "
        "J. Smith will send the floor plan; Mr Okafor asked whether the park next to the hall is lit "
        "at night. Anna Karenina was the book club's pick, and Sam from catering said the park "
        "entrance is the easiest way in."
    ),
    "travel": (
        "Flights to Beijing were cheaper than to Seoul. Li Wei and Zhang Min booked the same hotel as "
        "Dr. Lindgren. Park Street station is closed; take the line towards Lindholm instead."
    ),
    "science": (
        "Van der Waals forces explain why the gecko sticks. Professor Bergman's lecture on the Berger "
        "table was recorded; Grace notes are in the music handout, and a robin nested by the lab."
    ),
    "names-sharing-prefixes": (
        "Noorani, Haddadin and Maynard met Lindsay, Parker and Reynolds. Okonkwo Chukwu, a friend "
        "of Anna, joined later. Castellanos is a common surname in Spain."
    ),
    "code-review": (
        "Mei-ling reviewed the patch from lindberg; sparklist and parkour are unrelated tools. The "
        "config uses charset=ISO-2022-JP and the host park.example.net."
    ),
    "initials": (
        "A. Smith, B. J. Thorne and C. Li-Chen signed the letter. Mr. A. N. Other is a placeholder, "
        "and Dr J. R. Hartley wrote the foreword."
    ),
    "titles-with-other-surnames": (
        "Mx Rivera, Ms Lindqvist, Dame Hopkins and Sir Parkinson spoke. Dr Berger and Professor "
        "Haddon closed the session; Rev. Castle said grace."
    ),
}

# The lone name parts this prose does hold, each of a protected person: held for review, by design.
WEAK_IN_PROSE = {
    "minutes": {"anna"},  # "Anna Karenina"
    "travel": set(),
    "science": set(),
    "names-sharing-prefixes": {"anna", "sam"},  # "Anna"; "Okonkwo", half of Sam's surname
    "code-review": {"mei"},  # "Mei-ling": Mei, then a hyphen
    "initials": set(),
    "titles-with-other-surnames": set(),
}


@pytest.mark.parametrize("name", sorted(PROSE))
def test_ordinary_prose_gives_no_strong_form(name: str) -> None:
    hits = PROTECTED.find_hits(PROSE[name])
    assert [hit for hit in hits if hit.strength is Strength.STRONG] == []
    assert {hit.identity.person for hit in hits if hit.strength is Strength.WEAK} == WEAK_IN_PROSE[name]
