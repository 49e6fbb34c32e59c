r"""RTF is decoded as a word processor shows it: escapes, Unicode, groups and hidden destinations."""

from __future__ import annotations

import pytest

from tests.policy import documents
from tests.policy.attached import names, read, unreadable


@pytest.mark.parametrize(
    ("source", "name"),
    [
        pytest.param("Report by Jin Park", "Jin Park", id="plain"),
        pytest.param(documents.rtf_hex("Jin Park"), "Jin Park", id="hex-escapes"),
        pytest.param(r"J\'69n P\'61rk", "Jin Park", id="some-hex-escapes"),
        pytest.param(documents.rtf_unicode("Jin Park"), "Jin Park", id="unicode-escapes"),
        pytest.param(
            r"\uc0 " + documents.rtf_unicode("Анна Петрова").replace("?", ""), "Анна Петрова", id="uc0"
        ),
        pytest.param(r"{\b J}i{\i n} {\ul Pa}rk", "Jin Park", id="groups-split-the-name"),
        pytest.param(r"Ji\-n Park", "Jin Park", id="soft-hyphen"),
        pytest.param(r"{\*\atnauthor Jin Park}{\*\annotation a comment}", "Jin Park", id="comment-author"),
        pytest.param(r"{\info{\author Mei Li}{\title x}}body", "Mei Li", id="document-author"),
        pytest.param(r"{\header Jin Park}body", "Jin Park", id="header"),
        pytest.param(r"{\v Jin Park} shown", "Jin Park", id="hidden-text"),
        pytest.param(
            r'{\field{\*\fldinst HYPERLINK "mailto:x"}{\fldrslt Jin Park}}', "Jin Park", id="field-result"
        ),
        pytest.param(
            r"{\fonttbl{\f1\fcharset204 Arial Cyr;}}\f1 \'c0\'ed\'ed\'e0 \'cf\'e5\'f2\'f0\'ee\'e2\'e0",
            "Анна Петрова",
            id="cyrillic-font-charset",
        ),
        pytest.param(r"Jin{\*\bkmkstart x} Park", "Jin Park", id="bookmark-inside-the-name"),
    ],
)
def test_rtf_is_decoded(source: str, name: str) -> None:
    assert names(read(documents.rtf(source), "application/rtf", "letter.rtf")) == {name}


def test_font_and_colour_tables_are_not_text() -> None:
    data = b"{\\rtf1{\\fonttbl{\\f0 Jin Park;}}{\\colortbl;\\red0\\green0\\blue0;}body\\par}"
    assert names(read(data)) == set()


def test_binary_data_is_skipped() -> None:
    data = b"{\\rtf1 before \\bin8 Jin Park after\\par}"
    parsed = read(data)
    assert names(parsed) == set()
    assert any("before" in s.text and "after" in s.text for s in parsed.segments)


def test_pictures_are_media_and_objects_uninspectable() -> None:
    data = documents.rtf(r"{\pict\pngblip 89504e47}{\object{\*\objdata 0102}}text")
    assert sorted(unreadable(read(data))) == [
        ("binary", "an object embedded in an RTF document"),
        ("media", "pictures inside an RTF document are not read"),
    ]


def test_a_damaged_rtf_still_reads_what_it_can() -> None:
    assert names(read(b"{\\rtf1 {{{ Jin Park")) == {"Jin Park"}
