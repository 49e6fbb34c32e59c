"""normalize: text that looks the same to a reader folds to the same string."""

from __future__ import annotations

import re
import unicodedata

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from gateway.policy.normalize import (
    _ASCII_CONTROLS,
    _SUPPLEMENT,
    LONG_TEXT_CHARS,
    _normalize_any,
    _normalize_long,
    _normalize_short,
    confusable_table,
    normalize,
)

SUPPLEMENTED = frozenset(ord(char) for char in _SUPPLEMENT)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("Jin Park", "jin park", id="case"),
        pytest.param("JIN PARK", "jin park", id="upper-case"),
        pytest.param("Ｊｉｎ　Ｐａｒｋ", "jin park", id="fullwidth-letters-and-ideographic-space"),
        pytest.param("𝐉𝐢𝐧 𝐏𝐚𝐫𝐤", "jin park", id="mathematical-bold"),
        pytest.param("ⓙⓘⓝ", "jin", id="circled-letters"),
        pytest.param("Ji\u200bn", "jin", id="zero-width-space"),
        pytest.param("J\u200ci\u200dn", "jin", id="zero-width-joiners"),
        pytest.param("Ji\u00adn", "jin", id="soft-hyphen"),
        pytest.param("\u202eJin\u202c", "jin", id="bidi-override"),
        pytest.param("\ufeffJin", "jin", id="byte-order-mark"),
        pytest.param("J\u2060in", "jin", id="word-joiner"),
        pytest.param("Ji\ufe0fn", "jin", id="variation-selector"),
        pytest.param("Ji\U000e0041n", "jin", id="tag-character"),
        pytest.param("J\u0301i\u0308n", "jin", id="combining-marks"),
        pytest.param("Zoë Müller", "zoe muller", id="accents"),
        pytest.param("Јіn Раrk", "jin park", id="cyrillic-look-alikes"),
        pytest.param("аеорсух", "aeopcyx", id="cyrillic-small-letters"),
        pytest.param("ΗΑΝΝΑ", "hanna", id="greek-capitals"),
        pytest.param("ορα", "opa", id="greek-small-letters"),
        pytest.param("ᴊɪɴ", "jin", id="small-capitals"),
        pytest.param("Straße", "strasse", id="sharp-s-casefold"),
        pytest.param("İpek", "ipek", id="dotted-capital-i"),
        pytest.param("Jin\r\n Park", "jin park", id="folded-line"),
        pytest.param("Jin\n\n\tPark", "jin park", id="line-breaks-and-tab"),
        pytest.param("Jin\u00a0Park", "jin park", id="no-break-space"),
        pytest.param("Jin\u2028Park", "jin park", id="line-separator"),
        pytest.param("Jin\u3164Park", "jin park", id="hangul-filler-looks-blank"),
        pytest.param("  Jin  ", "jin", id="trimmed"),
        pytest.param("Ji\x00n", "jin", id="control-character"),
        pytest.param("O\u2019Brien", "o'brien", id="curly-apostrophe"),
        pytest.param("Jean\u2011Luc", "jean-luc", id="non-breaking-hyphen"),
        pytest.param("李明", "李明", id="han-unchanged"),
        pytest.param("지민", "지민", id="hangul-recomposed"),
        pytest.param("ﾊﾟｸ", "ハク", id="halfwidth-katakana"),
    ],
)
def test_normalize(text: str, expected: str) -> None:
    assert normalize(text) == expected


def test_ascii_fast_path_agrees_with_full_path() -> None:
    ascii_text = "Jin\tPARK\r\n  said: x\x01y\x7f"
    # A non-ASCII character forces the full path; it folds to nothing and changes nothing else.
    assert normalize(ascii_text) == normalize(ascii_text + "\u200b")


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet=st.characters(max_codepoint=127), max_size=60))
def test_ascii_fast_path_agrees_with_full_path_on_any_ascii(text: str) -> None:
    # Every ASCII character: controls deleted, every whitespace str.split knows collapsed to one space.
    assert (
        normalize(text) == _normalize_any(text) == " ".join(text.lower().translate(_ASCII_CONTROLS).split())
    )


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_normalize_is_idempotent(text: str) -> None:
    once = normalize(text)
    assert normalize(once) == once


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_normalize_leaves_no_runs_of_whitespace(text: str) -> None:
    result = normalize(text)
    assert result == result.strip()
    assert "  " not in result
    assert not any(char.isspace() and char != " " for char in result)


