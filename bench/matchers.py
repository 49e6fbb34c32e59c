"""Candidate libraries for the policy's hot loops, measured on the same input (issue 19, step 3).

Each section times the work one 8 KB message (about 700 words of prose, as its plain-text part)
costs the policy, with 10,000 protected people in the automaton (each with a name, an alias, an
address and a username, and every form the matcher derives: 180,000 patterns):

* the identity automaton: ``pyahocorasick`` (used today) against ``ahocorasick-rs``, building it
  and collecting every overlapping match, on English prose and on the benchmarks' made-up words;
  then the whole ``IdentityMatcher.find_hits`` (automaton plus the boundary checks around each hit);
* regular expressions that run on every text: the standard ``re`` against ``regex``;
* the normaliser (``gateway.policy.normalize``, uncached) on ASCII and on accented text;
* fingerprint shingling: words, spelling keys, keyed BLAKE2b of every 4-word shingle, and the
  index lookup, with 10,000 protected documents.

A candidate that is not installed is reported as such. CPU time of the measuring thread, median of
several rounds (``--rounds``), so a machine shared with other jobs moves the figures less.

    .venv/bin/python bench/matchers.py            # about two minutes (building the 10,000-person policy)
    .venv/bin/python bench/matchers.py --quick    # 1,000 people and 1,000 documents
"""

from __future__ import annotations

import argparse
import importlib
import random
import re
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fingerprints import prose, vocabulary
from policy import PROSE, policy_text
from report import machine_description, markdown_table, package_version

from gateway.policy import fingerprint, matcher, normalize
from gateway.policy.engine import compile_policy
from gateway.policy.fingerprint import FingerprintIndex, ProtectedDocument, document_shingles
from gateway.policy.loader import parse_policy_text

KEY = bytes(range(32))


def optional(name: str) -> ModuleType | None:
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def cpu_us(function: Callable[[], object], rounds: int, number: int) -> float:
    """Median CPU microseconds of one call, over ``rounds`` rounds of ``number`` calls."""
    function()
    samples = []
    for _ in range(rounds):
        start = time.thread_time()
        for _ in range(number):
            function()
        samples.append((time.thread_time() - start) / number)
    return statistics.median(samples) * 1e6


def patterns(people: int, avoid: frozenset[str]) -> tuple[matcher.IdentityMatcher, list[str]]:
    text = policy_text(people, random.Random(1), avoid)
    policy = compile_policy(parse_policy_text(text, Path("bench.yaml")), text.encode())
    found = {form.pattern for identity in policy.identities for form in matcher.all_forms(identity)}
    assert isinstance(policy.finder, matcher.IdentityMatcher)
    return policy.finder, sorted(found)


def automata(found: list[str], texts: dict[str, str], rounds: int) -> list[list[str]]:
    rows = []
    pyaho = optional("ahocorasick")
    if pyaho is None:
        rows.append(["pyahocorasick", "not installed", "", ""])
    else:
        start = time.perf_counter()
        automaton = pyaho.Automaton()
        for number, pattern in enumerate(found):
            automaton.add_word(pattern, number)
        automaton.make_automaton()
        built = time.perf_counter() - start
        rows.append(
            [
                f"pyahocorasick {package_version('pyahocorasick')}",
                f"{built:.2f} s",
                *(f"{cpu_us(lambda t=t: list(automaton.iter(t)), rounds, 20):.0f}" for t in texts.values()),
            ]
        )
    rsaho: Any = optional("ahocorasick_rs")
    if rsaho is None:
        rows.append(["ahocorasick-rs", "not installed", "", ""])
    else:
        start = time.perf_counter()
        rust = rsaho.AhoCorasick(found, matchkind=rsaho.MatchKind.Standard)
        built = time.perf_counter() - start
        rows.append(
            [
                f"ahocorasick-rs {package_version('ahocorasick-rs')}",
                f"{built:.2f} s",
                *(
                    f"{cpu_us(lambda t=t: rust.find_matches_as_indexes(t, overlapping=True), rounds, 20):.0f}"
                    for t in texts.values()
                ),
            ]
        )
    return rows


def consume(result: object) -> object:
    """A match list or search result as it is, an iterator of matches run to its end."""
    return result if result is None or isinstance(result, list | re.Match) else list(result)  # type: ignore[call-overload]


