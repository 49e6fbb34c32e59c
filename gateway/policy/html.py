"""Render HTML and XML to the text a reader sees, plus the hidden text a reader can still find.

:func:`render_html` returns the rendered text (block elements break lines; inline elements such
as ``<b>`` or ``<span>`` join, as a browser shows them; character references decoded) and,
separately, everything that is not rendered but travels with the message: attribute values
(``href``, ``alt``, ``title``, ``mailto:`` links, percent-decoded URLs, text ``data:`` URIs),
comments, script text, and the comments and quoted strings of CSS (which ``content:`` can
display). XML is read the same way, by :mod:`gateway.policy.xml_text`.

HTML is tokenized by libxml2 (through ``lxml``, compiled: about a quarter of the time of the
standard library's ``html.parser``); ``html.parser`` gives the reference reading, which the
compiled one is tested against and falls back to should lxml fail.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field, replace
from html.parser import HTMLParser
from typing import TYPE_CHECKING, cast
from urllib.parse import unquote

if TYPE_CHECKING:
    from lxml.etree._parser import CustomTargetParser  # in the type stubs only

try:
    from lxml import etree
except ImportError:  # pragma: no cover - lxml is a dependency; a broken install reads as before
    etree = None  # type: ignore[assignment]
# The collector below relies on libxml2 2.14's HTML5 tokenizer (lxml 6 wheels bundle it): an lxml
# built against an older system libxml2 tokenizes differently, so HTML is read the reference way.
_COMPILED = etree is not None and etree.LIBXML_VERSION >= (2, 14)


def _words(text: str) -> frozenset[str]:
    """A set of words written as one string (keeps long vocabulary tables readable)."""
    return frozenset(text.split())


# Elements a browser lays out as separate blocks (or which separate words visually).
_BLOCK_ELEMENTS = _words(
    """address article aside blockquote body br button caption center col colgroup dd details
    dialog dir div dl dt fieldset figcaption figure footer form frame frameset h1 h2 h3 h4 h5 h6
    head header hr html iframe img input label legend li main menu nav noscript object ol optgroup
    option p pre section select summary table tbody td textarea tfoot th thead title tr ul video
    audio canvas meta link base"""
)
# CSS that takes an inline element out of the text flow, so its text does not join its neighbours.
_DETACHING_STYLE = re.compile(r"display|float|position|flex|grid", re.IGNORECASE)
_HIDDEN_TEXT_ELEMENTS = frozenset({"script", "style", "template"})
# An unclosed comment or string runs to the end of the text (as in CSS): requiring the closing
# delimiter made every opening one rescan the rest of a text without it, which is quadratic.
_CSS_COMMENT = re.compile(r"/\*(.*?)(?:\*/|\Z)", re.DOTALL)
_CSS_STRING = re.compile(r"\"((?:[^\"\\]|\\.?)*)(?:\"|\Z)|'((?:[^'\\]|\\.?)*)(?:'|\Z)", re.DOTALL)
_DATA_URI = re.compile(r"data:([^,;]*)((?:;[^,;]*)*),(.*)", re.IGNORECASE | re.DOTALL)
_TEXT_DATA_TYPES = re.compile(r"^(text/|application/(json|xml|xhtml\+xml)$|.*\+(xml|json)$)")
_TAG = re.compile(r"<[^<>]*>")  # never across a "<": a run of "<" without ">" would be quadratic


@dataclass
class Rendered:
    """Text extracted from one HTML or XML document."""

    text: str  # what a reader sees (the window title included)
    hidden: list[str] = field(default_factory=list)  # attribute values, comments, script, CSS text
    body_text: str = ""  # the text of the document's body only: what a reader sees first
    # Which reading it is: "libxml2", "html.parser" or "tags removed" (html.parser failed). Not
    # compared: the readings are meant to be equal.
    reader: str = field(default="html.parser", compare=False)


class _Renderer(HTMLParser):
    """Collects rendered text and hidden text from (X)HTML or XML."""

    def __init__(self, *, breaks: frozenset[str] | None, local_names: bool) -> None:
        super().__init__(convert_charrefs=True)
        self._breaks = breaks  # None: every element breaks words
        self._local_names = local_names
        self._chunks: list[str] = []
        self._body_chunks: list[str] = []
        self._outside_body = 0  # inside <head> or <title>
        self.hidden: list[str] = []
        self._hidden_depth = 0
        self._hidden_tag = ""

    def _name(self, tag: str) -> str:
        return tag.rpartition(":")[2] if self._local_names else tag

    def _breaks_words(self, tag: str, attrs: list[tuple[str, str | None]]) -> bool:
        if self._breaks is None or self._name(tag) in self._breaks:
            return True
        return any(name == "style" and value and _DETACHING_STYLE.search(value) for name, value in attrs)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._attributes(attrs)
        if tag in ("head", "title"):
            self._outside_body += 1
        elif tag == "body":
            self._outside_body = 0
        if self._breaks_words(tag, attrs):
            self._emit("\n")
        if tag in _HIDDEN_TEXT_ELEMENTS and self._breaks is not None:
            self._hidden_depth += 1
            self._hidden_tag = tag

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._attributes(attrs)
        if self._breaks_words(tag, attrs):
            self._emit("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("head", "title") and self._outside_body:
            self._outside_body -= 1
        if self._hidden_depth and tag == self._hidden_tag:
            self._hidden_depth -= 1
        if self._breaks is None or self._name(tag) in self._breaks:
            self._emit("\n")

    def handle_data(self, data: str) -> None:
        if self._hidden_depth:
            if self._hidden_tag == "style":
                self.hidden.extend(_css_text(data))
            else:
                self.hidden.append(data)
        else:
            self._emit(data)

    def handle_comment(self, data: str) -> None:
        self.hidden.append(data)

    def handle_decl(self, decl: str) -> None:
        self.hidden.append(decl)

    def handle_pi(self, data: str) -> None:
        self.hidden.append(data)

    def unknown_decl(self, data: str) -> None:  # CDATA sections and the like
        self.hidden.append(data)

    def _attributes(self, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if not value:
                continue
            if name == "style":
                self.hidden.extend(_css_text(value))
            else:
                _read_attribute(value, self.hidden)

    def _emit(self, text: str) -> None:
        self._chunks.append(text)
        if not self._outside_body:
            self._body_chunks.append(text)

    def text(self) -> str:
        return "".join(self._chunks)

    def body_text(self) -> str:
        return "".join(self._body_chunks)


def _read_attribute(value: str, hidden: list[str]) -> None:
    """Add what an attribute value (other than ``style``) says to ``hidden``."""
    extra = _url_text(value)
    if not _DATA_URI.match(value.strip()):
        # An inline image's base64 is noise, not text; only a text data: URI is read (decoded).
        hidden.append(value)
    hidden.extend(extra)


def read_attributes(styles: list[str], values: list[str], hidden: list[str]) -> None:
    """Add what ``style`` attribute values and other attribute values say to ``hidden``."""
    for css in styles:
        if "/*" in css or '"' in css or "'" in css:  # nothing else in CSS is text
            hidden.extend(_css_text(css))
    for value in values:
        if ":" in value or "%" in value:  # a data: URI or a percent-encoded URL
            _read_attribute(value, hidden)
        elif value:
            hidden.append(value)


def _css_text(css: str) -> list[str]:
    """The parts of CSS that carry human text: comments and quoted strings."""
    found = [match.group(1) for match in _CSS_COMMENT.finditer(css)]
    found.extend(match.group(1) or match.group(2) or "" for match in _CSS_STRING.finditer(css))
    # CSS escapes (`\43 astellano`) are what a `content:` string shows, not what it spells.
    return [_CSS_ESCAPE.sub(_css_unescape, text) if "\\" in text else text for text in found if text.strip()]


_CSS_ESCAPE = re.compile(r"\\(?:([0-9a-fA-F]{1,6})[ \t\n\f]?|\r\n|\n|(.))", re.DOTALL)


def _css_unescape(match: re.Match[str]) -> str:
    if match.group(1):
        code = int(match.group(1), 16)
        return chr(code) if 0 < code <= 0x10FFFF and not 0xD800 <= code <= 0xDFFF else "\ufffd"
    return match.group(2) or ""


def _url_text(value: str) -> list[str]:
    """Extra readings of a URL-like attribute value: percent-decoded, and text data: URIs."""
    extra: list[str] = []
    stripped = value.strip()
    data_uri = _DATA_URI.match(stripped)
    if data_uri:
        media_type, parameters, payload = data_uri.groups()
        if _TEXT_DATA_TYPES.match(media_type.strip().lower() or "text/plain"):
            extra.append(_data_uri_text(parameters, payload))
        return extra
    if "%" in value:
        extra.append(unquote(value, errors="replace"))
    return extra


def _data_uri_text(parameters: str, payload: str) -> str:
    if ";base64" in parameters.lower():
        try:
            raw = base64.b64decode(re.sub(r"\s+", "", unquote(payload)) + "==")
        except (binascii.Error, ValueError):
            return payload
        return raw.decode("utf-8", "replace")
    return unquote(payload, errors="replace")


def _run(parser: _Renderer, markup: str) -> Rendered:
    try:
        parser.feed(markup)
        parser.close()
    except Exception:  # html.parser is tolerant, but a parser bug must not let text through unread
        # Fall back to the crudest reading: tags become spaces, everything else is text.
        crude = _TAG.sub(" ", markup)
        return Rendered(text=crude, hidden=[markup], body_text=crude, reader="tags removed")
    return Rendered(text=parser.text(), hidden=parser.hidden, body_text=parser.body_text())


# --- the compiled reading (libxml2 through lxml) ---------------------------------------------------
# libxml2 tokenizes as HTML5 does and hands each start tag, end tag, text run and comment to
# _Collector (lxml's parser-target interface, called from C): no tree is built, so nothing a tree
# builder would drop or move (text after </html>, nesting beyond its depth limit) goes unread.
# Where libxml2 reads differently from html.parser, the difference is undone:
# - a second <html>, <head> or <body> tag is dropped with its attributes: those tags' attributes are
#   read from the markup (_ROOT_TAG);
# - a doctype keeps only its name: declarations are read from the markup (_DOCTYPE_OR_ROOT);
# - NUL becomes U+FFFD, which normalising keeps where it drops NUL ("Ji\0n" is "Jin" to a matcher):
#   NULs are removed first;
# - the content of title, textarea, xmp, iframe, noembed, noframes and plaintext is one text run,
#   tags (and but for title and textarea, references) unread: it is read again (_raw_element);
# - an attribute given twice in one tag keeps its first value (as in browsers): not undone.
# The property test in tests/policy/test_html_properties.py compares the two readings.

# Elements without content: they break a line once, as html.parser's single start tag did.
_VOID_ELEMENTS = _words("area base br col embed frame hr img input keygen link meta param source track wbr")
_RAW_TEXT_ELEMENTS = _words("title textarea xmp iframe noembed noframes plaintext")
_RCDATA_ELEMENTS = frozenset({"title", "textarea"})  # their references are decoded
# Document type declarations and <html>, <head> and <body> start tags, found in one scan (a <head>
# tells whether the one libxml2 reports was written: it adds one before a leading <script>).
_DOCTYPE_OR_ROOT = re.compile(r"<(?:!(doctype[^>]*)|(html|head|body)[\s/>])", re.IGNORECASE)
_ROOT_TAG = re.compile(
    r"<(?:html|head|body)(?=[\s/>])(?:[^>\"']++|\"[^\"]*+\"?|'[^']*+'?)*+>?", re.IGNORECASE
)


class _Collector:
    """An lxml parser target: collects what _Renderer collects, from libxml2's events."""

    def __init__(self) -> None:
        self.reset(head=False, reread=False)

    def reset(self, *, head: bool, reread: bool) -> None:
        """Ready for a document (and let go of the last one's text)."""
        self._head = head  # whether the markup has a <head> tag (libxml2 may add one that it has not)
        self._reread = reread  # whether the text of raw-text elements is read again as markup
        self.chunks: list[str] = []
        self.body_chunks: list[str] = []
        self.attributes: list[str] = []  # values of attributes other than style, read in bulk
        self.styles: list[str] = []
        self.hidden: list[str] = []
        self._outside_body = 0  # inside <head> or <title>
        self._code = ""  # "script" or "style" while inside one
        self._templates = 0
        self._raw = ""  # the raw-text element (_RAW_TEXT_ELEMENTS) being read
        self._raw_text: list[str] = []
        # One run of script, style or template text, which libxml2 may hand over in pieces (at
        # character references, at its buffer's end): a run is kept whole, as one hidden text, and
        # runs in a template join across inline elements as visible text does ("J<b>in</b>").
        self._pending: list[str] = []

    def start(self, tag: str, attrib: dict[str, str]) -> None:
        if self._pending and (tag in _BLOCK_ELEMENTS or tag in _HIDDEN_TEXT_ELEMENTS):
            self._hidden_run()
        breaks = tag in _BLOCK_ELEMENTS
        if attrib:
            for name, value in attrib.items():
                if name != "style":
                    self.attributes.append(value)
                elif value:
                    self.styles.append(value)
                    breaks = breaks or _DETACHING_STYLE.search(value) is not None
        if tag == "title" or (tag == "head" and self._head):
            self._outside_body += 1
        elif tag == "body":
            self._outside_body = 0
        if breaks:
            self._emit("\n")
        if tag in _HIDDEN_TEXT_ELEMENTS:
            if tag == "template":
                self._templates += 1
            else:
                self._code = tag
        elif tag in _RAW_TEXT_ELEMENTS:
            self._raw = tag

    def end(self, tag: str) -> None:
        if self._pending and (tag in _BLOCK_ELEMENTS or tag in _HIDDEN_TEXT_ELEMENTS):
            self._hidden_run()
        if tag == self._raw:
            self._raw_element()
        if (tag == "title" or (tag == "head" and self._head)) and self._outside_body:
            self._outside_body -= 1
        if tag == self._code:
            self._code = ""
        elif tag == "template" and self._templates:
            self._templates -= 1
        if tag in _BLOCK_ELEMENTS and tag not in _VOID_ELEMENTS:
            self._emit("\n")

    def data(self, data: str) -> None:
        if self._code or self._templates:
            self._pending.append(data)
        elif self._raw:
            self._raw_text.append(data)
        else:
            self._emit(data)

    def comment(self, text: str) -> None:
        self.hidden.append(text)

    def pi(self, target: str, data: str | None = None) -> None:
        self.hidden.append(f"{target} {data or ''}")

    def doctype(self, *_parts: object) -> None:
        """Declarations are read from the markup itself (_DOCTYPE_OR_ROOT)."""

    def close(self) -> None:
        if self._pending:
            self._hidden_run()
        if self._raw:  # an element left open at the end of the document
            self._raw_element()

    def _hidden_run(self) -> None:
        text = "".join(self._pending)
        self._pending = []
        if self._code == "style":
            self.styles.append(text)
        else:
            self.hidden.append(text)

    def _raw_element(self) -> None:
        """The text of a raw-text element, read as html.parser read it: as markup."""
        text = "".join(self._raw_text)
        marks = "<" if self._raw in _RCDATA_ELEMENTS else "<&"
        self._raw, self._raw_text = "", []
        if not self._reread or not any(mark in text for mark in marks):
            self._emit(text)
            return
        # Read once more, as markup (raw-text elements inside it are not read again: each reading
        # is linear); and as written, hidden ("&lt;" in a title was decoded before the reading).
        reading = _compiled(text, reread=False)
        self._emit(reading.text)
        self.hidden.extend(reading.hidden)
        self.hidden.append(text)

    def _emit(self, text: str) -> None:
        self.chunks.append(text)
        if not self._outside_body:
            self.body_chunks.append(text)

    def rendered(self, declarations: list[str]) -> Rendered:
        hidden = self.hidden
        hidden.extend(declarations)
        read_attributes(self.styles, self.attributes, hidden)
        return Rendered(
            text="".join(self.chunks), hidden=hidden, body_text="".join(self.body_chunks), reader="libxml2"
        )


