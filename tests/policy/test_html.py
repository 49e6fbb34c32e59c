"""HTML to text: where a name written in hostile, broken or unusual HTML ends up.

Each case writes the name somewhere a sender can put it and says where the reading must have it:
the visible text, the body text (what a reader sees first: not the window title), or the hidden
text (attributes, comments, script, CSS). tests/policy/test_html_properties.py compares the
compiled reading with the reference reading on generated documents; these are the cases a
generator would rarely write.
"""

from __future__ import annotations

import base64
from concurrent.futures import ThreadPoolExecutor

import pytest

import gateway.policy.html as html_module
from gateway.policy.html import Rendered, reference_html, render_html
from gateway.policy.normalize import normalize

NAME = "Jin Park"
DEPTH = 5000  # beyond libxml2's tree depth limit (256, or 2048 with huge_tree)


def found(text: str) -> bool:
    return normalize(NAME) in normalize(text)


def where(rendered: Rendered) -> set[str]:
    places = {"text"} if found(rendered.text) else set()
    if found(rendered.body_text):
        places.add("body")
    if found("\n".join(rendered.hidden)):
        places.add("hidden")
    return places


VISIBLE = {"text", "body"}
TITLE = {"text"}
HIDDEN = {"hidden"}


@pytest.mark.parametrize(
    ("markup", "expected"),
    [
        pytest.param("<div>" * DEPTH + NAME + "</div>" * DEPTH, VISIBLE, id="deeply-nested"),
        pytest.param("<div>" * DEPTH + "x" + "</div>" * DEPTH + NAME, VISIBLE, id="after-deep-nesting"),
        pytest.param("<b><i>" * DEPTH + NAME, VISIBLE, id="deeply-nested-unclosed"),
        pytest.param("<p>Jin <b>Park", VISIBLE, id="unclosed-tags"),
        pytest.param("<p>J<b>in</b> <span>Pa</span>r<font>k</font></p>", VISIBLE, id="split-by-inline-tags"),
        pytest.param("<p>J<!-- x -->in P<!---->ark</p>", VISIBLE, id="split-by-comments"),
        pytest.param("<p>&#x4A;in&nbsp;&#80;ar&#x6b;</p>", VISIBLE, id="character-references"),
        pytest.param("<p>Jin&nbspPark</p>", VISIBLE, id="reference-without-semicolon"),
        pytest.param('<div style="display:none">Jin Park</div>', VISIBLE, id="display-none"),
        pytest.param('<span style="visibility:hidden">Jin</span> Park', VISIBLE, id="visibility-hidden"),
        pytest.param('<p>Jin <span style="font-size:0">Pa</span>rk</p>', VISIBLE, id="font-size-zero"),
        pytest.param('<p style="color:#fff;background:#fff">Jin Park</p>', VISIBLE, id="white-on-white"),
        pytest.param('<font color="white">Jin Park</font>', VISIBLE, id="font-color"),
        pytest.param("<p>a</p></body></html><p>Jin Park</p>", VISIBLE, id="after-the-end-of-html"),
        pytest.param("<frameset><frame src=x></frameset>Jin Park", VISIBLE, id="frameset"),
        pytest.param("<table><tr>Jin Park<td>x</td></tr></table>", VISIBLE, id="text-in-a-table-row"),
        pytest.param("<noscript>Jin <b>Park</b></noscript>", VISIBLE, id="noscript"),
        pytest.param("<textarea>J<b>in</b> Park</textarea>", VISIBLE, id="textarea-with-tags"),
        pytest.param("<xmp>J<b>in</b>&nbsp;Park</xmp>", VISIBLE, id="xmp"),
        pytest.param("<iframe>Jin <i>Park</i></iframe>", VISIBLE, id="iframe-content"),
        pytest.param("<noembed>Jin &amp; x</noembed><noframes>Jin Park</noframes>", VISIBLE, id="noframes"),
        pytest.param("<plaintext><p>J<b>in</b> Park</p>", VISIBLE, id="plaintext"),
        pytest.param("<svg><title>Jin Park</title></svg>", TITLE, id="svg-title"),
        pytest.param("<math><mi>Jin</mi> <mtext>Park</mtext></math>", VISIBLE, id="mathml"),
        pytest.param("<head><title>Jin Park</title></head><body>x</body>", TITLE, id="title"),
        pytest.param("<title>J<b>in</b> Park</title><p>x", TITLE, id="title-with-tags"),
        pytest.param("<title>Re: &lt;Jin Park&gt;</title><p>x", HIDDEN, id="title-with-escaped-brackets"),
        pytest.param("<script>x</script><noscript>Jin Park</noscript>", VISIBLE, id="after-a-leading-script"),
        pytest.param('<img alt="Jin Park" src="cid:1">', HIDDEN, id="alt"),
        pytest.param('<a title="Jin&#32;Park" href="#">x</a>', HIDDEN, id="title-attribute"),
        pytest.param('<a href="https://example.net/?who=Jin%20Park">x</a>', HIDDEN, id="percent-encoded"),
        pytest.param('<a href="mailto:Jin%20Park%20%3cjp@example.org%3e">x</a>', HIDDEN, id="mailto"),
        pytest.param(
            '<img src="data:text/plain;base64,' + base64.b64encode(NAME.encode()).decode() + '">',
            HIDDEN,
            id="text-data-uri",
        ),
        pytest.param("<p>hi</p><!-- draft for Jin Park -->", HIDDEN, id="comment"),
        pytest.param("<p>hi</p><!-- draft for Jin Park", HIDDEN, id="unclosed-comment"),
        pytest.param("<p>hi<![CDATA[ Jin Park ]]></p>", HIDDEN, id="cdata"),
        pytest.param("<?note Jin Park ?><p>hi</p>", HIDDEN, id="processing-instruction"),
        pytest.param("<!DOCTYPE html><p>x</p><!DOCTYPE Jin Park>", HIDDEN, id="doctype"),
        pytest.param("<script>var who = 'Jin Park';</script>", HIDDEN, id="script"),
        pytest.param("<script>var who = '" + "x" * 70_000 + " Jin Park';</script>", HIDDEN, id="long-script"),
        pytest.param('<style>p::after { content: "Jin Park" }</style>', HIDDEN, id="css-string"),
        pytest.param("<style>/* Jin Park */ p {}</style>", HIDDEN, id="css-comment"),
        pytest.param("<p style=\"font-family: 'Jin Park'\">x</p>", HIDDEN, id="css-in-style-attribute"),
        pytest.param("<template><p>J<b>in</b> Park</p></template>", HIDDEN, id="template"),
        pytest.param('<body><p>x</p><body title="Jin Park">', HIDDEN, id="second-body-tag"),
        pytest.param('<html><p>x</p><html lang="en" title="Jin Park">', HIDDEN, id="second-html-tag"),
        pytest.param("<p>Ji\x00n Park</p>", VISIBLE, id="nul-inside-the-name"),
        pytest.param(
            '<?xml version="1.0" encoding="iso-8859-1"?><p>Jin Park</p>', VISIBLE, id="xml-declaration"
        ),
        pytest.param('<meta charset="iso-8859-1"><p>Jin Park é</p>', VISIBLE, id="meta-charset"),
        pytest.param("<p>\udcff Jin Park</p>", VISIBLE, id="lone-surrogate"),
        pytest.param("<p>a < b Jin Park <3 <<<</p>", VISIBLE, id="stray-less-than"),
        pytest.param("</div></p></x>Jin</ x> Park", VISIBLE, id="stray-end-tags"),
    ],
)
def test_a_name_is_read_where_it_was_written(markup: str, expected: set[str]) -> None:
    assert where(render_html(markup)) >= expected


