"""iCalendar and vCard: folded lines unfolded, values unescaped, structured names read as names.

Content lines are unfolded (RFC 5545 and 6350: a line break followed by a space or tab; vCard
2.1 quoted-printable soft breaks) and split into name, parameters and value. Besides the
unfolded text, each value is read unescaped (``\\,`` ``\\;`` ``\\n``), quoted-printable values
are decoded in their charset, a structured name ``N:Surname;Given;Middle;Prefix;Suffix`` is
also read as "Given Middle Surname", and a name written surname first (``CN="Surname, Given"``,
``FN:Surname, Given``) is also read given name first. Inline binary values (a contact photo, an
attached file) are files to read in turn.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import re

from gateway.policy.extract.parts import Embedded, Extraction

_FOLD = re.compile(r"\r?\n[ \t]|\r[ \t]")
_LINE = re.compile(r"\r\n|\n|\r")
# A parameter: NAME=value or NAME="quoted value" (a value may list several, comma-separated).
_PARAMETER = re.compile(r';([^=;:"]+)(?:=((?:"[^"]*"|[^;:"]*)(?:,(?:"[^"]*"|[^;:,"]*))*))?')
_NAME_PROPERTIES = frozenset({"FN", "NICKNAME", "SORT-STRING", "X-ABLABEL", "NAME"})
_NAME_PARAMETERS = frozenset({"CN", "SORT-AS", "X-CN"})
_BINARY_ENCODINGS = frozenset({"B", "BASE64"})
_DATA_URI = re.compile(r"data:[^,]*;base64,(.*)", re.IGNORECASE | re.DOTALL)
_UNESCAPE = re.compile(r"\\(.)", re.DOTALL)
_UNESCAPED_SEMICOLON = re.compile(r"(?<!\\);")


def read_calendar(data: bytes) -> Extraction:
    found = Extraction()
    try:
        _read(_text(data), found)
    except Exception:  # a reader bug must not let the file through unread
        found.cannot_read("a calendar or contact file the gateway cannot read", "binary")
    return found


def _text(data: bytes) -> str:
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return data.decode("utf-16", "replace")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def unfold(text: str) -> list[str]:
    """The content lines of ``text``, folds undone (quoted-printable soft breaks included)."""
    lines: list[str] = []
    for line in _LINE.split(_FOLD.sub("", text)):
        if lines and lines[-1].endswith("=") and "QUOTED-PRINTABLE" in lines[-1].split(":", 1)[0].upper():
            lines[-1] = lines[-1][:-1] + line  # vCard 2.1 soft line break
        else:
            lines.append(line)
    return lines


def _read(text: str, found: Extraction) -> None:
    lines = unfold(text)
    found.text("\n".join(lines))
    readings: list[str] = []
    for number, line in enumerate(lines, start=1):
        name, parameters, value = _split(line)
        if not name:
            continue
        encoding = parameters.get("ENCODING", "").upper()
        if encoding == "QUOTED-PRINTABLE":
            charset = parameters.get("CHARSET", "utf-8")
            raw = binascii.a2b_qp(value.encode("utf-8", "replace"))
            value = raw.decode(_codec(charset), "replace")
        binary = _binary(value, encoding, parameters.get("VALUE", "").upper())
        if binary is not None:
            found.files.append(Embedded(parameters.get("FILENAME", ""), binary, f"line {number}"))
            continue
        for key, parameter in parameters.items():
            readings.append(parameter)
            if key in _NAME_PARAMETERS:
                readings.extend(_given_first(parameter))
        unescaped = _UNESCAPE.sub(lambda m: "\n" if m.group(1) in "nN" else m.group(1), value)
        readings.append(unescaped)
        if name == "N":
            readings.extend(_structured_name(value))
        elif name in _NAME_PROPERTIES:
            readings.extend(_given_first(unescaped))
    found.text("\n".join(readings), "values and names")


def _split(line: str) -> tuple[str, dict[str, str], str]:
    """(NAME, {PARAMETER: value}, value) of one content line; NAME is "" if the line is not one."""
    head = re.match(r"[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)?", line)  # a vCard group prefix is allowed
    if head is None:
        return "", {}, ""
    name = head.group(0).rpartition(".")[2].upper()
    position = head.end()
    parameters: dict[str, str] = {}
    while position < len(line) and line[position] == ";":
        match = _PARAMETER.match(line, position)
        if match is None:
            break
        parameters[match.group(1).strip().upper()] = (match.group(2) or match.group(1)).replace('"', "")
        position = match.end()
    if position >= len(line) or line[position] != ":":
        return "", {}, ""
    return name, parameters, line[position + 1 :]


def _binary(value: str, encoding: str, value_type: str) -> bytes | None:
    data_uri = _DATA_URI.match(value.strip())
    if data_uri:
        value, encoding = data_uri.group(1), "B"
    if encoding not in _BINARY_ENCODINGS and value_type != "BINARY":
        return None
    try:
        return base64.b64decode("".join(value.split()) + "==", validate=False)
    except (binascii.Error, ValueError):
        return b""


def _structured_name(value: str) -> list[str]:
    """``Surname;Given;Middle;Prefix;Suffix`` read the ways people write a name."""
    fields = [
        _UNESCAPE.sub(r"\1", part).replace(",", " ").strip() for part in _UNESCAPED_SEMICOLON.split(value)
    ]
    fields += [""] * (5 - len(fields))
    family, given, middle, prefix, suffix = fields[:5]
    forms = [
        " ".join(part for part in (given, middle, family) if part),
        " ".join(part for part in (given, family) if part),
        " ".join(part for part in (prefix, given, middle, family, suffix) if part),
        " ".join(part for part in (prefix, family) if part),
        f"{family}, {given}" if family and given else "",
    ]
    return [form for form in forms if form]


def _given_first(value: str) -> list[str]:
    """ "Surname, Given" also read as "Given Surname" (one comma between two names)."""
    family, comma, given = value.partition(",")
    if not comma or "," in given or not family.strip() or not given.strip():
        return []
    return [f"{given.strip()} {family.strip()}"]


def _codec(charset: str) -> str:
    try:
        return codecs.lookup(charset.strip().strip('"')).name
    except LookupError:
        return "utf-8"