# Parsers not in use, each with its collector. Making one costs more than reading a short document
# (lxml inspects the target's methods), so they are kept; taken with pop() and given back with
# append(), each atomic, so threads never share one (and a nested reading takes another).
_IDLE_PARSERS: list[tuple[CustomTargetParser[None], _Collector]] = []


def _compiled(markup: str, *, reread: bool = True) -> Rendered:
    """Render with libxml2."""
    markup = markup.replace("\x00", "")
    declarations: list[str] = []
    roots: list[str] = []
    for declaration, root in _DOCTYPE_OR_ROOT.findall(markup):
        if root:
            roots.append(root.lower())
        else:
            declarations.append(declaration)
    try:
        parser, collector = _IDLE_PARSERS.pop()
    except IndexError:
        collector = _Collector()
        parser = etree.HTMLParser(
            target=cast("etree.ParserTarget[None]", collector),  # the stubs' Protocol has namespace events
            encoding="utf-8",
            no_network=True,
            huge_tree=True,
            remove_blank_text=False,
            remove_comments=False,
            remove_pis=False,
        )
    collector.reset(head="head" in roots, reread=reread)
    # UTF-8 bytes with the encoding given: a <meta charset> or an XML declaration in the markup
    # (already decoded) must not make libxml2 decode it again, and lxml refuses a str with an XML
    # declaration. A lone surrogate (not UTF-8) becomes "?": it splits a word in either reading.
    parser.feed(markup.encode("utf-8", "replace"))
    parser.close()
    if len(roots) > len(set(roots)):
        for tag in _ROOT_TAG.findall(markup):  # a few tags, each read alone: linear
            declarations.extend(reference_html(tag).hidden)
    rendered = collector.rendered(declarations)
    collector.reset(head=False, reread=False)
    _IDLE_PARSERS.append((parser, collector))  # only after a reading that went through
    return rendered


