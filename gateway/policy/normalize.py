"""Fold text to the one canonical form identity matching works on.

Both the protected identities and every piece of message text go through :func:`normalize`, so
anything that changes how text *looks to a reader* without changing what it *says* disappears:
compatibility forms (fullwidth, mathematical, circled letters: NFKC), case (casefold), accents and
other combining marks, invisible characters (zero-width, soft hyphen, bidi controls, variation
selectors, tag characters), common look-alike letters from Cyrillic, Greek, Armenian and small
capitals, and every run of whitespace or line breaks (one space).
"""

from __future__ import annotations

import unicodedata
from functools import cache, lru_cache

# Look-alikes mapped to the Latin letter a reader would take them for. Upper and lower case are
# mapped separately, before casefolding, because some shapes differ by case (Greek capital eta
# looks like H, its small form like n).
_CONFUSABLE_PAIRS = {
    # Cyrillic capitals
    "А": "A", "В": "B", "Е": "E", "К": "K", "М": "M", "Н": "H", "О": "O", "Р": "P", "С": "C",
    "Т": "T", "Х": "X", "У": "Y", "Ѕ": "S", "І": "I", "Ј": "J", "Ԛ": "Q", "Ԝ": "W", "Ү": "Y",
    "Ӏ": "I", "Ԁ": "D", "Һ": "H",
    # Cyrillic small letters
    "а": "a", "е": "e", "о": "o", "р": "p", "с": "c", "у": "y", "х": "x", "ѕ": "s", "і": "i",
    "ј": "j", "ԁ": "d", "һ": "h", "ԛ": "q", "ԝ": "w", "ӏ": "l", "ү": "y", "ѵ": "v",
    # Greek capitals
    "Α": "A", "Β": "B", "Ε": "E", "Ζ": "Z", "Η": "H", "Ι": "I", "Κ": "K", "Μ": "M", "Ν": "N",
    "Ο": "O", "Ρ": "P", "Τ": "T", "Υ": "Y", "Χ": "X", "Ϲ": "C", "Ϳ": "J",
    # Greek small letters
    "α": "a", "ο": "o", "ρ": "p", "ι": "i", "κ": "k", "ν": "v", "υ": "u", "χ": "x", "ϲ": "c",
    "ϳ": "j", "η": "n", "τ": "t", "ε": "e",
    # Armenian
    "օ": "o", "ս": "u", "ո": "n", "հ": "h", "ց": "g", "զ": "q", "ա": "w", "Օ": "O", "Տ": "S",
    # Latin variants NFKC leaves alone
    "ı": "i", "ȷ": "j", "ɑ": "a", "ɡ": "g", "ɩ": "i", "ʋ": "u", "ɒ": "a", "ƿ": "p", "ſ": "s", "ß": "ss",
    # Punctuation variants that would otherwise split or glue words differently
    "\u2018": "'", "\u2019": "'", "\u02bc": "'", "\u2032": "'", "\u2010": "-", "\u2012": "-",
    "\u2013": "-", "\u2014": "-", "\u2212": "-", "\u00b7": ".",
    # Small capitals
    "ᴀ": "a", "ʙ": "b", "ᴄ": "c", "ᴅ": "d", "ᴇ": "e", "ɢ": "g", "ʜ": "h", "ɪ": "i", "ᴊ": "j",
    "ᴋ": "k", "ʟ": "l", "ᴍ": "m", "ɴ": "n", "ᴏ": "o", "ᴘ": "p", "ʀ": "r", "ꜱ": "s", "ᴛ": "t",
    "ᴜ": "u", "ᴠ": "v", "ᴡ": "w", "ʏ": "y", "ᴢ": "z",
}  # fmt: skip

# Characters that render as blank space although Unicode does not call them whitespace.
_BLANK_LOOKING = "\u115f\u1160\u3164\uffa0\u2800"

_ASCII_CONTROLS: dict[int, None] = dict.fromkeys((*range(0x00, 0x09), *range(0x0E, 0x1C), 0x7F))

# Blocks whose combining marks and format characters we must find; scanning only these keeps the
# one-off table build fast (Unicode assigns no Mn/Me/Cf code points elsewhere).
_SCANNED_RANGES = (range(0x0000, 0x30000), range(0xE0000, 0xE1000))


@cache
def _fold_table() -> dict[int, str | None]:
    """Translation table: drop invisible characters and combining marks, map look-alikes."""
    table: dict[int, str | None] = {}
    for block in _SCANNED_RANGES:
        for code_point in block:
            category = unicodedata.category(chr(code_point))
            if category in ("Mn", "Me", "Cf") or (category == "Cc" and not chr(code_point).isspace()):
                table[code_point] = None
    for blank in _BLANK_LOOKING:
        table[ord(blank)] = " "
    for source, target in _CONFUSABLE_PAIRS.items():
        table[ord(source)] = target
    return table


@lru_cache(maxsize=256)
def normalize(text: str) -> str:
    """Return the canonical matching form of ``text``.

    Cached: every rule normalises the same decoded parts of a message, and phrase lists are
    normalised on every check.

    NFKC compatibility folding, casefolding, removal of accents/combining marks and invisible
    characters, mapping of common look-alike letters to Latin, and collapse of every whitespace
    run (spaces, tabs, line breaks, Unicode spaces) to a single space, trimmed at both ends.
    The result is idempotent: ``normalize(normalize(x)) == normalize(x)``.
    """
    if text.isascii():
        # Fast path for the common case; gives exactly what the full path gives on ASCII.
        folded = text.lower().translate(_ASCII_CONTROLS)
    else:
        table = _fold_table()
        folded = unicodedata.normalize("NFKD", text).translate(table)
        # Casefolding can expose new marks (e.g. U+0130 -> i + combining dot) and new look-alikes.
        folded = unicodedata.normalize("NFKD", folded.casefold()).translate(table)
        folded = unicodedata.normalize("NFC", folded)
    # str.split() and the regex ``\s`` know the same whitespace (Py_UNICODE_ISSPACE); splitting is
    # several times faster than substituting every run, and drops the ends as strip() did.
    return " ".join(folded.split())
