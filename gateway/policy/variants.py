"""The forms people write a protected identity in, derived from the registry and graded by strength.

Admins list a person's names, aliases, addresses and usernames once; everything below is generated.

Strong forms (``PROTECTED_IDENTITY``) identify the person on their own:

* a full name as registered, its words joined by spaces, ``_``, ``-`` or ``.`` or run together;
* the same words in another order, with or without a comma (``Haddad, Noor``, ``Haddad Noor``),
  and any two words of the name next to each other unless both belong to the surname
  (``Noor Haddad`` for "Noor Amal Haddad", ``Sam Reyes`` for "Sam Okonkwo-Reyes");
* a title followed by the surname or a part of it (``Mx Haddad``, ``Dr. Reyes``; the titles are
  the policy's ``name_forms.titles``, with or without a dot, name particles such as "van der" may
  come between);
* the person's initial(s) and the surname (``N. Haddad``, ``N Haddad``, ``N.A. Haddad``,
  ``Haddad, N.``, and run together as in user names, ``nhaddad``); an initial A, I or O needs its
  dot, because "a", "I" and "O" are words;
* aliases, addresses, usernames (with or without ``@``, and with ``.``, ``_`` and ``-`` swapped),
  and the local part of an address when it is distinctive (it has a separator or a digit and at
  least 4 characters, or at least 6 characters): ``noor.h``, ``noor_h``, ``noor-h``.

Weak forms (``PROTECTED_NAME_PART``) are common words on their own: a lone given name, middle name
or surname (or a part of a hyphenated one), and a short local part such as ``noor``. Name parts
of fewer than 3 letters and particles ("van", "de", "al") are never reported alone, nor the words
a person's ``everyday_words`` lists, nor any part of a person with ``weak_forms: false``.

Possessives need nothing of their own: an apostrophe ends a word, so ``Haddad's`` is ``Haddad``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from enum import Enum
from typing import Protocol

from gateway.policy.model import IdentityKind, ProtectedIdentity, Strength
from gateway.policy.normalize import normalize

# Titles written before a surname (policy ``name_forms.titles``), common English and
# gender-neutral forms plus a few European ones; matched with or without a trailing dot.
DEFAULT_TITLES: tuple[str, ...] = (
    "Mr", "Mrs", "Ms", "Miss", "Mx", "Master", "Dr", "Doctor", "Prof", "Professor", "Sir",
    "Dame", "Lord", "Lady", "Rev", "Revd", "Reverend", "Fr", "Father", "Sister", "Rabbi", "Imam",
    "Pastor", "Hon", "Judge", "Capt", "Captain", "Coach", "Herr", "Frau", "Mme", "Mlle", "Sr",
    "Sra", "Srta", "Dra",
)  # fmt: skip

# Name particles: part of a surname ("van der Berg", "al-Haddad"), never a name on their own.
PARTICLES = frozenset((
    "van", "von", "der", "den", "de", "del", "della", "di", "da", "das", "dos", "du", "la", "le", "bin",
    "binti", "ibn", "al", "el", "ter", "ten", "zu",
))  # fmt: skip
# Local parts that name a role, not a person: never looked for on their own.
ROLE_LOCAL_PARTS = frozenset((
    "info", "admin", "contact", "office", "mail", "hello", "hi", "support", "team", "help", "sales",
    "abuse", "postmaster", "webmaster", "hostmaster", "noreply", "no-reply", "me", "home", "work",
))  # fmt: skip
FULL_NAME = "full name"
LOCAL_PART = "local part of the address"
JOINERS = (" ", "_", "-", ".")
LOCAL_SEPARATORS = (".", "_", "-")
RUN_TOGETHER_MIN_WORD = 3  # shorter words run together only in letter-spaced text
MIN_PATTERN_LENGTH = 2
MIN_ALONE_LETTERS = 3  # shorter name parts are never reported alone
INITIALS_RUN_TOGETHER_MIN_SURNAME = 4
DISTINCTIVE_LOCAL_PART = 6
MIN_SPACED_LETTERS = 3
# Single letters that are English words: as an initial they need a dot ("A. Berg", not "a Berg").
WORD_INITIALS = frozenset("aio")
DISTINCTIVE_SEPARATED_LOCAL_PART = 4


class FormKind(Enum):
    """How a pattern counts when the matcher finds it."""

    WHOLE = "whole"  # a form on its own, with its strength
    PART = "part"  # a word of a name: weak alone, strong next to a title, initial or another word
    SPACED = "spaced"  # only counts in letter-spaced text ("J o  L i"): run together, short words


@dataclass(frozen=True, slots=True)
class Form:
    """One normalised pattern the matcher looks for, and what finding it means."""

    pattern: str
    kind: FormKind
    strength: Strength
    label: str  # what the sender and admin are told matched, e.g. "surname"
    alone: bool = True  # a weak form: reported when found on its own
    surname: bool = False  # a part that may follow a title or an initial
    in_last: bool = False  # a part of the last word (the surname, or a piece of it)


@dataclass(frozen=True, slots=True)
class NameShape:
    """A multi-word name read as given name(s) and surname."""

    words: tuple[str, ...]  # normalised, particles included
    initials: frozenset[str]  # first letters of the given and middle names (and their hyphen pieces)


def titles_normalised(titles: Iterable[str]) -> frozenset[str]:
    """The titles as the matcher compares them: normalised, without dots."""
    return frozenset(normalize(title).replace(".", "") for title in titles if normalize(title))


def name_shape(identity: ProtectedIdentity) -> NameShape | None:
    """The shape of a full name (None for other kinds and for one-word names)."""
    if identity.kind is not IdentityKind.NAME:
        return None
    words = tuple(word for word in normalize(identity.value).split(" ") if word)
    core = [word for word in words if word not in PARTICLES]
    if len(words) < 2 or len(core) < 2:
        return None
    initials = {piece[0] for word in words[:-1] if word not in PARTICLES for piece in _pieces(word)}
    return NameShape(words=words, initials=frozenset(initial for initial in initials if initial.isalpha()))


def _pieces(word: str) -> list[str]:
    """A word and, for a hyphenated word, its pieces ("okonkwo-reyes", "okonkwo", "reyes")."""
    pieces = [piece for piece in word.split("-") if piece]
    return [word, *pieces] if len(pieces) > 1 else [word]


def joined_variants(value: str) -> set[str]:
    """A name or alias with its words joined by each joiner, and run together when words are long."""
    words = normalize(value).split(" ")
    variants = {joiner.join(words) for joiner in JOINERS}
    if len(words) > 1 and all(len(word) >= RUN_TOGETHER_MIN_WORD for word in words):
        variants.add("".join(words))
    return variants


def forms(identity: ProtectedIdentity) -> list[Form]:
    """Every pattern the matcher looks for on behalf of ``identity``.

    Each form whose pattern holds anything but letters also gets a letters-only copy: letter-spaced
    text ("N o o r . H") is matched with its letters joined ("noorh").
    """
    if identity.kind is IdentityKind.NAME:
        found = list(_name_forms(identity))
    elif identity.kind is IdentityKind.ALIAS:
        found = [
            Form(variant, FormKind.WHOLE, Strength.STRONG, "alias")
            for variant in joined_variants(identity.value)
        ]
    elif identity.kind is IdentityKind.USERNAME:
        found = [
            Form(variant, FormKind.WHOLE, Strength.STRONG, "username")
            for variant in separator_variants(normalize(identity.value.strip().lstrip("@")))
        ]
    else:
        found = list(_address_forms(identity))
    whole = {form.pattern for form in found if form.kind is FormKind.WHOLE}
    found = [form for form in found if form.kind is not FormKind.SPACED or form.pattern not in whole]
    seen = {form.pattern for form in found}
    for form in list(found):
        if any(char.isdigit() for char in form.pattern):
            continue  # letter-spaced runs hold letters only: without its digits it is another form
        letters = "".join(char for char in form.pattern if char.isalpha())
        if len(letters) >= MIN_SPACED_LETTERS and letters not in seen:
            seen.add(letters)
            kind = FormKind.PART if form.kind is FormKind.PART else FormKind.SPACED
            found.append(replace(form, pattern=letters, kind=kind))
    return found


def _name_forms(identity: ProtectedIdentity) -> Iterator[Form]:
    for variant in joined_variants(identity.value):
        yield Form(variant, FormKind.WHOLE, Strength.STRONG, FULL_NAME)
    shape = name_shape(identity)
    if shape is None:
        return
    words = shape.words
    given, last = words[0], words[-1]
    if any(len(word) < RUN_TOGETHER_MIN_WORD for word in words):
        yield Form("".join(words), FormKind.SPACED, Strength.STRONG, FULL_NAME)
    reversed_run = last.replace("-", "") + given
    kind = FormKind.WHOLE if min(len(given), len(last)) >= RUN_TOGETHER_MIN_WORD else FormKind.SPACED
    yield Form(reversed_run, kind, Strength.STRONG, "surname and given name")
    surname_letters = last.replace("-", "")
    if len(surname_letters) >= INITIALS_RUN_TOGETHER_MIN_SURNAME:
        yield Form(given[0] + surname_letters, FormKind.WHOLE, Strength.STRONG, "initial and surname")
    yield from _spaced_name_forms(words)
    everyday = {normalize(word) for word in identity.everyday_words}
    for index, word in enumerate(words):
        if word in PARTICLES:
            continue
        role = "given name" if index == 0 else "surname" if index == len(words) - 1 else "middle name"
        for number, piece in enumerate(_pieces(word)):
            label = role if number == 0 else f"part of the {role}"
            yield Form(
                piece,
                FormKind.PART,
                Strength.WEAK,
                label,
                alone=identity.weak_forms
                and sum(char.isalpha() for char in piece) >= MIN_ALONE_LETTERS
                and piece not in everyday
                and word not in everyday,
                surname=index > 0,
                in_last=index == len(words) - 1,
            )


def _spaced_name_forms(words: tuple[str, ...]) -> Iterator[Form]:
    """Orders of a name that only letter-spaced text needs as patterns of their own.

    In ordinary text these are found word by word (see the matcher); joined letters have no words.
    """
    given, last = words[0], words[-1]
    start = _surname_start(words)
    letters = "".join(char for char in last if char.isalpha())
    surname = "".join(char for word in words[start:] for char in word if char.isalpha())
    firsts = [word for word in words[:start] if word not in PARTICLES]

    def spaced(text: str, label: str) -> Form:
        return Form("".join(char for char in text if char.isalpha()), FormKind.SPACED, Strength.STRONG, label)

    yield spaced(surname + given[0], "surname and initial")
    yield spaced(surname + "".join(firsts), "surname, given name")
    if len(firsts) > 1:
        yield spaced("".join(word[0] for word in firsts) + surname, "initials and surname")
    if len(words) > 2:
        yield spaced(given + letters, "given name and surname")
        yield spaced(surname + given, "surname, given name")
    for piece in _pieces(last)[1:]:
        yield spaced(given + piece, "given name and part of the surname")
        yield spaced(piece + given, "part of the surname, given name")


def _surname_start(words: tuple[str, ...] | list[str]) -> int:
    """Where the surname begins: the last word, with the particles before it ("van der Berg")."""
    start = len(words) - 1
    while start > 1 and normalize(words[start - 1]) in PARTICLES:
        start -= 1
    return start


def separator_variants(value: str) -> set[str]:
    """``value`` and the same with every ``.``, ``_`` and ``-`` swapped for each other."""
    variants = {value}
    if any(separator in value for separator in LOCAL_SEPARATORS):
        for separator in LOCAL_SEPARATORS:
            variants.add(re.sub(r"[._-]", separator, value))
    return variants


def local_part_is_distinctive(local: str) -> bool:
    """Whether an address's local part identifies its owner on its own (see module docstring)."""
    separated = any(separator in local for separator in LOCAL_SEPARATORS) or any(
        char.isdigit() for char in local
    )
    if separated:
        return len(local) >= DISTINCTIVE_SEPARATED_LOCAL_PART
    return len(local) >= DISTINCTIVE_LOCAL_PART


