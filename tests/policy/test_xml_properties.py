"""Property: the compiled XML reading (libxml2) reads what the reference reading (html.parser) reads.

Hypothesis writes well-formed XML documents as data files, SVG and office document parts are
written: nested elements (office names such as ``w:p``/``w:r``/``w:t`` runs, data names, and names
HTML gives a meaning to: ``title``, ``link``, ``br``, ``p``, ``li``, ``html``, ``template``,
``plaintext``...), self-closing elements, attributes (escaped values, character references,
namespace declarations, ``xml:space``, percent-encoded and ``mailto:`` links, ``style`` with CSS
comments and strings), text with XML's entities and character references, CDATA sections holding
markup, comments, processing instructions, ``<script>`` and ``<style>`` (raw text to both
readings), an XML declaration and a doctype (with an internal subset declaring an entity the text
uses). For each document, in office mode and not, the compiled reading
(:func:`gateway.policy.xml_text.render_xml`, the libxml2 path, not its fallback) and the
reference reading (:func:`gateway.policy.xml_text.reference_xml`) have:

- the same visible text and body text, word for word (libxml2 reads CR LF as LF, and a
  self-closing element breaks a line twice where html.parser broke it once: whitespace only);
- the same hidden text, character for character (modulo whitespace), every hidden text of the
  reference within one of the compiled reading's (which keeps a run of hidden text whole where a
  comment split it for html.parser).

Hypothesis also writes hostile XML: unclosed comments, CDATA sections, processing instructions,
doctypes, ``<script>`` and attribute values, deep nesting, entity bombs, and a doctype whose
external entities name a file holding a marker. Each is read by libxml2 (not the fallback), with
no entity expanded (the text is never much longer than the markup), nothing fetched (the marker is
never read) and the name written before and after the attack still read.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.policy.html import Rendered
from gateway.policy.normalize import normalize
from gateway.policy.xml_text import _compiled, reference_xml, render_xml

NAME = "Jin Park"
WORDS = ("hello", "report", "the", "meeting", "café", "Zoë", "李明", "x", "1 > 0", "a;b", "50%", "it's")
REFERENCES = (
    "&amp;", "&lt;", "&gt;", "&quot;", "&apos;", "&#233;", "&#xE9;", "&#x4A;", "&#105;", "&#8217;",
    "&#x1F600;", "&#160;", "&who;",
)  # fmt: skip
SPACES = (" ", "\n", "\r\n", "\t", "\n  ")
OFFICE_NAMES = (
    "w:p", "w:r", "w:t", "w:tc", "w:tab", "w:br", "a:p", "a:r", "a:t", "text:p", "text:span", "text:h",
    "table:table-cell", "si", "t", "v", "c", "row", "dc:title", "dc:creator", "cp:lastModifiedBy",
)  # fmt: skip
DATA_NAMES = ("item", "note", "entry", "name", "value", "Record", "description", "svg:text", "Ärger")
HTML_NAMES = (
    "title", "p", "li", "link", "br", "head", "body", "html", "table", "tr", "td", "option", "a",
    "img", "select", "frameset", "plaintext", "textarea", "template", "noscript", "iframe", "xmp",
)  # fmt: skip
NAMESPACES = (
    ("w", "http://schemas.openxmlformats.org/wordprocessingml/2006/main"),
    ("a", "http://schemas.openxmlformats.org/drawingml/2006/main"),
    ("text", "urn:oasis:names:tc:opendocument:xmlns:text:1.0"),
    ("dc", "http://purl.org/dc/elements/1.1/"),
    ("svg", "http://www.w3.org/2000/svg"),
)


def escaped(text: str) -> str:
    """``text`` as XML character data or attribute value."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace('"', "&quot;")


@dataclass(frozen=True)
class Document:
    markup: str
    visible_names: int  # written where an office reader sees it (runs join within a paragraph)
    hidden_names: int  # written in attributes, comments, CDATA, processing instructions


@st.composite
def text_run(draw: st.DrawFn) -> str:
    parts = draw(
        st.lists(st.one_of(st.sampled_from(WORDS).map(escaped), st.sampled_from(REFERENCES)), max_size=5)
    )
    return draw(st.sampled_from(SPACES)).join(parts)


@st.composite
def name_in_runs(draw: st.DrawFn) -> str:
    """The name in office runs, cut at random places (an editor splits words into runs freely)."""
    cuts = sorted(draw(st.sets(st.integers(1, len(NAME) - 1), max_size=3)))
    pieces = [NAME[start:end] for start, end in zip([0, *cuts], [*cuts, len(NAME)], strict=True)]
    space = ' xml:space="preserve"' if draw(st.booleans()) else ""
    runs = "".join(f"<w:r><w:rPr><w:b/></w:rPr><w:t{space}>{escaped(piece)}</w:t></w:r>" for piece in pieces)
    return f"<w:p>{runs}</w:p>"