_LINE_BREAKS = ("\n", "\r", "\r\n", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029")
# Text with many line breaks, whitespace runs and characters that compose or fold next to them.
_BROKEN_TEXT = st.lists(
    st.one_of(
        st.text(max_size=6),
        st.sampled_from(_LINE_BREAKS),
        st.sampled_from((" ", "\t", "\u00a0", "\u3000", "\u0301", "\u1100", "\u1161", "İ", "\u200b", "\x00")),
    ),
    max_size=16,
).map("".join)


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_whitespace_runs_fold_as_the_regex_definition_says(text: str) -> None:
    # normalize folds whitespace with str.split(); the documented rule is the regex \s+ -> " ".
    expected = re.sub(r"\s+", " ", text).strip()
    assert " ".join(text.split()) == expected
    assert normalize(text) == normalize(expected)


@settings(max_examples=300, deadline=None)
@given(_BROKEN_TEXT)
def test_line_breaks_never_change_the_normal_form(text: str) -> None:
    # Rules normalise a body instead of its own lines re-joined with "\n" when nothing is quoted.
    assert normalize("\n".join(text.splitlines())) == normalize(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("N\u2c9f\u2c9fr", "noor", id="coptic-o"),
        pytest.param("\u13a1obin", "robin", id="cherokee-capital-r"),
        pytest.param("\uab75van", "ivan", id="cherokee-small-v-as-i"),
        pytest.param("\u0399van", "ivan", id="greek-capital-iota-is-i-not-l"),
        pytest.param("\u04c0van", "ivan", id="cyrillic-palochka-is-i"),
        pytest.param("\u1d0f\u1d0f", "oo", id="latin-small-capitals"),
        pytest.param("\u0442\u0435\u0441\u0442", "tect", id="cyrillic-small-te-via-small-capital"),
        pytest.param("\u0585\u0578", "on", id="armenian"),
        pytest.param("\ua4f3\ua4e0", "on", id="lisu"),
        pytest.param("\u0141ukasz S\u00e6ther", "lukasz saether", id="latin-stroke-and-ligature"),
        pytest.param("\u0e50\u09ea", "08", id="thai-and-bengali-digits-read-as-digits"),
        pytest.param("\u2502 Noor \u2502", "\u2502 noor \u2502", id="box-drawing-is-not-a-letter"),
        pytest.param("\u00a9 \u00ae", "\u00a9 \u00ae", id="symbols-are-not-letters"),
    ],
)
def test_look_alikes_of_every_script(text: str, expected: str) -> None:
    assert normalize(text) == expected


def test_the_confusables_data_covers_every_latin_letter_from_other_scripts() -> None:
    readings: dict[str, set[str]] = {}
    for code_point, reading in confusable_table().items():
        script = unicodedata.name(chr(code_point), "?").split()[0]
        if script not in ("LATIN", "MATHEMATICAL", "FULLWIDTH") and len(reading) == 1:
            readings.setdefault(reading, set()).add(script)
    assert set("abcdefghijklmnopqrstuvwxyz") <= set(readings)
    assert {"CHEROKEE", "COPTIC", "CYRILLIC", "GREEK", "ARMENIAN"} <= set().union(*readings.values())


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(sorted(confusable_table().items())))
def test_every_confusable_normalises_to_its_reading(item: tuple[int, str]) -> None:
    code_point, reading = item
    char = chr(code_point)
    # Characters NFKC folds first (fullwidth, mathematical, ligatures) follow NFKC instead; the
    # supplement overrides a few prototypes (see normalize).
    assume(unicodedata.normalize("NFKD", char) == char and ord(char) not in SUPPLEMENTED)
    assert normalize(char) == reading
    assert normalize(f"x{char}y") == f"x{reading}y"


def test_message_bodies_are_cached_in_few_entries() -> None:
    # The cache must not keep the bodies of the last hundreds of messages alive.
    bodies = [
        f"Body {number}: " + "Noor Haddad was there. " * (LONG_TEXT_CHARS // 20) for number in range(40)
    ]
    short_entries = _normalize_short.cache_info().currsize
    for body in bodies:
        assert normalize(body) == " ".join(body.lower().split())
    assert _normalize_long.cache_info().currsize <= 16
    assert _normalize_short.cache_info().currsize == short_entries
    # A body normalised again by the next rule is answered from the cache.
    hits = _normalize_long.cache_info().hits
    normalize(bodies[-1])
    assert _normalize_long.cache_info().hits == hits + 1
