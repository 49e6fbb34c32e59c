"""Read decoded text as a person reads it, so a name split by quoting, layout or encoding is found.

Identity matching looks at each segment's decoded text twice: as decoded (``TextSegment.text``) and,
when it differs, as a reader sees it (``TextSegment.reading``, built here). The reading:

* removes quote prefixes at any depth and in any style (``>``, ``> >``, ``>>``, ``|``, indented or
  not, fullwidth ``＞``, Supercite tags such as ``NH>``) and joins the lines of a paragraph, whatever
  their quote depths, so ``Noor`` at the end of one quoted line and ``> > Haddad`` at the start of
  the next read as one name; in quoted text, markers a client moved into the middle of a line when
  re-wrapping it (``Noor > Haddad``) are read as spaces;
* joins a word hyphenated across a line break (``Had-`` / ``dad`` reads ``Haddad``; ``Smith-`` /
  ``Jones`` reads ``Smith-Jones``);
* ends a paragraph at a blank line (empty, or holding only quote markers): words of two paragraphs
  are not joined into a name. In rendered HTML the renderer's own empty lines come from markup
  (block elements, ``<br>``, table cells), not from the writer, so only quoted blank lines end a
  paragraph there;
* reads plain-text table cells (``| Noor | Haddad |``) as words of one line;
* in a header (and in a file name parameter), treats the edge of an RFC 2047 encoded-word as a
  word boundary: adjacent
  encoded-words decode with no space between them (RFC 2047, kept for display), so ``w1`` and
  ``Noor Haddad`` in two encoded-words display as ``w1Noor Haddad``; the reading also offers the
  words apart (:func:`read_header`).

Everything here is linear in the size of its input.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterator

from gateway.policy.model import IdentityFinder, IdentityHit, ProtectedIdentity, SegmentKind, TextSegment

# Between paragraphs and between the alternative readings of a header: a character no name, alias,
# address or username pattern spans (patterns hold single spaces between words), and which keeps
# normalisation on its ASCII fast path.
PARAGRAPH_BREAK = "\n#\n"
# The longest name (in characters) looked for across several encoded-words with both of its ends
# glued to neighbouring text; longer names are still found when their ends are not glued.
GLUED_NAME_CHARS = 48
# Alternative readings of one header are bounded by this many characters per character of the
# header (plus a constant): a header cut into thousands of one-letter encoded-words cannot make
# matching slow. Beyond the budget, names glued at both ends *and* split inside are not looked for.
WINDOW_BUDGET_FACTOR = 64
WINDOW_BUDGET_BASE = 16_384

# What a quote prefix is made of, at any depth and in any style (fullwidth forms and no-break
# spaces included: clients writing Japanese or Chinese quote with them).
_QUOTE_CHARS = " \t\u00a0\u3000>|\uff1e\uff5c"
# Supercite-style citation tags before ">" (initials or a short name: "NH>", "Noor>").
_CITATION_TAG_CHARS = 6
# Any of these in a text means reading it may differ from the decoded text.
_MARKS = (">", "|", "\uff1e", "\uff5c")
_HYPHEN_AT_LINE_END = re.compile(r"-[ \t]*[\r\n]")
_MIDLINE_QUOTE = re.compile(r"[ \t\u00a0][>\uff1e][ \t\u00a0>\uff1e]*(?=[ \t\u00a0])")
_ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([BbQq])\?([^?\s]*)\?=")


def read_as_human(text: str, kind: SegmentKind) -> str:
    """``text`` as a person reads it; ``text`` itself (the same object) when reading changes nothing.

    Headers and file names are returned unchanged (their encoded-words are read by
    :func:`read_header` from the raw header).
    """
    if kind in (SegmentKind.HEADER, SegmentKind.FILENAME):
        return text
    if not any(mark in text for mark in _MARKS) and _HYPHEN_AT_LINE_END.search(text) is None:
        return text
    return _paragraphs(text, markup_blanks=kind is SegmentKind.HTML_TEXT)


def _paragraphs(text: str, *, markup_blanks: bool) -> str:
    """Quote prefixes removed, table bars read as spaces, paragraphs separated by PARAGRAPH_BREAK."""
    out: list[str] = []
    pending_break = False
    quoted = hyphenated = False
    for line in text.splitlines():
        content = _unquoted(line)
        marked = len(content) < len(line) and not line[: len(line) - len(content)].isspace()
        quoted = quoted or marked
        if content and (not content[0].isspace() or not content.isspace()):
            if pending_break and out:
                out.append(PARAGRAPH_BREAK)
            elif out and _hyphenated(out[-1], content):
                # A word hyphenated across the line break: "Had-" / "dad" is one word to a reader;
                # "Smith-" / "Jones" keeps its hyphen.
                out[-1] = out[-1].rstrip()
                if content[0].islower():
                    out[-1] = out[-1][:-1]
                out.append("")
                hyphenated = True
            else:
                out.append("\n")
            out.append(content)
            pending_break = False
        elif marked or not markup_blanks:
            pending_break = True
    if not (quoted or hyphenated) and "|" not in text:
        return text  # quote characters only inside lines, no hyphenated word: nothing to read
    reading = "".join(out[1:]).replace("|", " ").replace("\uff5c", " ")
    if quoted:
        # A client that re-wraps quoted text moves markers into the middle of lines ("Noor > Haddad").
        reading = _MIDLINE_QUOTE.sub(" ", reading)
    return reading


def _unquoted(line: str) -> str:
    """``line`` without its quote prefix, however deep, including Supercite tags (``NH>``)."""
    content = line.lstrip(_QUOTE_CHARS)
    while True:  # each turn removes a tag: linear in the line
        tag_end = content.find(">", 0, _CITATION_TAG_CHARS + 1)
        if tag_end < 0:
            tag_end = content.find("\uff1e", 0, _CITATION_TAG_CHARS + 1)
        if tag_end <= 0 or not content[:tag_end].isalpha():
            return content
        content = content[tag_end + 1 :].lstrip(_QUOTE_CHARS)


def _hyphenated(previous: str, content: str) -> bool:
    """Whether ``previous`` ends in a word broken by a hyphen that ``content`` continues."""
    if previous[-1] != "-" and not previous[-1].isspace():
        return False  # the common case, without copying the line
    end = previous.rstrip()
    return len(end) >= 2 and end[-1] == "-" and end[-2].isalpha() and content[0].isalpha()


def read_header(raw: str, decode_words: Callable[[str], str]) -> str:
    """The reading of a raw (unfolded) header value whose encoded-words glue words together.

    ``decode_words`` is the message decoder's RFC 2047 decoder (adjacent encoded-words joined, as
    displayed). Returns "" when no encoded-word edge touches text on both sides without a space (the
    decoded text is then the whole reading). Otherwise the reading holds the decoded text with a
    space at each such edge, and short windows of the decoded text that start or end at those
    edges, so a name whose ends are glued to its neighbours is found even when it is itself split
    across several encoded-words.
    """
    if "=?" not in raw:
        return ""
    pieces = list(_decoded_pieces(raw, decode_words))
    text = "".join(pieces)
    glued: list[int] = []
    position = 0
    for piece in pieces[:-1]:
        position += len(piece)
        # Glued when word meets word: letters, digits, but also invisible characters and combining
        # marks (which normalisation removes, gluing what is around them). Punctuation at an edge
        # (``ISO-2022`` | ``-JP``) already separates words for the matcher exactly as it would in
        # plain text, and an edge there must not turn ``-JP`` into a word of its own: clients split
        # long subjects into encoded-words at arbitrary characters.
        if _gluing(text[position - 1]) and _gluing(text[position]):
            glued.append(position)
    if not glued:
        return ""
    return PARAGRAPH_BREAK.join(reading for reading in _header_readings(text, glued) if reading)


def _gluing(char: str) -> bool:
    return char.isalnum() or unicodedata.category(char) in ("Mn", "Me", "Cf")


def _decoded_pieces(raw: str, decode_words: Callable[[str], str]) -> Iterator[str]:
    """Decoded text in pieces: each encoded-word, and each stretch of plain text, on its own.

    Encoded-words whose bytes only make sense together (a multi-byte character split across two
    words of one charset) stay one piece; whitespace between encoded-words is dropped (RFC 2047).
    """
    run: list[str] = []
    charset = ""
    position = 0

    def flush() -> Iterator[str]:
        if not run:
            return
        groups: list[list[str]] = [[run[0]]]
        alone = decode_words(run[0])
        for word in run[1:]:
            decoded = decode_words(word)
            # Bytes of one character split across two words decode only together: keep them together.
            if decode_words(f"{groups[-1][-1]} {word}") == alone + decoded:
                groups.append([word])
            else:
                groups[-1].append(word)
            alone = decoded
        pieces = [decode_words(" ".join(group)) for group in groups]
        together = decode_words(" ".join(run))
        if "".join(pieces) == together:
            yield from pieces
        else:
            yield together
        run.clear()

    for match in _ENCODED_WORD.finditer(raw):
        gap = raw[position : match.start()]
        word_charset = match.group(1).split("*", 1)[0].lower()
        if gap and not (run and gap.isspace()):
            yield from flush()
            yield gap
        elif run and word_charset != charset:
            yield from flush()
        run.append(match.group(0))
        charset = word_charset
        position = match.end()
    yield from flush()
    if position < len(raw):
        yield raw[position:]


def _header_readings(text: str, glued: list[int]) -> Iterator[str]:
    """The decoded text apart at every glued edge, then windows bounded by glued edges."""
    spaced: list[str] = []
    start = 0
    for edge in glued:
        spaced.append(text[start:edge])
        start = edge
    spaced.append(text[start:])
    yield " ".join(spaced)
    budget = WINDOW_BUDGET_FACTOR * len(text) + WINDOW_BUDGET_BASE
    reach = GLUED_NAME_CHARS
    for index, edge in enumerate(glued):
        # A name glued on one side only: from the edge to the last word break within reach.
        yield text[_word_break(text, edge, edge - reach) : edge]
        yield text[edge : _word_break(text, edge, edge + reach)]
        budget -= 2 * reach
        # A name glued on both sides: between this edge and each later one within reach.
        for later_index in range(index + 1, len(glued)):
            later = glued[later_index]
            if later - edge > reach or budget <= 0:
                break
            budget -= later - edge
            yield text[edge:later]


def _word_break(text: str, edge: int, limit: int) -> int:
    """The word break between ``edge`` and ``limit`` farthest from the edge (the edge if none).

    A window cut at a word break glues no name to the cut: the cut is where the matcher sees an
    end of text, so it must fall where the text has a boundary of its own.
    """
    if limit < edge:
        if limit <= 0:
            return 0
        for index in range(limit, edge):
            if not text[index - 1].isalnum():
                return index
        return edge
    if limit >= len(text):
        return len(text)
    for index in range(limit, edge, -1):
        if not text[index].isalnum():
            return index
    return edge


def hits_in(finder: IdentityFinder, segment: TextSegment) -> list[IdentityHit]:
    """Every strong and weak hit in ``segment``, as decoded or as a person reads it (deduplicated)."""
    if not segment.reading:
        return finder.find_hits(segment.text)
    return list(dict.fromkeys([*finder.find_hits(segment.text), *finder.find_hits(segment.reading)]))


def found_in(finder: IdentityFinder, segment: TextSegment) -> list[ProtectedIdentity]:
    """Every protected identity in ``segment``, as decoded or as a person reads it (deduplicated)."""
    if not segment.reading:
        return finder.find(segment.text)
    return list(dict.fromkeys([*finder.find(segment.text), *finder.find(segment.reading)]))