@st.composite
def attributes(draw: st.DrawFn, *, name: bool = False) -> str:
    """Attributes, each name once; with ``name``, one of the values holds the name."""
    chosen = draw(
        st.dictionaries(
            st.sampled_from(("w:val", "id", "title", "xml:space", "href", "style", "alt", "Data-Note", "v")),
            st.one_of(
                st.sampled_from(WORDS),
                st.just(""),
                st.sampled_from(("display:block", "color:red /* a note */", 'font-family: "Segoe UI"')),
                st.sampled_from(("https://example.net/?q=a%20b", "mailto:someone%40example.org")),
            ),
            max_size=3,
        )
    )
    if name:
        how = draw(st.sampled_from(("title", "href", "style", "xmlns")))
        if how == "href":
            chosen["href"] = "https://example.net/?who=" + NAME.replace(" ", "%20")
        elif how == "style":
            chosen["style"] = f'font-family: "{NAME}"'
        elif how == "xmlns":
            chosen["xmlns:j"] = "urn:" + NAME.replace(" ", "%20")
        else:
            chosen["title"] = NAME
    quote = draw(st.sampled_from(('"', "'")))
    written = []
    for key, value in chosen.items():
        text = escaped(value).replace("'", "&apos;") if quote == "'" else escaped(value)
        written.append(f"{draw(st.sampled_from(SPACES))}{key}={quote}{text}{quote}")
    return "".join(written)


@st.composite
def hidden_name(draw: st.DrawFn) -> str:
    """The name where no reader sees it: an attribute, a comment, CDATA, a processing instruction."""
    place = draw(st.sampled_from(("attribute", "comment", "cdata", "pi")))
    if place == "attribute":
        return f"<note{draw(attributes(name=True))}/>"
    if place == "comment":
        return f"<!-- draft for <b>{NAME}</b> &amp; -->"
    if place == "cdata":
        return f"<![CDATA[<p>{NAME} & co</p>]]>"
    return f"<?note for {NAME}?>"


def leaves() -> st.SearchStrategy[tuple[str, int, int]]:
    return st.one_of(
        text_run().map(lambda run: (run, 0, 0)),
        name_in_runs().map(lambda markup: (markup, 1, 0)),
        hidden_name().map(lambda markup: (markup, 0, 1)),
        st.sampled_from(
            (
                "<!-- a comment with <b>markup</b> & ampersands -->",
                "<!---->",
                "<![CDATA[ if (a < b && c > d) ]]>",
                '<?mso-application progid="Word.Document"?>',
                "<w:br/>",
                "<w:tab />",
                '<v:shape id="1" style="position:absolute"/>',
            )
        ).map(lambda markup: (markup, 0, 0)),
    )


def content(depth: int, *, raw: bool = True) -> st.SearchStrategy[tuple[str, int, int]]:
    if depth == 0:
        return leaves()
    return st.one_of(leaves(), element(depth, raw=raw))


@st.composite
def element(draw: st.DrawFn, depth: int, *, raw: bool = True) -> tuple[str, int, int]:
    kinds = ["office", "data", "html"] + (["raw"] if raw else [])
    kind = draw(st.sampled_from(kinds))
    # Inside <script> or <style> everything is text to both readings, up to the first </script>
    # or </style>: no <script> or <style> in them, as none is in a well-formed document's text.
    children = draw(st.lists(content(depth - 1, raw=raw and kind != "raw"), min_size=0, max_size=4))
    inner = "".join(markup for markup, _, _ in children)
    names = {
        "office": OFFICE_NAMES,
        "data": DATA_NAMES,
        "html": HTML_NAMES,
        "raw": ("script", "style"),
    }[kind]
    tag = draw(st.sampled_from(names))
    written = draw(attributes())
    if kind == "raw":
        # Text to both readings, not markup: no name in it is counted.
        return f"<{tag}{written}>{inner}</{tag}>", 0, 0
    visible = sum(count for _, count, _ in children)
    hidden = sum(count for _, _, count in children)
    if tag == "template":
        hidden, visible = hidden + visible, 0  # an office reading hides a template's text
    if not children and draw(st.booleans()):
        return f"<{tag}{written}/>", 0, 0
    return f"<{tag}{written}>{inner}</{tag}>", visible, hidden


@st.composite
def documents(draw: st.DrawFn) -> Document:
    body, visible, hidden = draw(element(depth=4))
    declarations = " ".join(f'xmlns:{prefix}="{uri}"' for prefix, uri in NAMESPACES)
    root = f"<root {declarations}>{body}</root>" if draw(st.booleans()) else body
    prolog = draw(st.sampled_from(("", '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\r\n')))
    doctype = draw(
        st.sampled_from(
            (
                "",
                '<!DOCTYPE root SYSTEM "urn:example:root">\n',
                '<!DOCTYPE root [<!ENTITY who "a person">]>\n',
            )
        )
    )
    return Document(prolog + doctype + root, visible, hidden)


