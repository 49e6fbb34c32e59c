"""Find protected identities in text: one Aho-Corasick automaton over normalised patterns, boundary-checked.

The automaton is built once per policy load (and rebuilt whenever cases change) from every form
``gateway.policy.variants`` derives from the registry; a lookup costs one pass over the normalised
text whatever the number of identities, plus a constant-time check of the text around each
candidate hit. The hits of the last few texts are kept, by their normalised text: a message's HTML
alternative usually reads as its plain-text part, and several rules look at the same text.

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
* A word of a full name found alone is a weak hit; it becomes strong after a title or the
  person's initial, before ``, N.``, or next to another word of the same name (see variants).
* Letter-spaced text (``N o o r  H a d d a d``, ``N.o.o.r``, ``N-o-o-r``) is read a second time
  with each run of single letters joined; a hit there counts only when it covers the whole run
  (or the run minus a leading title or initial, or a trailing possessive ``s``), so "I a m"
  never matches a short name.
* Usernames match as tokens, with or without a leading ``@``; addresses match as whole addresses,
  case-insensitively (also in their IDNA / Unicode domain spelling).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass

import ahocorasick

from gateway.policy.model import IdentityHit, IdentityKind, ProtectedIdentity, Strength
from gateway.policy.normalize import normalize
from gateway.policy.variants import (
    DEFAULT_TITLES,
    FULL_NAME,
    LOCAL_PART,
    MIN_PATTERN_LENGTH,
    PARTICLES,
    WORD_INITIALS,
    Form,
    FormKind,
    forms,
    name_shape,
    titles_normalised,
)

# Patterns this short must stand alone (see module docstring).
SHORT_PATTERN_LENGTH = 2
# One-word patterns this short are ignored inside machine tokens of at least MACHINE_TOKEN_LENGTH.
WEAK_PATTERN_LENGTH = 4
MACHINE_TOKEN_LENGTH = 16
_TOKEN_ENDS = frozenset(" <>()[]{}\"'`,;")
_TOKEN_SCAN = 64  # how far to look for a token's ends: bounded, so work stays linear
_SHORT_JOINERS = frozenset(".-_+/=@%&~#*\\|^")
# What may stand between two words of one name for them to count as written together.
_NAME_GLUE = frozenset({" ", ", ", ",", "_", "-", "."})
_WORD_SCAN = 16  # how far back a title or initial is looked for
_MAX_PARTICLES = 3
_OPENERS = "([{<\"'`*_/"
_INITIAL_AFTER = re.compile(r"(,?) ([^\W\d_])(\.?)(?![^\W_])")
# A run of 3+ single letters, each separated from the next by one or two separator characters.
_SPACED_RUN = re.compile(r"(?<![^\W_])[^\W\d_](?:[ ._,'*/+~|-]{1,3}[^\W\d_](?![^\W_])){2,}")
# A cheap first look (no look-behind, led by a separator): most text has no letter-spaced run.
_SPACED_SEPARATORS = frozenset(" ._,'*/+~|-")
# Recent texts' hits, by their normalised text: a message's HTML alternative usually reads as its
# plain-text part, and several rules look at the same text.
_RECENT_TEXTS = 16
_SPACED_HINT = re.compile(r"[ ._,'*/+~|-][^\W\d_][ ._,'*/+~|-]{1,3}[^\W\d_][ ._,'*/+~|-]")
# The same look at ASCII text, faster: each character read as its class (separator, letter, other),
# then a search led by a literal, which the regex engine runs without trying every separator.
_ASCII_CLASSES = {
    code: "s" if chr(code) in _SPACED_SEPARATORS else "l" if chr(code).isalpha() else "o"
    for code in range(128)
}
_ASCII_SPACED_HINT = re.compile("sls{1,3}ls")

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


@dataclass(frozen=True, slots=True)
class _Entry:
    """One identity behind a pattern, and how a hit on it counts."""

    identity: ProtectedIdentity
    form: Form
    initials: frozenset[str]


@dataclass(frozen=True, slots=True)
class _Pattern:
    text: str
    length: int
    short: bool
    weak: bool  # one short word: chance in machine tokens
    free_start: bool  # starts with a spaceless-script letter: no boundary needed before it
    free_end: bool
    entries: tuple[_Entry, ...]


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


def all_forms(identity: ProtectedIdentity) -> list[Form]:
    """Every form the matcher looks for on behalf of ``identity`` (too-short ones left out)."""
    found = forms(identity)
    if identity.kind is IdentityKind.ADDRESS:
        found += [
            Form(variant, FormKind.WHOLE, Strength.STRONG, "address")
            for variant in _address_variants(identity.value.strip().strip("<>"))
        ]
    return [form for form in found if len(form.pattern) >= MIN_PATTERN_LENGTH]


def patterns_for(identity: ProtectedIdentity) -> set[str]:
    """Every normalised string that reveals ``identity`` on its own (empty if it is too short)."""
    return {
        form.pattern
        for form in all_forms(identity)
        if form.kind is FormKind.WHOLE and form.strength is Strength.STRONG
    }


class IdentityMatcher:
    """Multi-pattern matcher over normalised text; implements ``model.IdentityFinder``."""

    def __init__(
        self, automaton: ahocorasick.Automaton | None, identity_count: int, titles: frozenset[str]
    ) -> None:
        self._automaton = automaton
        self._titles = titles
        self.identity_count = identity_count
        self._recent: dict[str, tuple[IdentityHit, ...]] = {}

    @classmethod
    def build(
        cls, identities: Iterable[ProtectedIdentity], *, titles: Iterable[str] = DEFAULT_TITLES
    ) -> IdentityMatcher:
        """Compile every form of every identity of every case into one automaton (once per policy load)."""
        # Keyed by the identity object and the form's label: cheap to hash, and one identity's
        # forms of one pattern and label are the same form.
        by_pattern: dict[str, dict[tuple[int, str, bool], _Entry]] = {}
        count = 0
        for identity in identities:
            count += 1
            shape = name_shape(identity)
            initials = shape.initials if shape is not None else frozenset()
            for form in all_forms(identity):
                holders = by_pattern.setdefault(form.pattern, {})
                key = (id(identity), form.label, form.kind is FormKind.PART)
                if key not in holders:
                    holders[key] = _Entry(identity, form, initials)
        normal_titles = titles_normalised(titles)
        if not by_pattern:
            return cls(None, count, normal_titles)
        automaton = ahocorasick.Automaton()
        for pattern, holders in by_pattern.items():
            entries = _registered_first(holders.values())
            automaton.add_word(
                pattern,
                _Pattern(
                    text=pattern,
                    length=len(pattern),
                    short=len(pattern) <= SHORT_PATTERN_LENGTH,
                    weak=len(pattern) <= WEAK_PATTERN_LENGTH and " " not in pattern,
                    free_start=_is_spaceless(pattern[0]),
                    free_end=_is_spaceless(pattern[-1]),
                    entries=entries,
                ),
            )
        automaton.make_automaton()
        return cls(automaton, count, normal_titles)

    def find(self, text: str) -> list[ProtectedIdentity]:
        """Every protected identity written in a strong form in ``text`` (deduplicated, in order)."""
        found: dict[ProtectedIdentity, None] = {}
        for hit in self.find_hits(text):
            if hit.strength is Strength.STRONG:
                found[hit.identity] = None
        return list(found)

    def find_normalized(self, text: str) -> list[ProtectedIdentity]:
        """Like :meth:`find` for text that is already the output of ``normalize``."""
        return self.find(text)

    def find_hits(self, text: str) -> list[IdentityHit]:
        """Strong and weak hits in ``text``: one per identity, strength and form, in order.

        A weak hit is left out when the same person is also found in a strong form in ``text``.
        """
        if self._automaton is None or not text:
            return []
        normal = normalize(text)
        if not normal:
            return []
        recent = self._recent
        known = recent.get(normal)
        if known is None:
            known = tuple(self._hits(normal))
            if len(recent) >= _RECENT_TEXTS:
                # Keep the newer half; a new dict, so a thread sharing the matcher never sees one half done.
                recent = self._recent = dict(list(recent.items())[_RECENT_TEXTS // 2 :])
            recent[normal] = known
        return list(known)

    def _hits(self, normal: str) -> list[IdentityHit]:
        hits: dict[tuple[ProtectedIdentity, Strength, str], IdentityHit] = {}
        self._scan(normal, hits)
        if spaced_hint(normal) or (len(normal) > 2 and normal[1] in _SPACED_SEPARATORS):
            self._scan_spaced(normal, hits)
        strong = {
            (hit.identity.case, hit.identity.person)
            for hit in hits.values()
            if hit.strength is Strength.STRONG
        }
        return [
            hit
            for hit in hits.values()
            if hit.strength is Strength.STRONG or (hit.identity.case, hit.identity.person) not in strong
        ]

    def _scan(self, text: str, hits: dict[tuple[ProtectedIdentity, Strength, str], IdentityHit]) -> None:
        assert self._automaton is not None
        last = len(text) - 1
        # The last name word found for each identity: (end index, word, in the surname).
        previous: dict[ProtectedIdentity, tuple[int, str, bool]] = {}
        for end, pattern in self._automaton.iter(text):
            start = end - pattern.length + 1
            # Most hits inside a longer word are rejected by the first test, without a call.
            if start > 0 and not pattern.free_start:
                char = text[start - 1]
                if char != " " and (
                    (char.isascii() and char.isalnum()) or _blocks(text, start - 1, -1, pattern.short)
                ):
                    continue
            if end < last and not pattern.free_end:
                char = text[end + 1]
                if char != " " and (
                    (char.isascii() and char.isalnum()) or _blocks(text, end + 1, 1, pattern.short)
                ):
                    continue
            if pattern.weak and _in_machine_token(text, start, end + 1):
                continue
            context: str | None = None
            context_known = False
            for entry in pattern.entries:
                form = entry.form
                if form.kind is FormKind.WHOLE:
                    if form.strength is Strength.STRONG or form.alone:
                        _add(hits, entry, form.strength, form.label, pattern.text)
                    continue
                if form.kind is FormKind.SPACED:
                    continue
                identity = entry.identity
                before = previous.get(identity)
                previous[identity] = (end, pattern.text, form.in_last)
                if (
                    before is not None
                    and before[1] != pattern.text
                    and not (before[2] and form.in_last)
                    and text[before[0] + 1 : start] in _NAME_GLUE
                ):
                    _add(hits, entry, Strength.STRONG, "words of the full name", pattern.text)
                    continue
                if form.surname:
                    if not context_known:
                        context, context_known = _before(text, start), True
                    upgrade = self._surname_context(text, context, end, entry)
                    if upgrade is not None:
                        _add(hits, entry, Strength.STRONG, upgrade, pattern.text)
                        continue
                if form.alone:
                    _add(hits, entry, Strength.WEAK, form.label, pattern.text)

    def _surname_context(self, text: str, before: str | None, end: int, entry: _Entry) -> str | None:
        """How the text around a surname hit makes it strong (None: it does not)."""
        if before is not None:
            bare = before.rstrip(".")
            if bare in self._titles and "." not in bare:
                return "title and surname"
            if _is_initials(before, entry.initials):
                return "initial and surname"
        after = _INITIAL_AFTER.match(text, end + 1)
        # "Haddad, N." or "Haddad N."; "Lindqvist, I think" is the pronoun, not an initial.
        if (
            after
            and after.group(2) in entry.initials
            and (after.group(3) or (after.group(1) and after.group(2) not in WORD_INITIALS))
        ):
            return "surname and initial"
        return None

    def _title_or_initials(self, prefix: str, initials: frozenset[str]) -> bool:
        """Whether the letters before a surname in a letter-spaced run are a title or initials."""
        for _ in range(_MAX_PARTICLES + 1):
            if prefix.rstrip(".") in self._titles or _is_initials(prefix, initials):
                return True
            # "M r v a n d e r B e r g": particles may stand between the title and the surname.
            bare = prefix.rstrip(".")
            particle = next((p for p in PARTICLES if bare.endswith(p) and len(bare) > len(p)), None)
            if particle is None:
                return False
            prefix = bare[: -len(particle)] + ("." if prefix.endswith(".") else "")
        return False

    def _scan_spaced(
        self, text: str, hits: dict[tuple[ProtectedIdentity, Strength, str], IdentityHit]
    ) -> None:
        """The letter-spaced reading: each run of single letters joined, matched as a whole."""
        assert self._automaton is not None
        for run in _SPACED_RUN.finditer(text):
            joined = "".join(char for char in run.group() if char.isalpha())
            size = len(joined)
            for end, pattern in self._automaton.iter(joined):
                start = end - pattern.length + 1
                whole = start == 0 and (end == size - 1 or joined[end + 1 :] == "s")
                prefix = joined[:start] if end == size - 1 and start > 0 else ""
                if not whole and not prefix:
                    continue
                for entry in pattern.entries:
                    form = entry.form
                    if whole and form.kind is not FormKind.PART:
                        if form.strength is Strength.STRONG or form.alone:
                            _add(hits, entry, form.strength, f"{form.label}, letter-spaced", pattern.text)
                        continue
                    if form.kind is not FormKind.PART:
                        continue
                    if not whole:
                        # "A . v a n  d e r  B e r g": the dot after a lone initial is kept.
                        dotted = prefix if run.group()[1:2] != "." else prefix + "."
                        if form.surname and self._title_or_initials(dotted, entry.initials):
                            _add(
                                hits,
                                entry,
                                Strength.STRONG,
                                "surname with a title or initial, letter-spaced",
                                pattern.text,
                            )
                        continue
                    upgrade = (
                        self._surname_context(text, _before(text, run.start()), run.end() - 1, entry)
                        if form.surname
                        else None
                    )
                    if upgrade is not None:
                        _add(hits, entry, Strength.STRONG, f"{upgrade}, letter-spaced", pattern.text)
                    elif form.alone:
                        _add(hits, entry, Strength.WEAK, f"{form.label}, letter-spaced", pattern.text)


def _registered_first(entries: Iterable[_Entry]) -> tuple[_Entry, ...]:
    """The entries of one pattern, without a person's derived forms where it is also registered.

    "rcastellano" registered as a username is reported as the username, not also as the initial
    and surname it happens to be; "jin.park" as a full name, not also as an address's local part.
    """
    entries = tuple(entries)
    if len(entries) == 1:
        return entries
    registered = {
        (entry.identity.case, entry.identity.person)
        for entry in entries
        if entry.form.kind is FormKind.WHOLE and not _derived(entry)
    }
    return tuple(
        entry
        for entry in entries
        if not _derived(entry) or (entry.identity.case, entry.identity.person) not in registered
    )


def _derived(entry: _Entry) -> bool:
    """Whether a whole form was derived by the gateway rather than written by the admin."""
    form = entry.form
    if form.kind is not FormKind.WHOLE:
        return False
    if entry.identity.kind is IdentityKind.NAME:
        return form.label != FULL_NAME
    return entry.identity.kind is IdentityKind.ADDRESS and form.label == LOCAL_PART


def _add(
    hits: dict[tuple[ProtectedIdentity, Strength, str], IdentityHit],
    entry: _Entry,
    strength: Strength,
    label: str,
    variant: str,
) -> None:
    key = (entry.identity, strength, label)
    if key not in hits:
        hits[key] = IdentityHit(entry.identity, strength, label, variant)


def _before(text: str, start: int) -> str | None:
    """The word just before ``start`` (``mx.``, ``n.a.``), skipping name particles ("van der")."""
    index = start
    for _ in range(_MAX_PARTICLES + 1):
        if index == 0:
            return None
        char = text[index - 1]
        if char == " ":
            stop = index - 1
        elif char == ".":
            stop = index
        else:
            return None
        low = stop
        while low > 0 and text[low - 1] != " " and stop - low < _WORD_SCAN:
            low -= 1
        if low > 0 and text[low - 1] != " ":
            return None
        # "(Mx Haddad", "[Dr. Haddad": opening punctuation is not part of the title.
        word = text[low:stop].lstrip(_OPENERS)
        if not word:
            return None
        if word not in PARTICLES:
            return word
        index = low
    return None


def _is_initials(word: str, initials: frozenset[str]) -> bool:
    """Whether ``word`` is the person's initials ("n", "n.", "n.a.", "na"), not an ordinary word."""
    letters = word.replace(".", "")
    if not letters or len(letters) > 3 or not all(letter in initials for letter in letters):
        return False
    # "a" and "i" alone, without a dot, are English words, not initials.
    return len(letters) > 1 or "." in word or letters not in WORD_INITIALS


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


def spaced_hint(text: str) -> bool:
    """Whether ``text`` may hold a letter-spaced run (``_SPACED_HINT`` finds one)."""
    if text.isascii():
        return _ASCII_SPACED_HINT.search(text.translate(_ASCII_CLASSES)) is not None
    return _SPACED_HINT.search(text) is not None


def _blocks(text: str, index: int, step: int, short: bool) -> bool:
    """Whether the character at ``index`` (next to a hit) glues the hit into a longer word."""
    char = text[index]
    if _is_word_char(char):
        return True
    if short and char in _SHORT_JOINERS:
        beyond = index + step
        return 0 <= beyond < len(text) and _is_word_char(text[beyond])
    return False
