"""Render XML (data files, SVG, office document parts) to its text and hidden text, in linear time.

XML is read as :func:`gateway.policy.html.render_html` reads HTML, and for the same reason: it has
always been read by ``html.parser`` (:func:`reference_xml`, kept as the reference reading and the
fallback), and ``html.parser`` takes quadratic time on an unclosed ``<!--`` (400 KB of them took a
minute). :func:`render_xml` reads with libxml2's HTML tokenizer through lxml's parser-target
interface instead, which is linear and, like ``html.parser``, reads markup without a DTD: no
entity is declared, expanded or fetched, whatever the document declares (a "billion laughs" or an
external entity naming a file is text to read, never an instruction). libxml2's XML parser was
measured and not chosen: in recovery mode it stops reading at the end of the first root element,
reads nothing at all of a document whose DTD declares an entity it uses (with entity expansion
off, as it must be), and drops references HTML defines but XML does not (``&nbsp;``).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, cast

from gateway.policy.html import (
    _COMPILED,
    _DETACHING_STYLE,
    _HIDDEN_TEXT_ELEMENTS,
    Rendered,
    _css_text,
    _Renderer,
    _run,
    read_attributes,
)

if TYPE_CHECKING:
    from lxml.etree._parser import CustomTargetParser  # in the type stubs only

try:
    from lxml import etree
except ImportError:  # pragma: no cover - lxml is a dependency; _COMPILED is False without it
    etree = None  # type: ignore[assignment]


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# Paragraph-like elements of office XML (OOXML, ODF): their ends separate words, while runs
# (<w:r>, <w:t>, <text:span>, ...) join, because editors split words into runs freely.
_OFFICE_BREAK_ELEMENTS = _words(
    """p br cr tab tc tr h si c row table-cell line-break list-item txbody sp v s title
    description creator lastmodifiedby keywords subject category"""
)

# How the compiled reading undoes what libxml2 reads differently from html.parser, before libxml2
# sees the markup (_prepared, one scan):
# - every tag is renamed "x-<name>" (back in _Collector): libxml2 knows no element of that name,
#   so it applies none of HTML's rules to XML's elements (<link> or <br> have no content, <p>
#   closes an open <p>, <title> and <plaintext> hold raw text, a second <html> is dropped, ...);
#   the tags it adds itself (html, head, body) have no "x-" and are left out;
# - comments, CDATA and other marked sections, processing instructions and declarations (the
#   doctype with its internal subset up to its first ">", as html.parser reads it) are taken out
#   and added to the hidden text as html.parser reads them: libxml2 ends a CDATA section or a
#   processing instruction at its first ">";
# - the text of <script> and <style> (raw text to both, up to </script> or </style>) is escaped,
#   so libxml2 reads it as html.parser does: as written, with nothing decoded;
# - NUL becomes U+FFFD in libxml2, which normalising keeps where it drops NUL: NULs are removed.
# Not undone: CR LF is read as LF (whitespace either way); a tag's second attribute of the same
# name is not read (not well-formed XML); an end tag of an element not open, or one closing an
# element other than the innermost (neither well-formed), separates no words.
_SECTION = re.compile(
    r"<(?:!--(?P<comment>.*?)(?:--\s*+>|\Z)"
    r"|!\[(?P<marked>(?:cdata|temp|ignore|include|rcdata)(?![-_.a-z0-9]).*?)(?:\]\s*+\]\s*+>|\Z)"
    r"|!\[(?P<conditional>(?:if|else|endif)(?![-_.a-z0-9]).*?)(?:\]\s*+>|\Z)"
    r"|[!?](?P<declaration>[^>]*+)>?"
    r"|(?P<code>script|style)(?=[\s/>])(?:[^>\"']++|\"[^\"]*+\"?|'[^']*+'?)*+>?)",
    re.DOTALL | re.IGNORECASE,
)
# html.parser's tags: "<" or "</", then a letter. Two substitutions of plain text: a replacement
# naming a group calls back into Python at every tag (six times as long in Python 3.11).
_START_TAG_OPEN = re.compile(r"<(?=[a-zA-Z])")
_END_TAG_OPEN = re.compile(r"</(?=[a-zA-Z])")
_CODE_END = {
    "script": re.compile(r"</\s*script\s*>", re.IGNORECASE),
    "style": re.compile(r"</\s*style\s*>", re.IGNORECASE),
}
_SPECIAL_ELEMENTS = frozenset({"head", "title", "body"} | _HIDDEN_TEXT_ELEMENTS)
# Ends the markup: its start tag reaching the collector shows libxml2 read to the end. A tag or
# attribute value left open at the end swallows it (libxml2 drops a tag cut off by the end).
_END = "<x->"


def _renamed(markup: str) -> str:
    """Markup with every tag renamed "x-<name>"."""
    return _END_TAG_OPEN.sub("</x-", _START_TAG_OPEN.sub("<x-", markup))


def _prepared(markup: str) -> tuple[str, list[str]]:
    """The markup to give libxml2 (see above), and the hidden texts taken out of it."""
    out: list[str] = []
    hidden: list[str] = []
    position = 0
    while (section := _SECTION.search(markup, position)) is not None:
        out.append(_renamed(markup[position : section.start()]))
        position = section.end()
        code = section.group("code")
        if code is None:
            # Exactly one of these groups took part in the match.
            text = section.group("comment", "marked", "conditional", "declaration")
            hidden.extend(part for part in text if part)
            continue
        start_tag = section.group()
        out.append("<x-" + start_tag[1:])
        if start_tag.endswith("/>"):
            continue  # <script/> is an empty element to html.parser: what follows is markup
        end = _CODE_END[code.lower()].search(markup, position)
        stop = end.start() if end else len(markup)
        out.append(markup[position:stop].replace("&", "&amp;").replace("<", "&lt;"))
        if end:
            out.append(f"</x-{code}>")
            position = end.end()
        else:
            position = stop
    out.append(_renamed(markup[position:]))
    out.append(_END)
    return "".join(out), hidden


class _Collector:
    """An lxml parser target: collects what html.parser's reading of XML collects."""

    def __init__(self) -> None:
        self.reset(office=False)

    def reset(self, *, office: bool) -> None:
        """Ready for a document (and let go of the last one's text)."""
        self._breaks = _OFFICE_BREAK_ELEMENTS if office else None  # None: every element breaks words
        self.chunks: list[str] = []
        self.body_chunks: list[str] = []
        self.attributes: list[str] = []
        self.styles: list[str] = []
        self.hidden: list[str] = []
        self.ended = False  # whether libxml2 read the markup to its end (_END)
        self._outside_body = 0  # inside <head> or <title>
        self._hidden_depth = 0  # inside <script>, <style> or <template> of an office document
        self._hidden_tag = ""
        self._pending: list[str] = []  # a run of hidden text, which libxml2 hands over in pieces
        self._tags: dict[str, tuple[str, bool, bool]] = {}  # libxml2's tag -> what _learn says of it

    def _learn(self, tag: str) -> tuple[str, bool, bool]:
        """What a tag is: its name as html.parser names it ("" for a tag libxml2 added), whether it
        separates words, and whether it is one of the few elements the reading treats apart."""
        name = tag[2:] if tag.startswith("x-") else ""
        if tag == "x-":
            self.ended = True
        if not name.isascii():
            name = name.lower()  # libxml2 lowers ASCII letters only
        breaks = bool(name) and (self._breaks is None or name.rpartition(":")[2] in self._breaks)
        known = self._tags[tag] = (name, breaks, name in _SPECIAL_ELEMENTS)
        return known

    def start(self, tag: str, attrib: dict[str, str]) -> None:
        name, breaks, special = self._tags.get(tag) or self._learn(tag)
        if not name:
            return
        if self._pending:
            self._hidden_run()
        for attribute, value in attrib.items():
            if attribute != "style":
                self.attributes.append(value)
            elif value:
                self.styles.append(value)
                breaks = breaks or _DETACHING_STYLE.search(value) is not None
        if special:
            if name in ("head", "title"):
                self._outside_body += 1
            elif name == "body":
                self._outside_body = 0
        if breaks:
            self._emit("\n")
        if special and name in _HIDDEN_TEXT_ELEMENTS and self._breaks is not None:
            self._hidden_depth += 1
            self._hidden_tag = name

    def end(self, tag: str) -> None:
        name, breaks, special = self._tags.get(tag) or self._learn(tag)
        if not name:
            return
        if self._pending:
            self._hidden_run()
        if special:
            if name in ("head", "title") and self._outside_body:
                self._outside_body -= 1
            if self._hidden_depth and name == self._hidden_tag:
                self._hidden_depth -= 1
        if breaks:
            self._emit("\n")

    def data(self, data: str) -> None:
        if self._hidden_depth:
            self._pending.append(data)
        else:
            self._emit(data)

    def comment(self, text: str) -> None:
        """What libxml2 reads as a comment, though _prepared took comments out (``</ x>``)."""
        self.hidden.append(text)

    def close(self) -> None:
        if self._pending:
            self._hidden_run()

    def _hidden_run(self) -> None:
        text = "".join(self._pending)
        self._pending = []
        if self._hidden_tag == "style":
            self.hidden.extend(_css_text(text))
        else:
            self.hidden.append(text)

    def _emit(self, text: str) -> None:
        self.chunks.append(text)
        if not self._outside_body:
            self.body_chunks.append(text)

    def rendered(self, taken_out: list[str]) -> Rendered:
        hidden = self.hidden
        hidden.extend(taken_out)
        read_attributes(self.styles, self.attributes, hidden)
        return Rendered(
            text="".join(self.chunks), hidden=hidden, body_text="".join(self.body_chunks), reader="libxml2"
        )


