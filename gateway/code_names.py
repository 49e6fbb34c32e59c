"""Code names for cases and people ("home shelf", "quiet-heron"), made from the shipped word lists."""

from __future__ import annotations

import functools
import secrets
from collections.abc import Iterable
from importlib import resources

from gateway.errors import ConfigError


@functools.cache
def code_words() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The shipped word lists (adjectives, nouns) that code names are made of."""
    text = resources.files("gateway").joinpath("data/words.txt").read_text(encoding="utf-8")
    lists: dict[str, list[str]] = {"adjectives": [], "nouns": []}
    current: list[str] | None = None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = lists[line[1:-1]]
        elif current is not None:
            current.append(line)
    return tuple(lists["adjectives"]), tuple(lists["nouns"])


def new_code_name(taken: Iterable[str], *, joiner: str = " ") -> str:
    """A random two-word code name ("home shelf"; "quiet-heron" with ``joiner="-"``) not in ``taken``."""
    adjectives, nouns = code_words()
    used = {name.casefold() for name in taken}
    for _attempt in range(1000):
        name = f"{secrets.choice(adjectives)}{joiner}{secrets.choice(nouns)}"
        if name not in used:
            return name
    raise ConfigError("could not find an unused code name; give one explicitly")
