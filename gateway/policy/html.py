"""Render HTML and XML to the text a reader sees, plus the hidden text a reader can still find.

Built on the standard library's tolerant ``html.parser``. :func:`render_html` returns the
rendered text (block elements break lines; inline elements such as ``<b>`` or ``<span>`` join,
as a browser shows them; character references decoded) and, separately, everything that is not
rendered but travels with the message: attribute values (``href``, ``alt``, ``title``,
``mailto:`` links, percent-decoded URLs, text ``data:`` URIs), comments, script text, and the
comments and quoted strings of CSS (which ``content:`` can display). :func:`render_xml` does the
same for XML documents (office formats, data files).
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field
from html.parser import HTMLParser
from urllib.parse import unquote


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

# Paragraph-like elements of office XML (OOXML, ODF): their ends separate words, while runs
# (<w:r>, <w:t>, <text:span>, ...) join, because editors split words into runs freely.
_OFFICE_BREAK_ELEMENTS = _words(
    """p br cr tab tc tr h si c row table-cell line-break list-item txbody sp v s title
    description creator lastmodifiedby keywords subject category"""
)


@dataclass
class Rendered:
    """Text extracted from one HTML or XML document."""

    text: str  # what a reader sees (the window title included)
    hidden: list[str] = field(default_factory=list)  # attribute values, comments, script, CSS text
    body_text: str = ""  # the text of the document's body only: what a reader sees first


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
                continue
            extra = _url_text(value)
            if not _DATA_URI.match(value.strip()):
                # An inline image's base64 is noise, not text; only a text data: URI is read (decoded).
                self.hidden.append(value)
            self.hidden.extend(extra)

    def _emit(self, text: str) -> None:
        self._chunks.append(text)
        if not self._outside_body:
            self._body_chunks.append(text)

    def text(self) -> str:
        return "".join(self._chunks)

    def body_text(self) -> str:
        return "".join(self._body_chunks)


def _css_text(css: str) -> list[str]:
    """The parts of CSS that carry human text: comments and quoted strings."""
    found = [match.group(1) for match in _CSS_COMMENT.finditer(css)]
    found.extend(match.group(1) or match.group(2) or "" for match in _CSS_STRING.finditer(css))
    return [text for text in found if text.strip()]


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
        return Rendered(text=crude, hidden=[markup], body_text=crude)
    return Rendered(text=parser.text(), hidden=parser.hidden, body_text=parser.body_text())


def render_html(markup: str) -> Rendered:
    """Render HTML: the visible text, and hidden text (attributes, comments, script, CSS text)."""
    return _run(_Renderer(breaks=_BLOCK_ELEMENTS, local_names=False), markup)


def render_xml(markup: str, *, office: bool) -> Rendered:
    """Render XML. ``office`` documents join runs within a paragraph; other XML breaks at every tag."""
    breaks = _OFFICE_BREAK_ELEMENTS if office else None
    return _run(_Renderer(breaks=breaks, local_names=True), markup)
