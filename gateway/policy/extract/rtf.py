r"""RTF decoded as a word processor shows it, not scanned as source.

``\'xx`` bytes are decoded in the current font's code page (or the document's ``\ansicpg``),
``\uN`` escapes give their character and skip their ``\ucN`` fallback, groups and formatting
words (``{\b ...}``) join the text around them, and ``\bin`` data is skipped. Text in every
destination is read, including those a reader may hide (comments and their authors, document
information, headers, footers, field instructions such as ``mailto:`` links, hidden text);
only tables of fonts, colours, styles and lists and binary data (theme, data store) are not.
Pictures are listed as media; embedded objects cannot be read.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass, field

from gateway.policy.extract.parts import Extraction

_TOKEN = re.compile(
    rb"\\([a-zA-Z]{1,32})(-?\d{1,10})? ?|\\'([0-9a-fA-F]{2})|\\(.)|([{}])|[\r\n]+|([^\\{}\r\n]+)",
    re.DOTALL,
)
# Destinations holding no text a person wrote (fonts, colours, styles, lists, binary data).
_SKIPPED = frozenset(
    {
        "fonttbl", "colortbl", "stylesheet", "listtable", "listoverridetable", "rsidtbl", "themedata",
        "colorschememapping", "datastore", "latentstyles", "panose", "blipuid", "xmlnstbl", "pgdsctbl",
        "generator", "filetbl", "mmathpr", "wgrffmtfilter", "defchp", "defpap",
    }
)  # fmt: skip
_PICTURES = frozenset({"pict", "shppict"})
# Destinations outside the text flow (besides every \* destination): comments, notes, fields' codes,
# document information, headers and footers.
_ASIDE = frozenset(
    {
        "annotation", "atnauthor", "atnid", "info", "author", "title", "subject", "operator", "keywords",
        "comment", "doccomm", "company", "manager", "category", "footnote", "header", "headerl",
        "headerr", "headerf", "footer", "footerl", "footerr", "footerf", "fldinst", "txe", "xe", "tc",
    }
)  # fmt: skip
_OBJECTS = frozenset({"objdata"})
_CHARACTERS = {
    "par": "\n", "line": "\n", "sect": "\n\n", "page": "\n\n", "row": "\n", "cell": "\t",
    "nestcell": "\t", "tab": "\t", "emdash": "\u2014", "endash": "\u2013", "emspace": "\u2003",
    "enspace": "\u2002", "qmspace": "\u2005", "bullet": "\u2022", "lquote": "\u2018",
    "rquote": "\u2019", "ldblquote": "\u201c", "rdblquote": "\u201d", "zwj": "\u200d",
    "zwnj": "\u200c", "ltrmark": "", "rtlmark": "",
}  # fmt: skip
_SYMBOLS = {"~": "\u00a0", "_": "\u2011", "-": "", "{": "{", "}": "}", "\\": "\\", "\n": "\n", "\r": "\n"}
# \fcharsetN -> code page (Windows character sets)
_CHARSETS = {
    0: 1252, 2: 1252, 77: 10000, 128: 932, 129: 949, 130: 1361, 134: 936, 136: 950, 161: 1253,
    162: 1254, 163: 1258, 177: 1255, 178: 1256, 186: 1257, 204: 1251, 222: 874, 238: 1250,
    254: 437, 255: 850,
}  # fmt: skip
MAX_RTF_GROUP_DEPTH = 256


@dataclass
class _Group:
    skip: bool = False  # inside a destination whose text is not read
    unicode_skip: int = 1  # \ucN: fallback characters after each \uN
    font: int | None = None
    in_font_table: bool = False
    aside: bool = False  # inside a destination not shown in the text flow (comments, fields, info)


@dataclass
class _State:
    out: list[str] = field(default_factory=list)
    aside: list[str] = field(default_factory=list)  # text of destinations outside the text flow
    pending: bytearray = field(default_factory=bytearray)  # \'xx bytes of one multi-byte character
    pending_codepage: int = 1252
    pending_aside: bool = False
    document_codepage: int = 1252
    font_codepages: dict[int, int] = field(default_factory=dict)
    pictures: int = 0
    objects: int = 0

    def flush(self) -> None:
        if self.pending:
            self.emit(_decode(bytes(self.pending), self.pending_codepage), self.pending_aside)
            self.pending.clear()

    def emit(self, text: str, aside: bool) -> None:
        (self.aside if aside else self.out).append(text)


def _decode(data: bytes, codepage: int) -> str:
    try:
        return data.decode(codecs.lookup(f"cp{codepage}").name, "replace")
    except LookupError:
        return data.decode("cp1252", "replace")


def read_rtf(data: bytes) -> Extraction:
    found = Extraction()
    try:
        state = _decode_rtf(data)
    except Exception:  # a decoder failure must not let the document through unread
        found.cannot_read("an RTF document the gateway cannot decode", "binary")
        return found
    found.text("".join(state.out))
    found.text("".join(state.aside), "comments, fields and properties")
    if state.pictures:
        found.cannot_read("pictures inside an RTF document are not read", "media")
    if state.objects:
        found.cannot_read("an object embedded in an RTF document", "binary")
    return found


def _decode_rtf(data: bytes) -> _State:
    state = _State()
    stack: list[_Group] = [_Group()]
    skip_next = 0  # \uN fallback characters still to skip
    starred = False  # after \*: the next control word starts an ignorable destination
    position = 0
    while position < len(data):
        match = _TOKEN.match(data, position)
        if match is None:
            position += 1
            continue
        position = match.end()
        word, parameter, hex_byte, symbol, brace, text = match.groups()
        group = stack[-1]
        if brace is not None:
            state.flush()
            skip_next = 0
            starred = False
            if brace == b"{":
                if len(stack) >= MAX_RTF_GROUP_DEPTH:
                    raise ValueError("RTF groups nested too deeply")
                stack.append(
                    _Group(group.skip, group.unicode_skip, group.font, group.in_font_table, group.aside)
                )
            elif len(stack) > 1 and stack.pop().aside:
                state.aside.append("\n")  # each comment, field or property is read on its own
            continue
        if word is not None:
            name = word.decode("ascii")
            number = int(parameter) if parameter else None
            if starred or name in _ASIDE:
                # Its text is read apart, so it neither joins nor splits the words around it.
                state.flush()
                if not group.aside:
                    state.aside.append("\n")
                group.aside = True
            starred = False
            if name == "bin" and number:
                state.flush()
                position += max(number, 0)  # raw binary data, never text
                continue
            if skip_next and name in ("u", *_CHARACTERS):
                skip_next -= 1
                continue
            if name in _SKIPPED or name in _PICTURES or name in _OBJECTS:
                state.flush()
                if not group.skip:
                    state.pictures += name in _PICTURES
                    state.objects += name in _OBJECTS
                group.skip = True
                group.in_font_table = name == "fonttbl"
            elif name == "u" and number is not None:
                state.flush()
                if not group.skip:
                    state.emit(chr(number % 65536), group.aside)
                skip_next = group.unicode_skip
            elif name == "uc" and number is not None:
                group.unicode_skip = max(number, 0)
            elif name == "ansicpg" and number:
                state.document_codepage = number
            elif name == "f" and number is not None:
                group.font = number
            elif name == "fcharset" and number is not None and group.in_font_table and group.font is not None:
                state.font_codepages[group.font] = _CHARSETS.get(number, state.document_codepage)
            elif name == "cpg" and number and group.in_font_table and group.font is not None:
                state.font_codepages[group.font] = number
            elif name in _CHARACTERS and not group.skip:
                state.flush()
                state.emit(_CHARACTERS[name], group.aside)
            continue
        starred = False
        if hex_byte is not None:
            if skip_next:
                skip_next -= 1
                continue
            if not group.skip:
                codepage = _codepage(state, group)
                if state.pending and (codepage, group.aside) != (state.pending_codepage, state.pending_aside):
                    state.flush()
                state.pending_codepage, state.pending_aside = codepage, group.aside
                state.pending.append(int(hex_byte, 16))
            continue
        state.flush()
        if symbol is not None:
            char = symbol.decode("latin-1")
            if char == "*":
                starred = True
                continue
            if skip_next:
                skip_next -= 1
                continue
            if not group.skip:
                state.emit(_SYMBOLS.get(char, ""), group.aside)
            continue
        if text is not None:
            chunk = text.decode("latin-1")
            if skip_next:
                dropped = min(skip_next, len(chunk))
                chunk = chunk[dropped:]
                skip_next -= dropped
            if not group.skip:
                state.emit(_decode(chunk.encode("latin-1"), _codepage(state, group)), group.aside)
    state.flush()
    return state


def _codepage(state: _State, group: _Group) -> int:
    if group.font is not None:
        return state.font_codepages.get(group.font, state.document_codepage)
    return state.document_codepage