def _address_forms(identity: ProtectedIdentity) -> Iterator[Form]:
    # The whole address (and its IDNA spellings) is added by the matcher, which knows IDNA.
    local, at, _domain = identity.value.strip().strip("<>").rpartition("@")
    if not at:
        return
    local = normalize(local.split("+", 1)[0]).strip('"')
    if not local or local in ROLE_LOCAL_PARTS:
        return
    if local_part_is_distinctive(local):
        for variant in separator_variants(local):
            yield Form(variant, FormKind.WHOLE, Strength.STRONG, LOCAL_PART)
    elif sum(char.isalpha() for char in local) >= MIN_ALONE_LETTERS:
        everyday = {normalize(word) for word in identity.everyday_words}
        yield Form(
            local,
            FormKind.WHOLE,
            Strength.WEAK,
            LOCAL_PART,
            alone=identity.weak_forms and local not in everyday,
        )


@dataclass(frozen=True, slots=True)
class Example:
    """A form as people write it, for ``case show --reveal`` and tests: text, strength, label."""

    text: str
    strength: Strength
    label: str
    reported_alone: bool = True


def examples(identity: ProtectedIdentity, titles: Iterable[str] = DEFAULT_TITLES) -> list[Example]:
    """The forms written out as a person would type them (title forms once per title)."""
    found: dict[str, Example] = {}

    def add(text: str, strength: Strength, label: str, alone: bool = True) -> None:
        found.setdefault(text, Example(text, strength, label, alone))

    value = " ".join(identity.value.split())
    if identity.kind is IdentityKind.ADDRESS:
        add(value, Strength.STRONG, "address")
    for form in forms(identity):
        if form.kind is FormKind.WHOLE:
            add(form.pattern, form.strength, form.label, form.alone)
        elif form.kind is FormKind.PART:
            add(form.pattern, Strength.WEAK, form.label, form.alone)
    shape = name_shape(identity)
    if shape is not None:
        written = tuple(identity.value.split())
        # Shown as the admin wrote the name when its words line up with the normalised ones.
        words = written if len(written) == len(shape.words) else shape.words
        _name_examples(words, tuple(titles), add)
    if identity.kind is IdentityKind.USERNAME:
        add("@" + value.lstrip("@"), Strength.STRONG, "username")
    return list(found.values())


