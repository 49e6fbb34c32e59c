"""IdentityMatcher: every protected identity on word boundaries, and nothing else."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.policy.matcher import _SPACED_HINT, IdentityMatcher, patterns_for, spaced_hint
from gateway.policy.model import IdentityKind, ProtectedIdentity, Strength
from gateway.policy.variants import examples

NAME = ProtectedIdentity("home-shelf", "r1", IdentityKind.NAME, "Jin Park")
FIRST_NAME = ProtectedIdentity("home-shelf", "r1", IdentityKind.NAME, "Jin")
INITIALS = ProtectedIdentity("home-shelf", "r1", IdentityKind.ALIAS, "JP")
SHORT_ALIAS = ProtectedIdentity("home-shelf", "w1", IdentityKind.ALIAS, "Li")
USERNAME = ProtectedIdentity("home-shelf", "r1", IdentityKind.USERNAME, "@jpark")
ADDRESS = ProtectedIdentity("home-shelf", "r1", IdentityKind.ADDRESS, "Jin.Park@Example.org")
HAN_NAME = ProtectedIdentity("stunned-bulb", "r2", IdentityKind.NAME, "李明")
IDN_ADDRESS = ProtectedIdentity("stunned-bulb", "r2", IdentityKind.ADDRESS, "ming@bücher.example")
ALL = (NAME, FIRST_NAME, INITIALS, SHORT_ALIAS, USERNAME, ADDRESS, HAN_NAME, IDN_ADDRESS)


@pytest.fixture(scope="module")
def matcher() -> IdentityMatcher:
    return IdentityMatcher.build(ALL)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # names
        pytest.param("I spoke with Jin Park today.", {NAME, FIRST_NAME}, id="full-name"),
        pytest.param("jin PARK", {NAME, FIRST_NAME}, id="any-case"),
        pytest.param("Jin\r\n Park", {NAME, FIRST_NAME}, id="across-folded-line"),
        pytest.param("Jin\n\n   Park", {NAME, FIRST_NAME}, id="across-line-breaks"),
        pytest.param("Jin_Park_statement.txt", {NAME, FIRST_NAME}, id="underscore-joined-file-name"),
        pytest.param("https://example.net/u/jin-park", {NAME, FIRST_NAME}, id="hyphen-joined-slug"),
        pytest.param("JinPark.docx", {NAME}, id="run-together"),
        pytest.param("Ji\u200bn Pa\u00adrk", {NAME, FIRST_NAME}, id="invisible-characters"),
        pytest.param("Јіn Раrk", {NAME, FIRST_NAME}, id="cyrillic-look-alikes"),
        pytest.param("Ｊｉｎ Ｐａｒｋ", {NAME, FIRST_NAME}, id="fullwidth"),
        pytest.param("(Jin)", {FIRST_NAME}, id="in-parentheses"),
        pytest.param("Jin's report", {FIRST_NAME}, id="possessive"),
        pytest.param("Jin\u2019s report", {FIRST_NAME}, id="possessive-curly-apostrophe"),
        pytest.param("Dear Jin,", {FIRST_NAME}, id="comma"),
        # names: false-positive controls
        pytest.param("Jingle bells", set(), id="prefix-of-a-word"),
        pytest.param("flights to Beijing", set(), id="inside-a-word"),
        pytest.param("Lijin and Zhangjin", set(), id="suffix-of-a-word"),
        pytest.param("Chanho Park <chanho61.park@samsung.example>", set(), id="same-surname-only"),
        pytest.param("a walk in the park", set(), id="surname-as-common-word"),
        pytest.param("Jin2", set(), id="digit-glued"),
        # short aliases must stand alone
        pytest.param("JP said so", {INITIALS}, id="initials-standalone"),
        pytest.param("(JP) and JP's note", {INITIALS}, id="initials-punctuated"),
        pytest.param("cc: JP.", {INITIALS}, id="initials-end-of-sentence"),
        pytest.param("charset=ISO-2022-JP", set(), id="charset-name"),
        pytest.param("EUC-JP and Shift_JIS", set(), id="charset-euc-jp"),
        pytest.param("mail.example.co.jp", set(), id="country-domain"),
        pytest.param("owner-ports-jp@jp.freebsd.example", set(), id="list-address-and-host"),
        pytest.param("[ports-jp 8947] build fix", set(), id="list-subject-tag"),
        pytest.param("b=k8md2+jp/x4GCvgas", set(), id="inside-base64"),
        pytest.param("Li Wei wrote", {SHORT_ALIAS}, id="short-alias-standalone"),
        pytest.param("client list: lilies, li-ion", set(), id="short-alias-in-words"),
        # short one-word identities are chance inside machine tokens
        pytest.param("b=k8md2tTxJcL3RUS+jin/QdiXVN+bRJDy1dNWXTIMnC6wJY=", set(), id="inside-dkim-signature"),
        pytest.param("References: <CAKq9yqN0+Jin-5Kx8w@mail.gmail.example>", set(), id="inside-message-id"),
        pytest.param("https://forum.example.net/u/jin", {FIRST_NAME}, id="in-url-path"),
        pytest.param("Jin-ssi, thank you", {FIRST_NAME}, id="hyphenated-honorific"),
        pytest.param("see ticket A1B2C3D4E5F6-jin", set(), id="glued-to-a-code"),
        # usernames
        pytest.param("ping @jpark on chat", {USERNAME}, id="username-mention"),
        pytest.param("user jpark posted", {USERNAME}, id="username-bare"),
        pytest.param("https://forum.example.net/u/jpark/activity", {USERNAME}, id="username-in-url"),
        pytest.param("we met in the park", set(), id="common-word-inside-username"),
        pytest.param("jparker", set(), id="longer-username"),
        # addresses
        pytest.param("write to jin.park@example.org.", {ADDRESS, NAME, FIRST_NAME}, id="address"),
        pytest.param("<JIN.PARK@EXAMPLE.ORG>", {ADDRESS, NAME, FIRST_NAME}, id="address-any-case"),
        pytest.param("mailto:jin.park@example.org?subject=x", {ADDRESS, NAME, FIRST_NAME}, id="mailto"),
        pytest.param("xjin.park@example.org", set(), id="longer-local-part"),
        pytest.param("ming@xn--bcher-kva.example", {IDN_ADDRESS}, id="idn-domain-as-ascii"),
        pytest.param("ming@BÜCHER.example", {IDN_ADDRESS}, id="idn-domain-unicode"),
        # scripts without spaces
        pytest.param("我和李明说过了", {HAN_NAME}, id="han-name-inside-sentence"),
        pytest.param("Jin先生へ", {FIRST_NAME}, id="latin-name-next-to-cjk"),
    ],
)
def test_find(matcher: IdentityMatcher, text: str, expected: set[ProtectedIdentity]) -> None:
    assert set(matcher.find(text)) == expected


def test_results_are_deduplicated_in_first_seen_order(matcher: IdentityMatcher) -> None:
    found = matcher.find("Jin Park, JP, Jin Park again, jpark")
    assert len(found) == len(set(found))
    assert found.index(FIRST_NAME) < found.index(INITIALS) < found.index(USERNAME)


def test_same_string_in_two_cases_reports_both() -> None:
    other = ProtectedIdentity("other-case", "w9", IdentityKind.NAME, "jin park")
    assert set(IdentityMatcher.build((NAME, other)).find("JIN PARK")) == {NAME, other}


def test_empty_matcher_finds_nothing() -> None:
    assert IdentityMatcher.build(()).find("Jin Park") == []


@pytest.mark.parametrize(
    ("identity", "expected"),
    [
        pytest.param(
            NAME,
            {"jin park", "jin_park", "jin-park", "jin.park", "jinpark", "parkjin", "jpark"},
            id="name-variants",
        ),
        pytest.param(
            ProtectedIdentity("c", "p", IdentityKind.NAME, "Li Na"),
            {"li na", "li_na", "li-na", "li.na"},  # "lina", "nali": only in letter-spaced text
            id="no-run-together-for-short-words",
        ),
        pytest.param(USERNAME, {"jpark"}, id="username-without-at"),
        pytest.param(ProtectedIdentity("c", "p", IdentityKind.ALIAS, "J"), set(), id="one-letter-too-short"),
        pytest.param(ProtectedIdentity("c", "p", IdentityKind.ALIAS, "\u200b"), set(), id="invisible-only"),
    ],
)
def test_patterns_for(identity: ProtectedIdentity, expected: set[str]) -> None:
    assert patterns_for(identity) == expected


def test_many_identities_still_find_the_right_one() -> None:
    crowd = [ProtectedIdentity(f"case-{n}", "p", IdentityKind.NAME, f"Person Number{n}") for n in range(5000)]
    matcher = IdentityMatcher.build([*crowd, NAME])
    assert matcher.identity_count == 5001
    assert matcher.find("hello Person Number4321 and Jin Park") == [crowd[4321], NAME]


# --- name forms derived from the registry, one table per class -----------------------------------

NOOR = ProtectedIdentity("quiet case", "noor", IdentityKind.NAME, "Noor Haddad")
NOOR_ADDRESS = ProtectedIdentity("quiet case", "noor", IdentityKind.ADDRESS, "noor.h@example.org")
NOOR_USER = ProtectedIdentity("quiet case", "noor", IdentityKind.USERNAME, "noor_h84")
SAM = ProtectedIdentity("quiet case", "sam", IdentityKind.NAME, "Sam Okonkwo-Reyes")
ANNA = ProtectedIdentity("quiet case", "anna", IdentityKind.NAME, "Anna van der Berg")
INGRID = ProtectedIdentity("quiet case", "ingrid", IdentityKind.NAME, "Ingrid Sofia Lindqvist")
MEI = ProtectedIdentity("quiet case", "mei", IdentityKind.NAME, "Mei Li")
PEOPLE = (NOOR, NOOR_ADDRESS, NOOR_USER, SAM, ANNA, INGRID, MEI)
STRONG, WEAK = Strength.STRONG, Strength.WEAK


@pytest.fixture(scope="module")
def people() -> IdentityMatcher:
    return IdentityMatcher.build(PEOPLE)


def graded(matcher: IdentityMatcher, text: str) -> set[tuple[str, Strength]]:
    return {(hit.identity.value, hit.strength) for hit in matcher.find_hits(text)}


def table(*rows: tuple[str, set[tuple[str, Strength]]], prefix: str) -> list[object]:
    return [
        pytest.param(text, expected, id=f"{prefix}-{index}") for index, (text, expected) in enumerate(rows)
    ]


ORDER_FORMS = table(
    ("Haddad, Noor", {("Noor Haddad", STRONG)}),
    ("Haddad Noor", {("Noor Haddad", STRONG)}),
    ("haddad.noor@elsewhere.example", {("Noor Haddad", STRONG)}),
    ("HaddadNoor", {("Noor Haddad", STRONG)}),
    ("Lindqvist, Ingrid Sofia", {("Ingrid Sofia Lindqvist", STRONG)}),
    ("Ingrid Lindqvist", {("Ingrid Sofia Lindqvist", STRONG)}),
    ("Sofia Lindqvist", {("Ingrid Sofia Lindqvist", STRONG)}),
    ("Li, Mei", {("Mei Li", STRONG)}),
    prefix="order",
)
TITLE_FORMS = table(
    ("Mx Haddad", {("Noor Haddad", STRONG)}),
    ("Ms. Haddad", {("Noor Haddad", STRONG)}),
    ("thanks, Dr Haddad.", {("Noor Haddad", STRONG)}),
    ("Prof. Lindqvist", {("Ingrid Sofia Lindqvist", STRONG)}),
    ("Mr van der Berg", {("Anna van der Berg", STRONG)}),
    ("Dame Li", {("Mei Li", STRONG)}),
    ("Mx Reyes", {("Sam Okonkwo-Reyes", STRONG)}),
    ("(Mx Haddad)", {("Noor Haddad", STRONG)}),
    ('"Dr. Haddad"', {("Noor Haddad", STRONG)}),
    ("my Haddad", {("Noor Haddad", WEAK)}),
    prefix="title",
)
INITIAL_FORMS = table(
    ("N. Haddad", {("Noor Haddad", STRONG)}),
    ("N Haddad", {("Noor Haddad", STRONG)}),
    ("N.Haddad", {("Noor Haddad", STRONG)}),
    ("Haddad, N.", {("Noor Haddad", STRONG)}),
    ("nhaddad", {("Noor Haddad", STRONG)}),
    ("I.S. Lindqvist", {("Ingrid Sofia Lindqvist", STRONG)}),
    ("A. van der Berg", {("Anna van der Berg", STRONG)}),
    ("a van der Berg", {("Anna van der Berg", WEAK)}),  # "a" is a word: an initial A needs its dot
    ("J. Haddad", {("Noor Haddad", WEAK)}),  # not this person's initial
    ("M. Li", {("Mei Li", STRONG)}),
    ("Lindqvist, I think", {("Ingrid Sofia Lindqvist", WEAK)}),  # the pronoun, not her initial
    ("Lindqvist, I.", {("Ingrid Sofia Lindqvist", STRONG)}),
    prefix="initial",
)
PART_FORMS = table(
    ("Noor", {("Noor Haddad", WEAK)}),
    ("Haddad's notes", {("Noor Haddad", WEAK)}),
    ("Noor\u2019s notes", {("Noor Haddad", WEAK)}),
    ("Okonkwo-Reyes", {("Sam Okonkwo-Reyes", WEAK)}),
    ("Okonkwo Reyes", {("Sam Okonkwo-Reyes", WEAK)}),
    ("Reyes", {("Sam Okonkwo-Reyes", WEAK)}),
    ("Sam Reyes", {("Sam Okonkwo-Reyes", STRONG)}),
    ("Sam Okonkwo Reyes", {("Sam Okonkwo-Reyes", STRONG)}),
    ("van der Berg", {("Anna van der Berg", WEAK)}),
    ("Berg, Anna", {("Anna van der Berg", STRONG)}),
    ("Li", set()),  # two letters: never reported alone
    ("Noorah and Haddadi", set()),
    ("Haddad. Noor said", {("Noor Haddad", WEAK)}),  # a sentence ends between them
    prefix="part",
)
ADDRESS_FORMS = table(
    ("noor.h", {("noor.h@example.org", STRONG)}),
    ("noor_h", {("noor.h@example.org", STRONG)}),
    ("noor-h@elsewhere.example", {("noor.h@example.org", STRONG)}),
    ("noorh", set()),
    ("@noor_h84", {("noor_h84", STRONG)}),
    ("noor.h84", {("noor_h84", STRONG)}),
    prefix="address",
)
SPACED_FORMS = table(
    ("N o o r  H a d d a d", {("Noor Haddad", STRONG)}),
    ("N.o.o.r H.a.d.d.a.d", {("Noor Haddad", STRONG)}),
    ("N-o-o-r", {("Noor Haddad", WEAK)}),
    ("N\u200b o o \u200br", {("Noor Haddad", WEAK)}),
    ("M x  H a d d a d", {("Noor Haddad", STRONG)}),
    ("H a d d a d ,  N .", {("Noor Haddad", STRONG)}),
    ("M e i  L i", {("Mei Li", STRONG)}),
    ("n o o r . h", {("noor.h@example.org", STRONG)}),
    ("I a m here, a b c", set()),
    ("H a d d a d i", set()),
    prefix="spaced",
)
LOOK_ALIKE_FORMS = table(
    ("N\u2c9f\u2c9fr Haddad", {("Noor Haddad", STRONG)}),  # Coptic small o
    ("Noor H\u13aaddad", {("Noor Haddad", STRONG)}),  # Cherokee A
    ("\u039d\u0585\u0585r Haddad", {("Noor Haddad", STRONG)}),  # Greek capital nu, Armenian oh
    ("\u0399ngrid Lindqvist", {("Ingrid Sofia Lindqvist", STRONG)}),  # Greek capital iota
    ("Nᴏᴏʀ Haddad", {("Noor Haddad", STRONG)}),  # small capitals
    prefix="look-alike",
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        *ORDER_FORMS,
        *TITLE_FORMS,
        *INITIAL_FORMS,
        *PART_FORMS,
        *ADDRESS_FORMS,
        *SPACED_FORMS,
        *LOOK_ALIKE_FORMS,
    ],
)
def test_name_forms(people: IdentityMatcher, text: str, expected: set[tuple[str, Strength]]) -> None:
    assert graded(people, text) == expected


def test_weak_forms_are_left_out_where_the_person_is_named_in_full(people: IdentityMatcher) -> None:
    assert graded(people, "Noor said that Noor Haddad agreed") == {("Noor Haddad", STRONG)}


def test_a_person_switched_off_for_weak_forms() -> None:
    quiet = replace(NOOR, weak_forms=False)
    matcher = IdentityMatcher.build((quiet,))
    assert matcher.find_hits("Noor and Haddad") == []
    assert [hit.strength for hit in matcher.find_hits("Mx Haddad")] == [STRONG]


def test_everyday_words_are_not_reported_alone() -> None:
    matcher = IdentityMatcher.build((replace(NOOR, everyday_words=("Noor",)),))
    assert matcher.find_hits("Noor") == []
    assert graded(matcher, "Haddad") == {("Noor Haddad", WEAK)}


def test_configured_titles() -> None:
    matcher = IdentityMatcher.build((NOOR,), titles=("Dott.",))
    assert graded(matcher, "Dott. Haddad") == {("Noor Haddad", STRONG)}
    assert graded(matcher, "Mx Haddad") == {("Noor Haddad", WEAK)}


def test_a_registered_username_is_not_also_reported_as_a_name_form() -> None:
    user = ProtectedIdentity("quiet case", "noor", IdentityKind.USERNAME, "nhaddad")
    found = IdentityMatcher.build((NOOR, user)).find("ping nhaddad")
    assert found == [user]


@pytest.mark.parametrize("identity", PEOPLE, ids=lambda identity: identity.value)
def test_every_listed_example_is_found_at_its_strength(identity: ProtectedIdentity) -> None:
    matcher = IdentityMatcher.build((identity,))
    for example in examples(identity):
        strengths = {hit.strength for hit in matcher.find_hits(f"see {example.text} below")}
        expected = example.strength if example.reported_alone else STRONG
        assert (expected in strengths) == (example.strength is STRONG or example.reported_alone), example


@settings(max_examples=1000, deadline=None)
@given(
    st.text(alphabet=st.sampled_from([*"ab Z9_.,'*/+~|-\t", "x", " ", "é", "\x00", "\x7f"]), max_size=24)
    | st.text(alphabet=st.characters(max_codepoint=127), max_size=24)
)
def test_spaced_hint_agrees_with_its_pattern(text: str) -> None:
    # ASCII text is looked at through character classes, other text with the pattern itself.
    assert spaced_hint(text) == (_SPACED_HINT.search(text) is not None)


@pytest.mark.parametrize(
    ("text", "hint"),
    [
        ("said n o o r haddad", True),
        ("x a-b. and", True),
        ("a-b. and", False),
        ("a meeting", False),
        ("x y", False),
        ("é n-o r", True),
    ],
)
def test_spaced_hint_examples(text: str, hint: bool) -> None:
    assert spaced_hint(text) is hint


def test_the_same_text_gets_the_same_hits_however_often_it_is_asked(matcher: IdentityMatcher) -> None:
    first = matcher.find_hits("I spoke with Jin Park and Li today.")
    assert {hit.identity for hit in first} >= {NAME, SHORT_ALIAS}
    first.clear()  # a caller's list is its own
    assert (
        matcher.find_hits("I spoke with Jin  Park\nand Li today.")
        == matcher.find_hits("I spoke with Jin Park and Li today.")
        != []
    )


def test_many_different_texts_each_get_their_own_hits(matcher: IdentityMatcher) -> None:
    texts = [f"Note {number}: {'Jin Park' if number % 2 else 'nobody'} was there." for number in range(50)]
    assert [NAME in matcher.find(text) for text in texts] == [number % 2 == 1 for number in range(50)]
