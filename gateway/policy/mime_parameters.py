"""MIME header parameters (RFC 2045, 2231, 2047): split, unquoted, continuations joined, charsets applied."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import unquote_to_bytes

from gateway.policy.charsets import decode_bytes, decode_encoded_words
from gateway.policy.reading import PARAGRAPH_BREAK, read_header

# Parameters that are machine tokens, never text a person wrote (charset names, boundaries...).
TECHNICAL_PARAMETERS = frozenset(
    {
        "charset", "boundary", "format", "delsp", "reply-type", "smime-type", "protocol", "micalg",
        "method", "type", "start", "start-info", "report-type", "access-type", "size", "creation-date",
        "modification-date", "read-date", "x-mac-type", "x-mac-creator", "x-unix-mode", "differences",
    }
)  # fmt: skip
FILENAME_PARAMETERS = ("filename", "name")

_QUOTED_PAIR = re.compile(r"\\(.)", re.DOTALL)
_PARAMETER_SPECIALS = re.compile(r'[\\";]')
_EXTENDED_SECTION = re.compile(r"(.+?)\*(\d+)(\*?)")


@dataclass
class Parameters:
    """The parameters of a Content-Type or Content-Disposition header, decoded."""

    value: str = ""  # the type or disposition itself, lower-cased
    values: dict[str, list[str]] = field(default_factory=dict)
    conflicts: set[str] = field(default_factory=set)

    def first(self, name: str) -> str | None:
        found = self.values.get(name)
        return found[0] if found else None


def split_parameters(header: str) -> list[str]:
    """``header`` split at each ``;`` outside a quoted string (a backslash in one escapes a character)."""
    if '"' not in header:
        return header.split(";")  # no quoted string, so no escapes either
    pieces: list[str] = []
    start = 0
    quoted = False
    escaped_at = -1  # where the character a backslash inside quotes escapes is
    # Only quotes, backslashes and semicolons change anything: visit those, not every character.
    for special in _PARAMETER_SPECIALS.finditer(header):
        index = special.start()
        if index == escaped_at:
            continue
        char = special.group()
        if char == "\\":
            if quoted:
                escaped_at = index + 1
        elif char == '"':
            quoted = not quoted
        elif not quoted:
            pieces.append(header[start:index])
            start = index + 1
    pieces.append(header[start:])
    return pieces


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return _QUOTED_PAIR.sub(r"\1", value[1:-1])
    return value


def _extended_value(value: str) -> tuple[str | None, bytes]:
    """Split an RFC 2231 ``charset'language'percent-encoded`` value."""
    charset: str | None = None
    if value.count("'") >= 2:
        charset, _language, value = value.split("'", 2)
    return charset or None, unquote_to_bytes(value)


def _join_sections(parts: dict[int, tuple[str, bool]]) -> str:
    """Reassemble RFC 2231 continuations (``name*0*=utf-8''..; name*1*=..``) in section order."""
    charset: str | None = None
    data = bytearray()
    for index in sorted(parts):
        value, is_extended = parts[index]
        if not is_extended:
            data += value.encode("utf-8", "surrogateescape")
        elif index == 0:
            charset, chunk = _extended_value(value)
            data += chunk
        else:
            data += unquote_to_bytes(value)
    return decode_encoded_words(decode_bytes(bytes(data), charset))


def file_name_readings(header: str) -> str:
    """How a person reads file name parameters whose encoded-words glue words (gateway.policy.reading)."""
    if "=?" not in header:
        return ""
    readings = []
    for piece in split_parameters(header)[1:]:
        name, _, value = piece.partition("=")
        if name.strip().lower().partition("*")[0] in FILENAME_PARAMETERS:
            readings.append(read_header(_unquote(value), decode_encoded_words))
    return PARAGRAPH_BREAK.join(reading for reading in readings if reading)


def parse_parameters(header: str) -> Parameters:
    """Parse ``type; name=value; name*0*=...`` with RFC 2231 continuations and charsets."""
    pieces = split_parameters(header)
    result = Parameters(value=pieces[0].strip().lower())
    seen: set[str] = set()
    plain: dict[str, list[str]] = {}
    sections: dict[str, dict[int, tuple[str, bool]]] = {}
    extended: dict[str, str] = {}
    for piece in pieces[1:]:
        raw_name, equals, raw_value = piece.partition("=")
        name = raw_name.strip().lower()
        if not equals or not name:
            continue
        if name in seen:
            result.conflicts.add(name.partition("*")[0])
        seen.add(name)
        value = _unquote(raw_value)
        section = _EXTENDED_SECTION.fullmatch(name)
        if section:
            sections.setdefault(section.group(1), {})[int(section.group(2))] = (value, bool(section.group(3)))
        elif name.endswith("*"):
            charset, data = _extended_value(value)
            extended[name[:-1]] = decode_bytes(data, charset)
        else:
            plain.setdefault(name, []).append(decode_encoded_words(value))
    for base, parts in sections.items():
        if base in extended:
            result.conflicts.add(base)
        extended[base] = _join_sections(parts)
    for name, values in plain.items():
        result.values[name] = list(values)
    for name, value in extended.items():
        if name in ("boundary", "charset") and name in plain and plain[name] != [value]:
            result.conflicts.add(name)
        result.values.setdefault(name, []).append(value)
    return result