def regexes(texts: dict[str, str], rounds: int) -> list[list[str]]:
    """The expressions that run over whole texts on every message, in ``re`` and in ``regex``."""
    expressions = {
        "fingerprint words `\\w+` (findall)": (fingerprint._WORD.pattern, "findall"),
        "letter-spaced hint (search)": (matcher._SPACED_HINT.pattern, "search"),
        "letter-spaced runs (finditer)": (matcher._SPACED_RUN.pattern, "finditer"),
    }
    engines = [("re", re), ("regex", optional("regex"))]
    rows = []
    for label, (expression, method) in expressions.items():
        for name, engine in engines:
            if engine is None:
                rows.append([label, name, "not installed", ""])
                continue
            call = getattr(engine.compile(expression), method)
            rows.append(
                [label, f"{name} {package_version(name) if name == 'regex' else ''}".strip()]
                + [f"{cpu_us(lambda c=call, t=t: consume(c(t)), rounds, 20):.0f}" for t in texts.values()]
            )
    return rows


def normaliser(texts: dict[str, str], rounds: int) -> list[list[str]]:
    uncached = normalize.normalize.__wrapped__
    accented = {label: text.replace("e", "é").replace("a", "å") for label, text in texts.items()}
    return [
        [
            "normalize(), ASCII text",
            *(f"{cpu_us(lambda t=t: uncached(t), rounds, 20):.0f}" for t in texts.values()),
        ],
        [
            "normalize(), accented text",
            *(f"{cpu_us(lambda t=t: uncached(t), rounds, 20):.0f}" for t in accented.values()),
        ],
    ]


def fresh_hits(finder: matcher.IdentityMatcher, text: str) -> object:
    """``finder.find_hits(text)`` as for a text it has not seen (its memo of recent texts emptied)."""
    finder._recent.clear()
    return finder.find_hits(text)


def fresh_overlaps(index: FingerprintIndex, text: str) -> object:
    """``index.overlaps(text)`` as for a text it has not seen (its memo of recent texts emptied)."""
    index._recent.clear()
    return index.overlaps(text)


def shingling(documents: int, rounds: int) -> list[list[str]]:
    rng = random.Random(20261125)
    vocab = vocabulary(rng)
    index = FingerprintIndex(KEY)
    index.add_many(
        ProtectedDocument(
            "case", f"doc-{n}", None, document_shingles([" ".join(prose(rng, vocab, 500))], KEY)
        )
        for n in range(documents)
    )
    text = " ".join(prose(random.Random(7), vocab, 700))
    tokens = fingerprint.words(text)
    keyed = fingerprint.scheme_words(tokens)
    steps: list[tuple[str, Callable[[], object]]] = [
        ("words of the normalised text", lambda: fingerprint.words(text)),
        ("spelling keys of every word", lambda: fingerprint.scheme_words(tokens)),
        ("keyed BLAKE2b of every 4-word shingle", lambda: fingerprint.shingle_hashes(keyed, KEY, 4)),
        (f"overlaps(): all of it, {documents:,} documents", lambda: fresh_overlaps(index, text)),
        ("overlaps() again: the same words (an HTML alternative)", lambda: index.overlaps(text)),
    ]
    return [[label, f"{cpu_us(step, rounds, 20):.0f}"] for label, step in steps]


def run(quick: bool, rounds: int, argv: list[str]) -> str:
    people = 1_000 if quick else 10_000
    vocab = vocabulary(random.Random(20261125))
    made_up = " ".join(prose(random.Random(7), vocab, 700))
    english = " ".join((PROSE * 20).split()[:700])
    texts = {"English prose": normalize.normalize(english), "made-up words": normalize.normalize(made_up)}
    finder, found = patterns(people, frozenset(vocab))
    lines = [
        "### Candidate matchers (`bench/matchers.py`)",
        "",
        *machine_description(argv),
        "",
        f"One 8 KB plain-text part (700 words), {people:,} protected people ({len(found):,} patterns); "
        f"CPU µs per text, median of {rounds} rounds.",
        "",
        *markdown_table(
            ["automaton: every overlapping match", "build", *(f"{label} µs" for label in texts)],
            automata(found, texts, rounds),
        ),
        "",
        *markdown_table(
            ["identity matching, all of it", *(f"{label} µs" for label in texts)],
            [
                [
                    "IdentityMatcher.find_hits (automaton + boundary checks)",
                    *(f"{cpu_us(lambda t=t: fresh_hits(finder, t), rounds, 20):.0f}" for t in texts.values()),
                ]
            ],
        ),
        "",
        *markdown_table(
            ["expression", "engine", *(f"{label} µs" for label in texts)], regexes(texts, rounds)
        ),
        "",
        *markdown_table(["normaliser", *(f"{label} µs" for label in texts)], normaliser(texts, rounds)),
        "",
        *markdown_table(
            ["fingerprints, one 700-word text (made-up words)", "µs"],
            shingling(1_000 if quick else 10_000, rounds),
        ),
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="1,000 people and 1,000 documents")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per figure (median reported)")
    arguments = parser.parse_args()
    print(run(arguments.quick, arguments.rounds, sys.argv))


if __name__ == "__main__":
    main()
