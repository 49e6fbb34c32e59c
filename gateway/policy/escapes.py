"""Extra readings of text that spells its letters through escapes or markup a reader sees through."""

from __future__ import annotations

import re
from urllib.parse import unquote

# A link in plain text ("example.net/u/Robin%20Castellano") is read by its reader decoded.
_PERCENT_ESCAPE = re.compile(r"%[0-9A-Fa-f]{2}")
# JSON and JavaScript string escapes ("Robin \u0043astellano"), shown decoded by any viewer;
# a surrogate pair is two escapes.
_UNICODE_ESCAPE = re.compile(
    r"\\u([dD][89abAB][0-9a-fA-F]{2})\\u([dD][c-fC-F][0-9a-fA-F]{2})|\\u([0-9a-fA-F]{4})"
)
# Markdown emphasis inside a word ("**Rob**in", "Cas`tel`lano"): the reader reads one word.
_INNER_MARKUP = re.compile(r"(?<=\w)[*`~]+(?=\w)|(?<=\w)[*`~]+(?=[*`~]*\s)|(?<=\s)[*`~]+(?=\w)")
_MARKERS = re.compile(r"[*`~]+")


def escaped_readings(text: str) -> list[str]:
    """The text as a reader sees it through escapes and markup, when that differs from the text."""
    readings: list[str] = []
    if "%" in text and _PERCENT_ESCAPE.search(text):
        readings.append(unquote(text, errors="replace"))
    if "\\u" in text and _UNICODE_ESCAPE.search(text):
        readings.append(_UNICODE_ESCAPE.sub(_unescape, text))
    if ("*" in text or "`" in text or "~" in text) and _marks_inside_words(text):
        bare = _INNER_MARKUP.sub("", text)
        if bare != text:
            readings.append(bare)
    return readings


def _marks_inside_words(text: str) -> bool:
    """Whether a run of Markdown markers touches a word (a bullet "* " or "a * b" does not)."""
    for run in _MARKERS.finditer(text):
        start, end = run.span()
        if (start and text[start - 1].isalnum()) or text[end : end + 1].isalnum():
            return True
    return False


def _unescape(match: re.Match[str]) -> str:
    if match.group(3):
        code = int(match.group(3), 16)
        return "\ufffd" if 0xD800 <= code <= 0xDFFF else chr(code)
    high, low = int(match.group(1), 16), int(match.group(2), 16)
    return chr(0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00))
