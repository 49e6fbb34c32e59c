"""Fold text to the one canonical form identity matching works on.

Both the protected identities and every piece of message text go through :func:`normalize`, so
anything that changes how text *looks to a reader* without changing what it *says* disappears:
compatibility forms (fullwidth, mathematical, circled letters: NFKC), case (casefold), accents and
other combining marks, invisible characters (zero-width, soft hyphen, bidi controls, variation
selectors, tag characters), look-alike letters and digits of every script (the Unicode confusables
data of UTS #39: Cyrillic, Greek, Armenian, Coptic, Cherokee, Canadian syllabics, Latin variants...)
mapped to the Latin letter a reader takes them for, and every run of whitespace or line breaks
(one space).
"""

from __future__ import annotations

import re
import unicodedata
from functools import cache, lru_cache

# What the UTS #39 data leaves out or maps to a non-Latin prototype (Greek tau -> small capital T),
# and punctuation variants that would otherwise split or glue words differently. Applied after the
# confusables data, so these win. Upper and lower case are mapped separately, before casefolding,
# because some shapes differ by case (Greek capital eta looks like H, its small form like n).
_SUPPLEMENT = {
    "Ԛ": "Q", "Ԁ": "D", "Һ": "H", "Ӏ": "I", "ӏ": "l", "Ι": "I",
    "κ": "k", "χ": "x", "τ": "t", "ε": "e", "ς": "c", "к": "k", "м": "m",
    "ȷ": "j", "ɒ": "a", "ƿ": "p", "ſ": "s", "ß": "ss",
    "\u2018": "'", "\u2019": "'", "\u02bc": "'", "\u2032": "'", "\u2010": "-", "\u2012": "-",
    "\u2013": "-", "\u2014": "-", "\u2212": "-", "\u00b7": ".",
    "ᴀ": "a", "ʙ": "b", "ᴄ": "c", "ᴅ": "d", "ᴇ": "e", "ɢ": "g", "ʜ": "h", "ɪ": "i", "ᴊ": "j",
    "ᴋ": "k", "ʟ": "l", "ᴍ": "m", "ɴ": "n", "ᴏ": "o", "ᴘ": "p", "ʀ": "r", "ꜱ": "s", "ᴛ": "t",
    "ᴜ": "u", "ᴠ": "v", "ᴡ": "w", "ʏ": "y", "ᴢ": "z",
}  # fmt: skip

# Only letters and digits are folded by the confusables data: symbols and marks that resemble a
# letter (a box-drawing bar, a registered sign) would glue words together or split them.
_FOLDED_CATEGORIES = ("L", "N")


def _strip_marks(text: str) -> str:
    return "".join(
        char for char in unicodedata.normalize("NFKD", text) if unicodedata.category(char)[0] != "M"
    )


def _latin_reading(source: str, prototype: str) -> str | None:
    """The ASCII letters or digits a reader takes ``source`` for, from its UTS #39 prototype."""
    # A prototype may itself be a Latin small capital (Cyrillic т -> ᴛ): read it as its letter.
    stripped = "".join(_SUPPLEMENT.get(char, char) for char in _strip_marks(prototype))
    target = stripped.casefold()
    if not target or not target.isascii() or not target.isalnum():
        return None
    category = unicodedata.category(source)
    # UTS #39 gives one prototype for a whole class of look-alikes: small "l" for l, I, 1 and |,
    # capital "O" for O and 0. Read the source as the member of its class with the same case or kind.
    if stripped == "l" and (category == "Lu" or "CAPITAL" in unicodedata.name(source, "")):
        return "i"
    if category[0] == "N" and target in ("l", "o"):
        return "1" if target == "l" else "0"
    return target


@cache
def confusable_table() -> dict[int, str]:
    """Every non-ASCII letter or digit the UTS #39 confusables data maps to Latin, and its reading.

    Built once, on first use, from the data shipped with ``confusable-homoglyphs``.
    """
    from confusable_homoglyphs.confusables import confusables_data

    table: dict[int, str] = {}
    for source, homoglyphs in sorted(confusables_data.items()):
        if len(source) != 1 or source.isascii() or unicodedata.category(source)[0] not in _FOLDED_CATEGORIES:
            continue
        readings = sorted(
            {reading for glyph in homoglyphs if (reading := _latin_reading(source, glyph["c"])) is not None}
        )
        if readings:
            table[ord(source)] = readings[0]
    return table


# Characters that render as blank space although Unicode does not call them whitespace.
_BLANK_LOOKING = "\u115f\u1160\u3164\uffa0\u2800"

_ASCII_CONTROLS: dict[int, None] = dict.fromkeys((*range(0x00, 0x09), *range(0x0E, 0x1C), 0x7F))
# The same for ASCII bytes: controls to delete, and the whitespace str.split() knows (tab, line
# breaks, vertical tab, form feed, the separators 0x1C-0x1F) read as a space.
_ASCII_CONTROL_BYTES = bytes(_ASCII_CONTROLS)
_ASCII_BLANKS = bytes.maketrans(b"\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f", b" " * 9)
_SPACE_RUN = re.compile(rb"  +")