def _name_examples(words: tuple[str, ...], titles: tuple[str, ...], add: _Adder) -> None:
    given, last = words[0], words[-1]
    surname_start = _surname_start(words)
    surname = " ".join(words[surname_start:])
    first_names = " ".join(words[:surname_start])
    add(f"{surname}, {first_names}", Strength.STRONG, "surname, given name")
    add(f"{surname} {first_names}", Strength.STRONG, "surname given name")
    for piece in _pieces(last)[1:]:
        add(f"{given} {piece}", Strength.STRONG, "given name and part of the surname")
        add(f"{piece}, {given}", Strength.STRONG, "part of the surname, given name")
    if len(words) > 2 and surname_start > 1:
        add(f"{given} {last}", Strength.STRONG, "given name and surname")
    if "-" in last:
        add(last.replace("-", " "), Strength.WEAK, "surname")
    initials = "".join(word[0] for word in words[:surname_start] if normalize(word) not in PARTICLES)
    add(f"{given[0]}. {surname}", Strength.STRONG, "initial and surname")
    if normalize(given[0]) not in WORD_INITIALS:
        add(f"{given[0]} {surname}", Strength.STRONG, "initial and surname")
    if len(last) > MIN_PATTERN_LENGTH:
        # Two letters glued by a dot read as a domain or a code ("co.jp"): not a name form.
        add(f"{given[0]}.{last}", Strength.STRONG, "initial and surname")
    add(f"{surname}, {given[0]}.", Strength.STRONG, "surname and initial")
    if len(initials) > 1:
        add(". ".join(initials) + f". {surname}", Strength.STRONG, "initials and surname")
    for title in titles:
        bare = title.rstrip(".")
        add(f"{bare} {surname}", Strength.STRONG, "title and surname")
        add(f"{bare}. {last}", Strength.STRONG, "title and surname")
    for piece in _pieces(last)[1:] if titles else ():
        add(f"{titles[0].rstrip('.')} {piece}", Strength.STRONG, "title and part of the surname")


class _Adder(Protocol):
    def __call__(self, text: str, strength: Strength, label: str, alone: bool = True) -> None: ...


def described_forms(identities: Iterable[ProtectedIdentity], titles: Iterable[str]) -> dict[str, list[str]]:
    """One person's forms as ``case show --reveal`` lists them: strong, weak, not looked for alone.

    Title forms are folded into one line naming the titles in force.
    """
    titles = tuple(titles)
    groups: dict[str, list[str]] = {"strong": [], "weak": [], "not looked for alone": []}
    surnames: list[str] = []
    for identity in identities:
        for example in examples(identity, titles):
            line = f"{example.text}  ({example.label})"
            if example.label.startswith("title and"):
                surnames.append(example.text.split(" ", 1)[1])
            elif example.strength is Strength.STRONG:
                groups["strong"].append(line)
            elif example.reported_alone:
                groups["weak"].append(line)
            else:
                groups["not looked for alone"].append(line)
    if surnames:
        groups["strong"].append(
            f"<title> {' / '.join(sorted(set(surnames)))}  (title and surname; titles: {', '.join(titles)}; "
            "with or without a dot)"
        )
    return {group: list(dict.fromkeys(lines)) for group, lines in groups.items() if lines}
