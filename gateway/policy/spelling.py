"""Fold English spelling variants of a word to one key, so fingerprints survive British/American spelling.

Fingerprints of protected content (``gateway.policy.fingerprint``) hash :func:`spelling_key` of
each word rather than the word, so "organised"/"organized", "behaviour"/"behavior",
"travelled"/"traveled", "centre"/"center", "dialogue"/"dialog" and "defence"/"defense" are one
word. The key is never shown to anyone; it only has to give variants the same value. It may
also merge a few unrelated words ("later"/"latter", "hoping"/"hopping"): that only makes a copy
slightly easier to recognise, never harder.

Words arrive already normalised (lower case, no accents). Short words are left alone, so "four"
does not become "for", nor "your" "yor".
"""

from __future__ import annotations

import re
from functools import lru_cache

_DOUBLED = re.compile(r"([a-z])\1+")
# Suffix rewrites, applied in order to the word with doubled letters collapsed. Each pattern
# requires a stem long enough that short common words ("rise", "hour", "acre") stay as they are.
_SUFFIXES = (
    # organise/organize, analyse/analyze, realisation/realization
    (re.compile(r"(?<=[a-z]{3})([iy])s(e|ed|es|ing|ation|ations|er|ers)$"), r"\1z\2"),
    # colour/color, behaviours/behaviors, favourite/favorite, honourable/honorable
    (re.compile(r"(?<=[a-z]{3})our(s|ed|ing|ite|ites|able|ably|er|ers|ful|less)?$"), r"or\1"),
    # centre/center, theatres/theaters, metre/meter, fibre/fiber
    (re.compile(r"(?<=[a-z]{2})([tb])re(s?)$"), r"\1er\2"),
    (re.compile(r"(?<=[a-z]{2})([tb])red$"), r"\1ered"),
    # dialogue/dialog, catalogues/catalogs
    (re.compile(r"(?<=[a-z]{3})ogue(s?)$"), r"og\1"),
    # defence/defense, offence/offense, licence/license, pretence/pretense
    (re.compile(r"^(def|off|lic|pret)enc(e|es)$"), r"\1ens\2"),
    # programme/program (doubled letters are already collapsed)
    (re.compile(r"^programe(s?)$"), r"program\1"),
)


@lru_cache(maxsize=65536)
def spelling_key(word: str) -> str:
    """The key shared by the spelling variants of ``word`` (a normalised word)."""
    if len(word) < 5 or not word.isalpha():
        return word
    key = _DOUBLED.sub(r"\1", word)
    for pattern, replacement in _SUFFIXES:
        key = pattern.sub(replacement, key)
    return key
