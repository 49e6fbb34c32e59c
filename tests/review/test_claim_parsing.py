"""Reading a claim or an approval with a comment out of a reply, however the client quoted or wrapped it."""

from __future__ import annotations

import textwrap

from hypothesis import given
from hypothesis import strategies as st

from gateway.review.reply_parsing import parse_command

CASINGS = st.sampled_from(["claim", "Claim", "CLAIM", "cLaIm"])
PUNCTUATION = st.sampled_from(["", ".", "!", ":", ","])
QUOTED = st.lists(st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=30), max_size=4)
LINE_ENDS = st.sampled_from(["\n", "\r\n", "\r"])
WORDS = st.lists(st.from_regex(r"[A-Za-z]{1,12}", fullmatch=True), min_size=1, max_size=30)


def quoted(lines: list[str], end: str) -> str:
    return end.join(["On Mon, Ben Ink wrote:", *(f"> {line}" for line in lines)])


@given(CASINGS, PUNCTUATION, QUOTED, LINE_ENDS, st.sampled_from(["", "\ufeff", "  ", "\n\n"]))
def test_a_claim_is_read_whatever_the_casing_quoting_and_line_ends(
    word: str, mark: str, below: list[str], end: str, lead: str
) -> None:
    text = f"{lead}{word}{mark}{end}{end}{quoted(below, end)}"
    command = parse_command(text)
    assert command is not None and (command.command, command.reason) == ("claim", "")


PLAIN = st.text(st.characters(blacklist_characters="\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"), max_size=40)
NEAR_CLAIMS = st.builds(
    "".join, st.lists(st.one_of(PLAIN, st.sampled_from(["claim", "Claims", "> claim", "\n", " ", "reclaim"])))
)


@given(NEAR_CLAIMS)
def test_a_reply_is_a_claim_only_when_its_first_written_word_is_claim(text: str) -> None:
    command = parse_command(text)
    first = next((line.strip().lstrip("\ufeff") for line in text.splitlines() if line.strip()), "")
    word = first.split(" ")[0].lower().rstrip(".!:,;") if first else ""
    is_quoted = first.startswith(">")
    assert (command is not None and command.command == "claim") == (word == "claim" and not is_quoted)


@given(
    WORDS,
    st.integers(min_value=15, max_value=80),
    st.sampled_from(["approve", "Approve", "APPROVED"]),
    LINE_ENDS,
)
def test_an_approval_comment_is_read_the_same_however_the_client_wraps_it(
    words: list[str], width: int, keyword: str, end: str
) -> None:
    comment = " ".join(words)
    wrapped = end.join(textwrap.wrap(f"{keyword} {comment}", width=width, break_long_words=False))
    reply = f"{wrapped}{end}{end}-- {end}Ben{end}{quoted(['the request'], end)}"
    command = parse_command(reply)
    assert command is not None and (command.command, command.reason) == ("approve", comment)


def test_a_claim_ignores_the_words_after_it_and_approve_alone_has_no_comment() -> None:
    claim = parse_command("claim, I'll look at it tonight\n")
    assert claim is not None and (claim.command, claim.reason) == ("claim", "")
    approve = parse_command("approve\n\nThanks for checking\n")
    assert approve is not None and (approve.command, approve.reason) == ("approve", "")
