"""Made-up words for benchmark data: names and prose that cannot collide with real text."""

from __future__ import annotations

import random

SYLLABLES = (
    "ka",
    "ri",
    "mo",
    "ta",
    "ne",
    "lu",
    "vi",
    "so",
    "da",
    "pe",
    "zu",
    "qi",
    "xo",
    "be",
    "fa",
    "gy",
    "hu",
    "ja",
    "ko",
    "lo",
    "mi",
    "na",
    "po",
    "ru",
    "sa",
    "te",
    "ul",
    "wo",
    "ya",
    "ze",
)


def pseudo_word(rng: random.Random, syllables: int) -> str:
    """A lower-case word of ``syllables`` random syllables."""
    return "".join(rng.choice(SYLLABLES) for _ in range(syllables))