# Blocks whose combining marks and format characters we must find; scanning only these keeps the
# one-off table build fast (Unicode assigns no Mn/Me/Cf code points elsewhere).
_SCANNED_RANGES = (range(0x0000, 0x30000), range(0xE0000, 0xE1000))


@cache
def _fold_table() -> dict[int, str | None]:
    """Translation table: drop invisible characters and combining marks, map look-alikes to Latin."""
    table: dict[int, str | None] = {}
    for block in _SCANNED_RANGES:
        for code_point in block:
            category = unicodedata.category(chr(code_point))
            if category in ("Mn", "Me", "Cf") or (category == "Cc" and not chr(code_point).isspace()):
                table[code_point] = None
    for blank in _BLANK_LOOKING:
        table[ord(blank)] = " "
    table.update(confusable_table())
    for source, target in _SUPPLEMENT.items():
        table[ord(source)] = target
    for code_point, letters in _ligatures():
        table.setdefault(code_point, letters)  # the confusables data reads some by shape (Ȣ as 8)
    return table


# Latin letters that are two letters written as one ("ỻ" is "ll", "ꜩ" is "tz"), named for them.
_LIGATURE_NAME = re.compile(r"LATIN (?:SMALL|CAPITAL) (?:LETTER|LIGATURE) (?:MIDDLE-WELSH )?([A-Z]{2})")


def _ligatures() -> list[tuple[int, str]]:
    found = []
    for code_point in range(0x80, 0x30000):
        char = chr(code_point)
        match = _LIGATURE_NAME.fullmatch(unicodedata.name(char, ""))
        if match and unicodedata.category(char)[0] == "L" and unicodedata.normalize("NFKD", char) == char:
            found.append((code_point, match.group(1).lower()))
    return found


# Longer texts are message bodies, cached apart in few entries: 256 of them kept the bodies of the
# last hundred 1 MB messages alive (185 MiB more in a policy worker). A message's own texts are
# still normalised once for all its rules.
LONG_TEXT_CHARS = 4096


def normalize(text: str) -> str:
    """Return the canonical matching form of ``text``.

    Cached: every rule normalises the same decoded parts of a message, and phrase lists are
    normalised on every check.

    NFKC compatibility folding, casefolding, removal of accents/combining marks and invisible
    characters, mapping of look-alike letters of every script to Latin, and collapse of every whitespace
    run (spaces, tabs, line breaks, Unicode spaces) to a single space, trimmed at both ends.
    The result is idempotent: ``normalize(normalize(x)) == normalize(x)``.
    """
    return _normalize_long(text) if len(text) > LONG_TEXT_CHARS else _normalize_short(text)


def clear_cache() -> None:
    """Forget every cached text (benchmarks: a message new to the gateway is in no cache)."""
    _normalize_short.cache_clear()
    _normalize_long.cache_clear()


def _fold(text: str) -> str:
    if text.isascii():
        return _normalize_ascii(text)  # the common case: the same result, faster
    return _normalize_any(text)


_normalize_short = lru_cache(maxsize=256)(_fold)
_normalize_long = lru_cache(maxsize=16)(_fold)


# Right-to-left override: until the matching pop (or the end of the paragraph) characters are shown
# in reverse order, so "\u202eonalletsaC niboR" reads "Robin Castellano" on screen.
RLO = "\u202e"
_OVERRIDE_RUN = re.compile("\u202e([^\u202c\u2069\n\r\u2029]*)")


def visual_overrides(text: str) -> str:
    """What right-to-left overrides in ``text`` show: each overridden run reversed, one per line.

    :func:`normalize` drops the override characters and keeps the order of the text (what a copy
    says); message text is read both ways (see ``MimeRecord``).
    """
    if RLO not in text:
        return ""
    return "\n".join(match.group(1)[::-1] for match in _OVERRIDE_RUN.finditer(text))


def _normalize_any(text: str) -> str:
    table = _fold_table()
    folded = unicodedata.normalize("NFKD", text).translate(table)
    # Casefolding can expose new marks (e.g. U+0130 -> i + combining dot) and new look-alikes.
    folded = unicodedata.normalize("NFKD", folded.casefold()).translate(table)
    folded = unicodedata.normalize("NFC", folded)
    # str.split() and the regex ``\s`` know the same whitespace (Py_UNICODE_ISSPACE); splitting is
    # several times faster than substituting every run, and drops the ends as strip() did.
    return " ".join(folded.split())


def _normalize_ascii(text: str) -> str:
    """:func:`normalize` for ASCII text, by bytes operations that run in C.

    The same as ``" ".join(text.lower().translate(_ASCII_CONTROLS).split())``, which makes one string
    per word: three times slower on a long text than folding the bytes and collapsing runs of spaces.
    """
    folded = text.encode("ascii").lower().translate(_ASCII_BLANKS, _ASCII_CONTROL_BYTES)
    return _SPACE_RUN.sub(b" ", folded).strip(b" ").decode("ascii")
