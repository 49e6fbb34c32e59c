"""Find protected identities in text: one Aho-Corasick automaton over normalised patterns, boundary-checked.

The automaton is built once per policy load (and rebuilt whenever cases change); a lookup costs
one pass over the normalised text whatever the number of identities, plus a constant-time
boundary check per candidate hit.

Matching rules, all applied to :func:`~gateway.policy.normalize.normalize`-d text:

* Every identity matches on word boundaries: the character before and after a hit must not be a
  letter or digit, so "Jin" does not match "Jingle", "Beijing" or "Lijin". Scripts written
  without spaces between words (Chinese, Japanese, Thai, Korean particles...) are the exception:
  a letter of such a script never blocks a hit, and a name written in such a script matches
  anywhere, because its words cannot be told apart by spaces.
* Identities of two characters or fewer (initials such as "JP", short aliases such as "Li") must
  stand alone: besides letters and digits, they are also blocked when glued to another word by
  ``. - _ + / = @ % & ~ # * \\ | ^`` (as in ``EUC-JP``, ``ports-jp``, ``.co.jp`` or a base64 run).
* One-word identities of four characters or fewer are not looked for inside machine tokens: a run
  of 16 or more characters without spaces that mixes letters and digits (a base64 signature, a
  message ID, a tracking code), where three letters in a row are chance, not a name.
* Multi-word names match across any whitespace or line break, and also when their words are
  joined by ``_``, ``-`` or ``.`` (``Jin_Park.txt``, ``jin.park@...``) or, when every word has at
  least three letters, run together (``JinPark``).
* Usernames match as tokens, with or without a leading ``@``; addresses match as whole addresses,
  case-insensitively (also in their IDNA / Unicode domain spelling).
* A name is never split: a person protected as "Jin Park" is not found by "Park" alone; admins
  list each alias they want protected.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass

import ahocorasick

from gateway.policy.model import IdentityKind, ProtectedIdentity
from gateway.policy.normalize import normalize

# Shorter patterns would match inside ordinary text everywhere; policy validation reports them.
MIN_PATTERN_LENGTH = 2
# Patterns this short must stand alone (see module docstring).
SHORT_PATTERN_LENGTH = 2
# One-word patterns this short are ignored inside machine tokens of at least MACHINE_TOKEN_LENGTH.
WEAK_PATTERN_LENGTH = 4
MACHINE_TOKEN_LENGTH = 16
_TOKEN_ENDS = frozenset(" <>()[]{}\"'`,;")
_TOKEN_SCAN = 64  # how far to look for a token's ends: bounded, so work stays linear
_SHORT_JOINERS = frozenset(".-_+/=@%&~#*\\|^")
_NAME_JOINERS = (" ", "_", "-", ".")
_RUN_TOGETHER_MIN_WORD = 3

# Scripts written without spaces between words (code point ranges, inclusive).
_SPACELESS_RANGES = (
    (0x0E00, 0x0EFF),  # Thai, Lao
    (0x1000, 0x109F),  # Myanmar
    (0x1100, 0x11FF),  # Hangul Jamo
    (0x1780, 0x17FF),  # Khmer
    (0x2E80, 0x2FDF),  # CJK radicals
    (0x3040, 0x30FF),  # Hiragana, Katakana
    (0x3100, 0x31FF),  # Bopomofo, Hangul compatibility jamo, Katakana extensions
    (0x3400, 0x4DBF),  # CJK extension A
    (0x4E00, 0x9FFF),  # CJK unified ideographs
    (0xA960, 0xA97F),  # Hangul Jamo extended A
    (0xAC00, 0xD7FF),  # Hangul syllables and Jamo extended B
    (0xF900, 0xFAFF),  # CJK compatibility ideographs
    (0x20000, 0x3FFFF),  # CJK extensions B and later
)


def _is_spaceless(char: str) -> bool:
    code_point = ord(char)
    if code_point < _SPACELESS_RANGES[0][0]:
        return False
    return any(low <= code_point <= high for low, high in _SPACELESS_RANGES)


def _is_word_char(char: str) -> bool:
    """A character that, next to a hit, makes the hit part of a longer word."""
    if char.isascii():
        return char.isalnum()
    return char.isalnum() and not _is_spaceless(char)


@dataclass(frozen=True)
class _Pattern:
    length: int
    short: bool
    weak: bool  # one short word: chance in machine tokens
    free_start: bool  # starts with a spaceless-script letter: no boundary needed before it
    free_end: bool
    identities: tuple[ProtectedIdentity, ...]


def _address_variants(address: str) -> set[str]:
    """The address itself plus its domain spelt in IDNA (xn--) and in Unicode, all normalised.

    Works on the address as written: normalising first would strip the accents IDNA encodes.
    """
    variants = {normalize(address)}
    local, at, domain = unicodedata.normalize("NFC", address).rpartition("@")
    if not at or not domain:
        return variants
    for convert in (_domain_to_ascii, _domain_to_unicode):
        converted = convert(domain.casefold())
        if converted:
            variants.add(normalize(f"{local}@{converted}"))
    return variants


def _domain_to_ascii(domain: str) -> str | None:
    if domain.isascii():
        return None
    try:
        return domain.encode("idna").decode("ascii")
    except UnicodeError:
        return None


def _domain_to_unicode(domain: str) -> str | None:
    if "xn--" not in domain:
        return None
    try:
        return domain.encode("ascii").decode("idna")
    except UnicodeError:
        return None


def patterns_for(identity: ProtectedIdentity) -> set[str]:
    """Every normalised string that reveals ``identity`` (empty if it is too short to match)."""
    value = identity.value.strip()
    if identity.kind is IdentityKind.USERNAME:
        variants = {normalize(value.lstrip("@"))}
    elif identity.kind is IdentityKind.ADDRESS:
        variants = _address_variants(value.strip("<>"))
    else:
        base = normalize(value)
        words = base.split(" ")
        variants = {joiner.join(words) for joiner in _NAME_JOINERS}
        if len(words) > 1 and all(len(word) >= _RUN_TOGETHER_MIN_WORD for word in words):
            variants.add("".join(words))
    return {variant for variant in variants if len(variant) >= MIN_PATTERN_LENGTH}


class IdentityMatcher:
    """Multi-pattern matcher over normalised text; implements ``model.IdentityFinder``."""

    def __init__(self, automaton: ahocorasick.Automaton | None, identity_count: int) -> None:
        self._automaton = automaton
        self.identity_count = identity_count

    @classmethod
    def build(cls, identities: Iterable[ProtectedIdentity]) -> IdentityMatcher:
        """Compile every identity of every case into one automaton (once per policy load)."""
        by_pattern: dict[str, list[ProtectedIdentity]] = {}
        count = 0
        for identity in identities:
            count += 1
            for pattern in patterns_for(identity):
                holders = by_pattern.setdefault(pattern, [])
                if identity not in holders:
                    holders.append(identity)
        if not by_pattern:
            return cls(None, count)
        automaton = ahocorasick.Automaton()
        for pattern, holders in by_pattern.items():
            automaton.add_word(
                pattern,
                _Pattern(
                    length=len(pattern),
                    short=len(pattern) <= SHORT_PATTERN_LENGTH,
                    weak=len(pattern) <= WEAK_PATTERN_LENGTH and " " not in pattern,
                    free_start=_is_spaceless(pattern[0]),
                    free_end=_is_spaceless(pattern[-1]),
                    identities=tuple(holders),
                ),
            )
        automaton.make_automaton()
        return cls(automaton, count)

    def find(self, text: str) -> list[ProtectedIdentity]:
        """Every protected identity occurring in ``text`` on word boundaries (deduplicated)."""
        return self.find_normalized(normalize(text))

    def find_normalized(self, text: str) -> list[ProtectedIdentity]:
        """Like :meth:`find` for text that is already the output of ``normalize``."""
        if self._automaton is None or not text:
            return []
        found: dict[ProtectedIdentity, None] = {}
        last = len(text) - 1
        for end, pattern in self._automaton.iter(text):
            start = end - pattern.length + 1
            if start > 0 and not pattern.free_start and _blocks(text, start - 1, -1, pattern.short):
                continue
            if end < last and not pattern.free_end and _blocks(text, end + 1, 1, pattern.short):
                continue
            if pattern.weak and _in_machine_token(text, start, end + 1):
                continue
            for identity in pattern.identities:
                found[identity] = None
        return list(found)


def _in_machine_token(text: str, start: int, end: int) -> bool:
    """Whether ``text[start:end]`` lies in a long run mixing letters and digits (see module doc)."""
    low = start
    while low > max(0, start - _TOKEN_SCAN) and text[low - 1] not in _TOKEN_ENDS:
        low -= 1
    high = end
    while high < min(len(text), end + _TOKEN_SCAN) and text[high] not in _TOKEN_ENDS:
        high += 1
    token = text[low:high]
    return (
        len(token) >= MACHINE_TOKEN_LENGTH
        and any(char.isdigit() for char in token)
        and any(char.isalpha() for char in token)
    )


def _blocks(text: str, index: int, step: int, short: bool) -> bool:
    """Whether the character at ``index`` (next to a hit) glues the hit into a longer word."""
    char = text[index]
    if _is_word_char(char):
        return True
    if short and char in _SHORT_JOINERS:
        beyond = index + step
        return 0 <= beyond < len(text) and _is_word_char(text[beyond])
    return False
