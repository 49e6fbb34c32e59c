"""IdentityMatcher: every protected identity on word boundaries, and nothing else."""

from __future__ import annotations

import pytest

from gateway.policy.matcher import IdentityMatcher, patterns_for
from gateway.policy.model import IdentityKind, ProtectedIdentity

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