# Parsers not in use, each with its collector (as in gateway/policy/html.py: making one costs
# more than reading a short document; pop() and append() are atomic, so threads never share one).
_IDLE_PARSERS: list[tuple[CustomTargetParser[None], _Collector]] = []


def _compiled(markup: str, *, office: bool) -> Rendered:
    """Render with libxml2."""
    prepared, taken_out = _prepared(markup.replace("\x00", ""))
    try:
        parser, collector = _IDLE_PARSERS.pop()
    except IndexError:
        collector = _Collector()
        parser = etree.HTMLParser(
            target=cast("etree.ParserTarget[None]", collector),
            encoding="utf-8",
            no_network=True,  # the HTML parser loads no DTD and declares no entity either way
            huge_tree=True,  # no depth or text-length limit: the message size limit bounds both
            remove_blank_text=False,
            remove_comments=False,
            remove_pis=False,
        )
    collector.reset(office=office)
    # UTF-8 bytes with the encoding given, so that an XML declaration's encoding is not applied to
    # text already decoded; a lone surrogate (not UTF-8) becomes "?".
    parser.feed(prepared.encode("utf-8", "replace"))
    parser.close()
    if not collector.ended:
        # A tag or attribute value left open swallowed the rest: read all of the markup as hidden
        # text (as html.parser's reading does when it fails), so nothing goes unread.
        taken_out.append(markup)
    rendered = collector.rendered(taken_out)
    collector.reset(office=False)
    _IDLE_PARSERS.append((parser, collector))  # only after a reading that went through
    return rendered


def render_xml(markup: str, *, office: bool) -> Rendered:
    """Render XML. ``office`` documents join runs within a paragraph; other XML breaks at every tag."""
    if _COMPILED:
        try:
            return _compiled(markup, office=office)
        except Exception:  # noqa: S110 - fail closed: the reference reading reads every character
            pass
    return reference_xml(markup, office=office)


def reference_xml(markup: str, *, office: bool) -> Rendered:
    """Render XML with ``html.parser``: the reference reading the compiled one must agree with."""
    breaks = _OFFICE_BREAK_ELEMENTS if office else None
    return _run(_Renderer(breaks=breaks, local_names=True), markup)