def hidden_texts(rendered: Rendered) -> list[str]:
    return [" ".join(text.split()) for text in rendered.hidden if text.strip()]


def characters(texts: list[str]) -> Counter[str]:
    return Counter("".join("".join(text.split()) for text in texts))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents(), st.booleans())
def test_compiled_reading_reads_what_the_reference_reading_reads(document: Document, office: bool) -> None:
    compiled = _compiled(document.markup, office=office)  # raises where render_xml would fall back
    reference = reference_xml(document.markup, office=office)

    assert render_xml(document.markup, office=office) == compiled
    assert (compiled.reader, reference.reader) == ("libxml2", "html.parser")
    assert compiled.text.split() == reference.text.split()
    assert compiled.body_text.split() == reference.body_text.split()
    assert characters(compiled.hidden) == characters(reference.hidden)
    reference_hidden, compiled_hidden = hidden_texts(reference), hidden_texts(compiled)
    assert [text for text in reference_hidden if not any(text in other for other in compiled_hidden)] == []


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents())
def test_every_name_written_is_read_where_it_was_written(document: Document) -> None:
    rendered = render_xml(document.markup, office=True)
    name = normalize(NAME)

    visible = normalize(rendered.text).count(name)
    hidden = normalize("\n".join(rendered.hidden)).count(name)

    if "<template" not in document.markup:
        # Both readings lose track of a <template> holding a <script> or <style> (the rest of an
        # office document becomes hidden text): a name may move from visible to hidden there.
        assert visible >= document.visible_names
    assert visible + hidden >= document.visible_names + document.hidden_names


# --- hostile XML -----------------------------------------------------------------------------------

MARKER = "marker-5d1e77-never-read"


@pytest.fixture(scope="module")
def secret_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    secret: Path = tmp_path_factory.mktemp("xxe") / "secret.txt"
    secret.write_text(MARKER + "\n")
    return secret.as_uri()


def entity_bomb(levels: int, fanout: int) -> str:
    entities = ['<!ENTITY e0 "lol">'] + [
        f'<!ENTITY e{level} "{f"&e{level - 1};" * fanout}">' for level in range(1, levels + 1)
    ]
    return f"<!DOCTYPE r [{''.join(entities)}]><r>&e{levels};</r>"


def external_entities(uri: str) -> str:
    return (
        f'<!DOCTYPE r SYSTEM "{uri}" [<!ENTITY xxe SYSTEM "{uri}"><!ENTITY % p SYSTEM "{uri}"> %p;'
        f'<!ENTITY u PUBLIC "-//x//y" "{uri}">]><r>&xxe;&u;<x:include xmlns:x="http://www.w3.org/2001/XInclude"'
        f' href="{uri}" parse="text"/></r>'
    )


@st.composite
def attacks(draw: st.DrawFn, uri: str) -> str:
    count = draw(st.integers(1, 3000))
    kind = draw(
        st.sampled_from(
            (
                "comment", "cdata", "pi", "doctype", "script", "attribute", "nesting", "open-nesting",
                "bomb", "external", "less-than", "ampersand",
            )
        )
    )  # fmt: skip
    if kind == "bomb":
        return entity_bomb(draw(st.integers(1, 12)), draw(st.integers(2, 10)))
    if kind == "external":
        return external_entities(uri)
    if kind == "nesting":
        return "<a>" * count + "x" + "</a>" * count
    unit = {
        "comment": "<!--",
        "cdata": "<![CDATA[",
        "pi": "<?x ",
        "doctype": "<!DOCTYPE x ",
        "script": "<script>",
        "attribute": '<a b="',
        "open-nesting": "<a>",
        "less-than": "<",
        "ampersand": "&",
    }[kind]
    return unit * count


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), office=st.booleans())
def test_hostile_xml_is_read_by_libxml2_without_expansion(
    secret_uri: str, data: st.DataObject, office: bool
) -> None:
    attack = data.draw(attacks(secret_uri))
    markup = data.draw(
        st.sampled_from(
            (
                f"<r>{NAME}</r>{attack}<r>{NAME}</r>",
                f"{attack}<r>{NAME}</r>",
                f'<?xml version="1.0"?><r a="{NAME}">{attack}{NAME}',
            )
        )
    )

    rendered = render_xml(markup, office=office)
    everything = rendered.text + "\n" + "\n".join(rendered.hidden)

    assert rendered.reader == "libxml2"
    assert MARKER not in everything
    assert len(everything) <= 3 * len(markup) + 100  # nothing expanded
    assert normalize(everything).count(normalize(NAME)) >= 1
