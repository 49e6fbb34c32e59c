"""HTML to text: CPU per document of each way to read HTML, by size, on plain and on tag-dense mail.

The policy reads every HTML part (``gateway/policy/html.py``). This measures, per document, the
reference reading (the standard library's ``html.parser``, a tokenizer written in Python) and the
compiled one (libxml2's tokenizer through lxml's parser-target interface), on two kinds of HTML:

- ``plain``: the HTML alternative of ``bench/policy.py``'s message (``<p>`` lines of prose);
- ``dense``: HTML as Outlook and newsletters write it (styled spans, layout tables, entities,
  comments, hidden preheaders, links and images with ``alt``), about ten times the tags per KB;

at 8 KB, 200 KB, 1 MB and 5 MB. With ``--candidates``, the parsers that were measured when choosing
are measured too, each feeding the same collector as the compiled reading (so the Python side is
the same and only the parser differs): lexbor through ``selectolax`` and ``resiliparse`` (HTML5
tree construction, then a walk of the tree), and lxml building a tree (``iterwalk``). They are not
dependencies: ``pip install selectolax resiliparse`` first. With ``--hostile``, documents written to
make a parser slow (deep nesting, unclosed comments and tags, a run of "<").

    .venv/bin/python bench/html_text.py
    .venv/bin/python bench/html_text.py --candidates --rounds 5
    .venv/bin/python bench/html_text.py --hostile   # also deep nesting, unclosed comments, ...
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from policy import PROSE
from report import machine_description, markdown_table

from gateway.policy import html

SIZES = {"8 KB": 8 * 1024, "200 KB": 200 * 1024, "1 MB": 1024 * 1024, "5 MB": 5 * 1024 * 1024}


def plain(size: int) -> str:
    """The HTML alternative of bench/policy.py's message."""
    paragraphs = (PROSE * (size // (3 * len(PROSE)) + 1))[: size // 3]
    lines = textwrap.wrap(paragraphs, 200)
    return "<html><body>" + "".join(f"<p>{line}</p>\r\n" for line in lines) + "</body></html>"


def dense(size: int) -> str:
    """Tag-dense HTML as Outlook and newsletters write it."""
    rng = random.Random(7)
    words = PROSE.split()
    out = [
        '<html><head><meta http-equiv="Content-Type" content="text/html; charset=utf-8"><style><!-- '
        'p.MsoNormal {margin:0cm; font-size:11.0pt; font-family:"Calibri",sans-serif;} --></style>'
        '<!--[if gte mso 9]><xml><o:shapedefaults v:ext="edit" spidmax="1026" /></xml><![endif]-->'
        '</head><body lang="EN-GB" link="#0563C1"><div class="WordSection1">'
    ]
    length = len(out[0])
    while length < size:
        text = " ".join(rng.choice(words) for _ in range(rng.randrange(4, 25)))
        kind = rng.randrange(6)
        if kind == 0:
            chunk = f'<p class="MsoNormal"><span style="font-size:11.0pt;color:#1F497D">{text}<o:p></o:p></span></p>'
        elif kind == 1:
            chunk = (
                '<table border="0" cellspacing="0" cellpadding="0"><tr><td width="200" style="padding:0cm 5.4pt">'
                f'<p class="MsoNormal"><b>{text[:20]}</b>&nbsp;{text[20:]}</p></td></tr></table>'
            )
        elif kind == 2:
            chunk = (
                f'<div style="display:none;max-height:0;overflow:hidden">{text}</div>'
                f'<a href="https://example.net/t?u={rng.randrange(10**9)}&amp;m=x%20y" title="{text[:15]}">'
                f"{text[:30]}</a><br>"
            )
        elif kind == 3:
            chunk = (
                f"<p>{text} &amp; &#8217;quoted&#8217; &eacute;t&eacute; "
                f'<img src="cid:image{rng.randrange(9)}.png" alt="{text[:12]}" width="10"></p><!-- c -->'
            )
        elif kind == 4:
            chunk = (
                '<blockquote style="border-left:solid #CCCCCC 1.0pt;padding:0cm 0cm 0cm 6.0pt"><div>'
                f'<span style="font-size:0">{text[:10]}</span><span>{text}</span></div></blockquote>'
            )
        else:
            chunk = f'<ul><li class="MsoListParagraph">{text}</li><li><font color="#ffffff">{text[:25]}</font></li></ul>'
        out.append(chunk + "\r\n")
        length += len(chunk) + 2
    out.append("</div></body></html>")
    return "".join(out)


def collected(walk: Callable[[str, Any], None]) -> Callable[[str], html.Rendered]:
    """A reading: ``walk`` feeds the compiled reading's collector from some other parser."""

    def read(markup: str) -> html.Rendered:
        collector = html._Collector()
        collector.reset(head="<head" in markup, reread=False)
        walk(markup, collector)
        collector.close()
        return collector.rendered([])

    return read


def lxml_tree(markup: str, collector: Any) -> None:
    from lxml import etree

    root = etree.fromstring(markup.encode(), etree.HTMLParser(encoding="utf-8", huge_tree=True))
    for event, element in etree.iterwalk(root, events=("start", "end")):
        if not isinstance(element.tag, str):
            collector.comment(element.text or "")
            if element.tail:
                collector.data(element.tail)
        elif event == "start":
            collector.start(element.tag, dict(element.attrib))
            if element.text:
                collector.data(element.text)
        else:
            collector.end(element.tag)
            if element.tail:
                collector.data(element.tail)


def lexbor_tree(markup: str, collector: Any) -> None:
    from selectolax.lexbor import LexborHTMLParser

    stack = [(LexborHTMLParser(markup).root, False)]
    while stack:
        node, leaving = stack.pop()
        if leaving:
            collector.end(node.tag)
        elif node.tag == "-text":
            collector.data(node.text_content or "")
        elif node.tag == "-comment":
            collector.comment(node.comment_content or "")
        else:
            collector.start(node.tag, {name: value or "" for name, value in node.attributes.items()})
            stack.append((node, True))
            stack.extend((child, False) for child in reversed(list(node.iter(include_text=True))))


def resiliparse_tree(markup: str, collector: Any) -> None:
    from resiliparse.parse import html as rp

    def enter(context: Any) -> None:
        node = context.node
        if node.type == rp.NodeType.ELEMENT:
            collector.start(node.tag, {name: node.getattr(name) or "" for name in node.attrs})
        elif node.type == rp.NodeType.TEXT:
            collector.data(node.text)
        elif node.type == rp.NodeType.COMMENT:
            collector.comment(node.text)

    def leave(context: Any) -> None:
        if context.node.type == rp.NodeType.ELEMENT:
            collector.end(context.node.tag)

    rp.traverse_dom(rp.HTMLTree.parse(markup).document, enter, leave)


HOSTILE = {
    "50,000 nested <div>": "<div>" * 50_000 + "x",
    "50,000 unclosed <b>": "<b>" * 50_000 + "x",
    "1,000,000 '<'": "<" * 1_000_000,
    "20,000 unclosed '<!--'": "<!--" * 20_000,
    "one tag, 100,000 attributes": "<p " + " ".join(f"a{n}=x" for n in range(100_000)) + ">",
    "100,000 stray end tags": "</div>" * 100_000,
    "30,000 unclosed <font> with text": "<font color=red>x" * 30_000,
}


def cpu_ms(read: Callable[[str], object], markup: str, rounds: int) -> float:
    """Median CPU milliseconds of one reading (process time: waiting for a busy core is left out)."""
    read(markup)
    times = []
    for _ in range(rounds):
        started = time.process_time()
        read(markup)
        times.append((time.process_time() - started) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--candidates", action="store_true", help="also the parsers measured when choosing")
    parser.add_argument("--hostile", action="store_true", help="also hostile documents (a minute more)")
    parser.add_argument("--rounds", type=int, default=3, help="readings per point; the median is shown")
    arguments = parser.parse_args()
    readings: dict[str, Callable[[str], object]] = {
        "html.parser (reference)": html.reference_html,
        "libxml2 events (render_html)": html.render_html,
    }
    if arguments.candidates:
        readings["lxml tree + walk"] = collected(lxml_tree)
        readings["lexbor tree + walk (selectolax)"] = collected(lexbor_tree)
        readings["lexbor tree + walk (resiliparse)"] = collected(resiliparse_tree)
    rows = []
    for kind, make in (("plain", plain), ("dense", dense)):
        for label, size in SIZES.items():
            markup = make(size)
            rounds = max(arguments.rounds, arguments.rounds * 200 * 1024 // size)
            figures = {name: cpu_ms(read, markup, rounds) for name, read in readings.items()}
            reference = figures["html.parser (reference)"]
            rows.append(
                [f"{kind} {label}", *(f"{ms:.2f} ({reference / ms:.1f}×)" for ms in figures.values())]
            )
    print("\n".join([*machine_description(sys.argv), ""]))
    print("CPU ms per document (median), and how many times faster than html.parser:\n")
    print("\n".join(markdown_table(["HTML", *readings], rows)))
    if arguments.hostile:
        rows = []
        for label, markup in HOSTILE.items():
            reference = cpu_ms(html.reference_html, markup, 1)
            compiled = cpu_ms(html.render_html, markup, 1)
            rows.append([f"{label} ({len(markup) // 1024} KB)", f"{reference:.1f}", f"{compiled:.1f}"])
        print("\nHostile HTML, CPU ms per document (one reading):\n")
        print(
            "\n".join(
                markdown_table(["HTML", "html.parser (reference)", "libxml2 events (render_html)"], rows)
            )
        )


if __name__ == "__main__":
    main()
