"""Replies as sent: wrapped at 400 characters, cleaned to printable ASCII, rendered once."""

from __future__ import annotations

import textwrap

from hypothesis import given
from hypothesis import strategies as st

from gateway import replies
from gateway.replies import Reply, _clean


def reference(reply: Reply) -> str:
    """The rendering with textwrap for every line, as before the short-line shortcut."""
    wrapped: list[str] = []
    for line in reply.lines or ("",):
        wrapped.extend(textwrap.wrap(_clean(line), 400) or [""])
    status = f"{reply.status} " if reply.status else ""
    last = len(wrapped) - 1
    return "\r\n".join(
        f"{reply.code}{' ' if index == last else '-'}{status}{text}".rstrip()
        for index, text in enumerate(wrapped)
    )


lines = st.one_of(
    st.text(alphabet=" ab.-\t\r\né\0", max_size=20),
    st.text(alphabet=" abc-", min_size=390, max_size=900),
)


@given(st.lists(lines, max_size=3), st.sampled_from(["", "2.0.0", "5.7.1"]))
def test_rendering_matches_textwrap(texts: list[str], status: str) -> None:
    reply = Reply(550, status, tuple(texts))
    assert str(reply) == reference(reply)


def test_known_replies() -> None:
    assert str(replies.OK) == "250 2.0.0 Ok"
    assert (
        str(replies.queued("Q1", ["Cc added"])) == "250-2.0.0 Changed: Cc added\r\n250 2.0.0 Ok: queued as Q1"
    )
    assert str(replies.START_DATA) == "354 End data with <CR><LF>.<CR><LF>"
    assert str(Reply(250, "", ())) == "250"


def test_rendering_is_cached_and_equality_ignores_it() -> None:
    reply = replies.reply(451, "4.3.0", "try  later ")
    assert str(reply) is str(reply)
    assert reply == replies.reply(451, "4.3.0", "try  later ")
    assert hash(reply) == hash(replies.reply(451, "4.3.0", "try  later "))
