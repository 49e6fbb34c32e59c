"""XML to text: CPU per document of the two readings, on an Office document.xml and on hostile XML.

The policy reads every XML part (``gateway/policy/xml_text.py``): text/xml and the like, SVG,
and (in office mode) parts of office documents. This measures, per document, the reference
reading (the standard library's ``html.parser``, which read XML before) and the compiled one
(libxml2's tokenizer through lxml's parser-target interface, ``render_xml``), in both modes
(``office``: runs join within a paragraph; not: every tag separates words), on:

- ``document.xml``: a Word document body as Word writes it (paragraphs of runs with their
  properties, proofing marks, bookmarks, fields, a table), at 50 KB, 200 KB and 1 MB;
- with ``--hostile``: a document ending in unclosed ``<!--`` (what makes html.parser quadratic: it
  searches the rest of the document for "-->" at each of them) at 100, 200 and 400 KB. The
  reference reading takes about 90 s in all here; without ``--hostile`` only the compiled
  reading is measured on them.

    .venv/bin/python bench/xml_text.py
    .venv/bin/python bench/xml_text.py --hostile   # html.parser on the hostile documents too (~2 min)
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from html_text import cpu_ms
from policy import PROSE
from report import machine_description, markdown_table

from gateway.policy import xml_text

SIZES = {"50 KB": 50 * 1024, "200 KB": 200 * 1024, "1 MB": 1024 * 1024}
HOSTILE_SIZES = {"100 KB": 100 * 1024, "200 KB": 200 * 1024, "400 KB": 400 * 1024}
_W = (
    'xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main" '
    'xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships" '
    'xmlns:w14="http://schemas.microsoft.com/office/word/2010/wordml" '
    'xmlns:mc="http://schemas.openxmlformats.org/markup-compatibility/2006" mc:Ignorable="w14"'
)


def document_xml(size: int) -> str:
    """A Word document.xml of about ``size`` characters."""
    rng = random.Random(11)
    words = PROSE.split()
    out = [f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\r\n<w:document {_W}><w:body>']
    length = len(out[0])
    number = 0
    while length < size:
        number += 1
        runs = []
        for _ in range(rng.randrange(2, 9)):
            text = " ".join(rng.choice(words) for _ in range(rng.randrange(1, 12)))
            bold = "<w:b/><w:bCs/>" if rng.randrange(4) == 0 else ""
            runs.append(
                f'<w:r w:rsidRPr="00{rng.randrange(10**6):06X}"><w:rPr>{bold}<w:rFonts w:ascii="Calibri" '
                f'w:hAnsi="Calibri"/><w:sz w:val="22"/><w:lang w:val="en-GB"/></w:rPr>'
                f'<w:t xml:space="preserve">{text} </w:t></w:r>'
            )
            if rng.randrange(8) == 0:
                runs.append('<w:proofErr w:type="spellStart"/>')
        kind = rng.randrange(10)
        paragraph = (
            f'<w:p w14:paraId="{number:08X}" w:rsidR="00A1B2C3" w:rsidRDefault="00A1B2C3">'
            '<w:pPr><w:pStyle w:val="Normal"/><w:spacing w:after="160" w:line="259" w:lineRule="auto"/></w:pPr>'
            f'<w:bookmarkStart w:id="{number}" w:name="_Toc{number}"/>{"".join(runs)}'
            f'<w:bookmarkEnd w:id="{number}"/></w:p>'
        )
        if kind == 0:
            paragraph = (
                '<w:tbl><w:tblPr><w:tblW w:w="0" w:type="auto"/></w:tblPr><w:tr><w:tc><w:tcPr>'
                f'<w:tcW w:w="4508" w:type="dxa"/></w:tcPr>{paragraph}</w:tc></w:tr></w:tbl>'
            )
        elif kind == 1:
            paragraph += (
                '<w:p><w:r><w:fldChar w:fldCharType="begin"/></w:r><w:r><w:instrText xml:space="preserve"> '
                'HYPERLINK "https://example.org/guidelines" </w:instrText></w:r><w:r><w:fldChar '
                'w:fldCharType="end"/></w:r></w:p>'
            )
        out.append(paragraph)
        length += len(paragraph)
    out.append('<w:sectPr><w:pgSz w:w="11906" w:h="16838"/></w:sectPr></w:body></w:document>')
    return "".join(out)


def unclosed_comments(size: int) -> str:
    """A short data file, then unclosed "<!--" to ``size`` characters."""
    head = "<report><who>Member One</who><what>a note</what></report>"
    return head + "<!--" * ((size - len(head)) // 4)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--hostile", action="store_true", help="html.parser on the hostile documents too")
    parser.add_argument("--rounds", type=int, default=5, help="readings per point; the median is shown")
    arguments = parser.parse_args()
    print("\n".join([*machine_description(sys.argv), ""]))
    rows = []
    for office in (True, False):
        for label, size in SIZES.items():
            markup = document_xml(size)
            rounds = max(arguments.rounds, arguments.rounds * 200 * 1024 // size)
            reference = cpu_ms(partial(xml_text.reference_xml, office=office), markup, rounds)
            compiled = cpu_ms(partial(xml_text.render_xml, office=office), markup, rounds)
            mode = "office" if office else "every tag breaks"
            rows.append(
                [
                    f"document.xml {label} ({mode})",
                    f"{reference:.2f}",
                    f"{compiled:.2f} ({reference / compiled:.1f}×)",
                ]
            )
    print("CPU ms per document (median), and how many times faster than html.parser:\n")
    print("\n".join(markdown_table(["XML", "html.parser (reference)", "libxml2 (render_xml)"], rows)))
    rows = []
    for label, size in HOSTILE_SIZES.items():
        markup = unclosed_comments(size)
        compiled = cpu_ms(partial(xml_text.render_xml, office=False), markup, arguments.rounds)
        reference = "not measured"
        if arguments.hostile:
            started = time.process_time()  # one reading: a second would take as long again
            xml_text.reference_xml(markup, office=False)
            reference = f"{(time.process_time() - started) * 1000:.0f}"
        rows.append([f"unclosed `<!--`, {label}", reference, f"{compiled:.2f}"])
    print("\nHostile XML, CPU ms per document:\n")
    print("\n".join(markdown_table(["XML", "html.parser (reference)", "libxml2 (render_xml)"], rows)))


if __name__ == "__main__":
    main()