def render_html(markup: str) -> Rendered:
    """Render HTML: the visible text, and hidden text (attributes, comments, script, CSS text)."""
    if _COMPILED:
        try:
            return _compiled(markup)
        except Exception:  # noqa: S110 - fail closed: the reference reading reads every character
            # lxml raises on nothing HTML can contain that we know of; should it raise, or a
            # collector method fail, html.parser reads the document as it did before libxml2.
            pass
    return reference_html(markup)


def render_html_as_shown(markup: str) -> Rendered:
    """:func:`render_html`, with the text as a screen shows it where markup changes that.

    The extra readings are added to the hidden text: lines displayed right to left, and the text
    without the elements a style hides (letters hidden inside a word change the word).
    """
    rendered = render_html(markup)
    extra: list[str] = []
    if _DISPLAY_REVERSED.search(markup):
        # <bdo dir="rtl"> and CSS bidi-override show letters in reverse order: "onalletsaC niboR"
        # on screen reads "Robin Castellano". Every line is read reversed too (fail closed: which
        # element the override covers is a matter of layout).
        extra.extend(line[::-1] for line in rendered.text.splitlines() if line.strip())
    if _HIDING_TAG.search(markup):
        shown = render_html(_without_hidden_elements(markup)).text
        if shown != rendered.text and shown.strip():
            extra.append(shown)
    return replace(rendered, hidden=[*rendered.hidden, *extra]) if extra else rendered


