"""XML to text: where a name written in hostile, broken or unusual XML ends up, and which reading read it.

Each case writes the name somewhere a sender can put it in an XML document and says where the
reading must have it: the visible text or the hidden text (attributes, comments, declarations,
processing instructions, CDATA). tests/policy/test_xml_properties.py compares the compiled
reading (libxml2) with the reference reading (html.parser) on generated documents; these are the
cases a generator would rarely write, and the hostile documents the reference reading took minutes
over (an unclosed ``<!--`` makes html.parser search the rest of the document at every one).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import gateway.policy.xml_text as xml_module
from gateway.policy.html import Rendered
from gateway.policy.matcher import IdentityMatcher
from gateway.policy.mime import parse_message
from gateway.policy.model import IdentityKind, ProtectedIdentity
from gateway.policy.normalize import normalize
from gateway.policy.xml_text import reference_xml, render_xml
from tests.policy.builders import Message, Multipart, Part, render

NAME = "Jin Park"
W = 'xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"'


def found(text: str) -> bool:
    return normalize(NAME) in normalize(text)


def where(rendered: Rendered) -> set[str]:
    places = {"text"} if found(rendered.text) else set()
    if found("\n".join(rendered.hidden)):
        places.add("hidden")
    return places


TEXT = {"text"}
HIDDEN = {"hidden"}


@pytest.mark.parametrize(
    ("markup", "office", "expected"),
    [
        pytest.param(
            f"<w:document {W}><w:body><w:p><w:r><w:t>Ji</w:t></w:r><w:r><w:t>n Pa</w:t></w:r>"
            "<w:r><w:t>rk</w:t></w:r></w:p></w:body></w:document>",
            True,
            TEXT,
            id="office-runs",
        ),
        pytest.param("<a><b>Jin</b> <c>Park</c></a>", False, TEXT, id="elements"),
        pytest.param("<a>&#x4A;in&#32;P&#97;rk &amp; co</a>", False, TEXT, id="character-references"),
        pytest.param(
            "<rss><channel><link>x</link>Jin Park</channel></rss>", False, TEXT, id="link-has-content"
        ),
        pytest.param("<r><br>Jin Park</br></r>", False, TEXT, id="br-has-content"),
        pytest.param("<r><title>Jin <b>Park</b></title></r>", False, TEXT, id="title-holds-markup"),
        pytest.param("<r><plaintext>x</plaintext>Jin Park</r>", False, TEXT, id="plaintext-ends"),
        pytest.param("<r><p><p>Jin</p> Park</p></r>", False, TEXT, id="nested-p"),
        pytest.param("<html><body>x</body></html><html>Jin Park</html>", False, TEXT, id="second-html"),
        pytest.param("<a>x</a><b>Jin Park</b>", False, TEXT, id="after-the-root-element"),
        pytest.param("<a>x</a>Jin Park", False, TEXT, id="text-after-the-root-element"),
        pytest.param("<a>Jin <b>Park</a>", False, TEXT, id="unclosed-element"),
        pytest.param("<a>" * 5000 + NAME + "</a>" * 5000, False, TEXT, id="deeply-nested"),
        pytest.param("<a>" * 5000 + NAME, False, TEXT, id="deeply-nested-unclosed"),
        pytest.param('<a who="Jin Park">x</a>', False, HIDDEN, id="attribute"),
        pytest.param('<a xmlns:j="urn:Jin%20Park">x</a>', False, HIDDEN, id="namespace-declaration"),
        pytest.param('<a href="mailto:Jin%20Park@example.org">x</a>', False, HIDDEN, id="percent-encoded"),
        pytest.param("<a>x<!-- draft for Jin Park --></a>", False, HIDDEN, id="comment"),
        pytest.param("<a>x<![CDATA[<p>Jin Park</p>]]></a>", False, HIDDEN, id="cdata-holding-markup"),
        pytest.param("<?note Jin Park?><a>x</a>", False, HIDDEN, id="processing-instruction"),
        pytest.param('<!DOCTYPE a [<!ENTITY who "Jin Park">]><a>&who;</a>', False, HIDDEN, id="entity"),
        pytest.param(
            '<svg><style><![CDATA[ text::after { content: "Jin Park" } ]]></style></svg>',
            True,
            HIDDEN,
            id="style-in-office",
        ),
        pytest.param(
            "<svg><script>var who = 'Jin Park';</script></svg>", True, HIDDEN, id="script-in-office"
        ),
        pytest.param("<svg><script>if (a<b) { who = 'Jin Park' }</script></svg>", False, TEXT, id="script"),
        pytest.param("<a>x<!-- Jin Park", False, HIDDEN, id="unclosed-comment"),
        pytest.param("<a>x<![CDATA[ Jin Park", False, HIDDEN, id="unclosed-cdata"),
        pytest.param("<a>x<?pi Jin Park", False, HIDDEN, id="unclosed-processing-instruction"),
        pytest.param("<a>x<script>Jin Park", False, TEXT, id="unclosed-script"),
        pytest.param('<a>x</a><b title="Jin Park', False, HIDDEN, id="unclosed-attribute-value"),
        pytest.param('<a title="x>Jin Park</a>', False, HIDDEN, id="unclosed-attribute-value-with-tags"),
        pytest.param("<a>x</a><b who=x Jin Park", False, HIDDEN, id="tag-cut-off-by-the-end"),
        pytest.param("<a>Ji\x00n Park</a>", False, TEXT, id="nul-inside-the-name"),
        pytest.param(
            '<?xml version="1.0" encoding="iso-8859-1"?><a>Jin Park é</a>', False, TEXT, id="xml-decl"
        ),
        pytest.param("<a>\udcff Jin Park</a>", False, TEXT, id="lone-surrogate"),
    ],
)
def test_a_name_is_read_where_it_was_written(markup: str, office: bool, expected: set[str]) -> None:
    rendered = render_xml(markup, office=office)

    assert rendered.reader == "libxml2"
    assert where(rendered) >= expected


def bomb(levels: int) -> str:
    """A "billion laughs": each entity is ten of the one before."""
    entities = ['<!ENTITY lol0 "lol">'] + [
        f'<!ENTITY lol{level} "{f"&lol{level - 1};" * 10}">' for level in range(1, levels + 1)
    ]
    return f'<?xml version="1.0"?><!DOCTYPE lolz [{"".join(entities)}]><lolz>&lol{levels};</lolz>'


@pytest.mark.parametrize("levels", [3, 9, 30])
def test_an_entity_bomb_is_not_expanded(levels: int) -> None:
    markup = bomb(levels) + f"<p>{NAME}</p>"

    rendered = render_xml(markup, office=False)

    assert rendered.reader == "libxml2"
    assert "lollol" not in rendered.text
    assert f"&lol{levels};" in rendered.text  # read as written, as html.parser read it
    assert len(rendered.text) + sum(len(text) for text in rendered.hidden) < 3 * len(markup)
    assert found(rendered.text)


def test_an_external_entity_is_not_fetched(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("marker-7f3a9c-not-to-be-read\n")
    uri = secret.as_uri()
    markup = (
        f'<?xml version="1.0"?><!DOCTYPE a SYSTEM "{uri}" [<!ENTITY xxe SYSTEM "{uri}">'
        f'<!ENTITY % remote SYSTEM "{uri}"> %remote;]><a>&xxe; {NAME}</a>'
    )

    for office in (False, True):
        rendered = render_xml(markup, office=office)

        assert rendered.reader == "libxml2"
        assert "marker-7f3a9c" not in rendered.text + "\n".join(rendered.hidden)
        assert found(rendered.text)


def test_a_long_unclosed_comment_is_read_by_libxml2() -> None:
    # html.parser searches the rest of the document for "-->" at every "<!--": 400 KB took a minute.
    markup = f"<a>{NAME}</a>" + "<!--" * 75_000 + f" {NAME} "  # 300 KB

    rendered = render_xml(markup, office=False)

    assert rendered.reader == "libxml2"
    assert found(rendered.text)
    assert found("\n".join(rendered.hidden))  # what follows the comment is read as the comment


@pytest.mark.parametrize(
    "markup",
    [
        pytest.param("<![CDATA[" * 30_000 + NAME, id="unclosed-cdata"),
        pytest.param("<?" * 100_000 + NAME, id="unclosed-processing-instructions"),
        pytest.param("<!DOCTYPE" * 30_000 + NAME, id="unclosed-doctypes"),
        pytest.param("<script>" * 30_000 + NAME, id="unclosed-script"),
        pytest.param('<a b="' * 30_000 + NAME, id="unclosed-attribute-values"),
    ],
)
def test_other_unclosed_constructs_are_read_by_libxml2(markup: str) -> None:
    rendered = render_xml(markup, office=False)

    assert rendered.reader == "libxml2"
    assert found(rendered.text + "\n".join(rendered.hidden))


def test_the_reference_reading_reads_what_the_compiled_one_cannot(monkeypatch: pytest.MonkeyPatch) -> None:
    markup = f"<w:p {W}><w:r><w:t>Ji</w:t></w:r><w:r><w:t>n Park</w:t></w:r></w:p><!-- x -->"

    def broken(markup: str, *, office: bool) -> Rendered:
        raise RuntimeError("libxml2 failed")

    monkeypatch.setattr(xml_module, "_compiled", broken)
    rendered = render_xml(markup, office=True)

    assert rendered == reference_xml(markup, office=True)
    assert rendered.reader == "html.parser"
    assert where(rendered) == TEXT


def test_readings_in_several_threads_at_once_are_each_whole() -> None:
    # Idle parsers are kept for reuse: two threads must never share one.
    documents = [f"<a><b>{NAME} {number}</b><c v='{number}'/></a>" for number in range(200)]

    with ThreadPoolExecutor(4) as pool:
        readings = list(pool.map(lambda markup: render_xml(markup, office=False), documents))

    for number, rendered in enumerate(readings):
        assert rendered.text.split() == [*NAME.split(), str(number)]
        assert rendered.hidden == [str(number)]


JIN = ProtectedIdentity("home-shelf", "r1", IdentityKind.NAME, NAME)


def test_a_text_xml_part_with_a_long_unclosed_comment_is_read() -> None:
    body = f"<report><who>{NAME}</who>" + "<!--" * 75_000 + f"{NAME}</report>"
    raw = render(
        Message(body=Multipart(parts=(Part(body="See the data."), Part(content_type="text/xml", body=body))))
    )

    parsed = parse_message(raw)

    found_in = {
        segment.where for segment in parsed.segments if IdentityMatcher.build((JIN,)).find(segment.text)
    }
    assert any("hidden" in place for place in found_in)
    assert any("hidden" not in place for place in found_in)