def test_the_reference_reading_reads_what_the_compiled_one_cannot(monkeypatch: pytest.MonkeyPatch) -> None:
    markup = "<p>J<b>in</b> Park</p><!-- x -->"

    def broken(markup: str, *, reread: bool = True) -> Rendered:
        raise RuntimeError("libxml2 failed")

    monkeypatch.setattr(html_module, "_compiled", broken)

    assert render_html(markup) == reference_html(markup)
    assert where(render_html(markup)) == VISIBLE


@pytest.mark.parametrize(
    ("markup", "text"),
    [
        pytest.param("reject spam<br>and more", "reject spam\nand more", id="br-breaks-once"),
        pytest.param("<div>approve</div><div>ok</div>", "\napprove\n\nok\n", id="blocks"),
        pytest.param("a<span style='display:block'>b</span>c", "a\nbc", id="detached-inline"),
        pytest.param("J<b>in</b>", "Jin", id="inline-joins"),
    ],
)
def test_line_breaks_come_from_blocks_as_in_the_reference_reading(markup: str, text: str) -> None:
    # A reply's command and reason end at a blank line: the line breaks of the reference reading
    # (what review/reply_parsing was written against) are kept, up to the html/body libxml2 adds.
    assert render_html(markup).body_text.strip("\n") == text.strip("\n")
    assert reference_html(markup).body_text.strip("\n") == text.strip("\n")


def test_readings_in_several_threads_at_once_are_each_whole() -> None:
    # render_html keeps idle parsers for reuse: two threads must never share one, and a parser
    # made in one thread must read correctly in another.
    documents = [
        f"<p>J<b>in</b> Park {number}</p><!-- {number} -->" + "<div>x</div>" * number for number in range(40)
    ]
    expected = [render_html(document) for document in documents]

    with ThreadPoolExecutor(max_workers=8) as pool:
        readings = list(pool.map(render_html, documents * 25))

    assert readings == expected * 25