_DISPLAY_REVERSED = re.compile(r"<bdo\b|bidi-override", re.IGNORECASE)
# Styles that show nothing of an element. Letters hidden inside a word ("Cas<span
# style="font-size:0">xyz</span>tellano") change the word the reader sees.
_HIDING_STYLE = (
    r"display\s*:\s*none|visibility\s*:\s*hidden|mso-hide\s*:\s*all"
    r"|(?:font-size|opacity|max-height|max-width|line-height)\s*:\s*0+(?:\.0*)?(?![.\d]*[1-9])"
)
_HIDING_TAG = re.compile(
    # No "<" inside a tag, so that a run of unclosed tags ("<a<a<a") is scanned once: linear.
    r"<([a-zA-Z][\w:-]*)\b(?=[^<>]*?(?:\shidden(?:[\s=/>])|style\s*=\s*(?:\"[^\"<>]*|'[^'<>]*|[^\s<>]*)(?:"
    + _HIDING_STYLE
    + r")))[^<>]*>",
    re.IGNORECASE,
)


def _without_hidden_elements(markup: str) -> str:
    """The markup without the elements a hiding style or ``hidden`` attribute makes invisible."""
    out: list[str] = []
    position = 0
    for opening in _HIDING_TAG.finditer(markup):
        if opening.start() < position:
            continue  # inside an element already removed
        out.append(markup[position : opening.start()])
        name = opening.group(1).lower()
        position = opening.end()
        if name in _VOID_ELEMENTS or opening.group(0).endswith("/>"):
            continue
        depth = 1
        same_name = re.compile(rf"<(/?){re.escape(name)}\b[^<>]*>", re.IGNORECASE)
        for tag in same_name.finditer(markup, position):
            depth += -1 if tag.group(1) else 1
            if depth == 0:
                position = tag.end()
                break
        else:
            position = len(markup)
    out.append(markup[position:])
    return "".join(out)


def reference_html(markup: str) -> Rendered:
    """Render HTML with ``html.parser``: the reference reading the compiled one must agree with."""
    return _run(_Renderer(breaks=_BLOCK_ELEMENTS, local_names=False), markup)
