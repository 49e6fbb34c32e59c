"""Reading a decision out of a reply: only the first written line counts, never quoted text."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.review.reply_parsing import parse_command, reply_text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("approve\n", ("approve", ""), id="plain"),
        pytest.param("  APPROVED!\n\n> reject\n", ("approve", ""), id="case-and-punctuation"),
        pytest.param("\n\nreject: names a witness\n", ("reject", "names a witness"), id="reject-reason"),
        pytest.param(
            "reject\n\nToo many details\nabout the venue\n\n-- \nBen",
            ("reject", "Too many details about the venue"),
            id="reason-below",
        ),
        pytest.param("Cancel\n", ("cancel", ""), id="cancel"),
        pytest.param("> approve\n", None, id="only-quoted"),
        pytest.param("On Mon, Ben wrote:\n> approve\n", None, id="attribution-first"),
        pytest.param("I think we should approve\n", None, id="not-first-word"),
        pytest.param("-- \napprove\n", None, id="signature-only"),
        pytest.param("", None, id="empty"),
    ],
)
def test_parse_command(text: str, expected: tuple[str, str] | None) -> None:
    command = parse_command(text)
    assert (None if command is None else (command.command, command.reason)) == expected


def test_reply_text_prefers_plain_and_renders_html() -> None:
    html = b"Content-Type: text/html; charset=utf-8\r\n\r\n<div>approve</div><blockquote>x</blockquote>\r\n"
    assert reply_text(html).strip().startswith("approve")


_LINE = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"), max_size=40)


@given(first=_LINE, rest=st.lists(_LINE, max_size=4))
def test_a_quoted_first_line_is_never_read_as_a_command(first: str, rest: list[str]) -> None:
    assert parse_command("\n".join(["> " + first, *rest])) is None


@given(
    word=st.sampled_from(["approve", "Approved", "APPROVE!", "approve."]),
    padding=st.lists(st.sampled_from(["", " ", "\t"]), max_size=3),
    below=st.lists(_LINE, max_size=3),
)
def test_approve_on_the_first_written_line_is_read_whatever_follows(
    word: str, padding: list[str], below: list[str]
) -> None:
    command = parse_command("\n".join([*padding, word, *below]))
    assert command is not None and command.command == "approve"


@given(reason=st.text(st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp")), max_size=3000))
def test_a_rejection_reason_is_one_line_of_at_most_1000_characters(reason: str) -> None:
    command = parse_command(f"reject {reason}")
    assert command is not None and command.command == "reject"
    assert len(command.reason) <= 1000 and "\n" not in command.reason
