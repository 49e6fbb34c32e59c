"""The milter session without sockets: negotiation, one event per message, any split of the bytes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from kilter.protocol import Abort, Accept, Continue, Negotiate, Quarantine, UnexpectedMessage
from kilter.protocol.messages import ActionFlags, ProtocolFlags, Stage

from gateway.milter.session import (
    END_MACROS,
    SENDER_MACROS,
    WANTED_ACTIONS,
    MilterProtocolError,
    MilterSession,
    pack,
)
from tests.milter.mta import OFFER, conversation, responses

CONTENT = (
    b"From: Ada Quill <ada@example.org>\r\nTo: Olive Out <olive@example.net>,\r\n\tBo <bo@example.net>\r\n"
    b"Subject:  two spaces kept\r\nMessage-ID: <m1@example.org>\r\n\r\nHello,\r\n\r\nthe minutes.\r\n"
)


def run(session: MilterSession, data: bytes) -> tuple[list[object], list[object]]:
    replies, complete = session.receive(data)
    return responses(replies), list(complete)


def test_negotiation_asks_for_the_edits_the_macros_and_headers_as_sent() -> None:
    session = MilterSession(max_size=1 << 20)
    [answer], complete = run(session, pack(OFFER))
    assert complete == []
    assert isinstance(answer, Negotiate)
    assert answer.action_flags == WANTED_ACTIONS | ActionFlags.SETSYMLIST
    assert answer.protocol_flags == ProtocolFlags.HEADER_LEADING_SPACE
    assert answer.macros == {Stage.ENVELOPE_FROM: list(SENDER_MACROS), Stage.END_MESSAGE: list(END_MACROS)}


def test_an_mta_that_offers_no_quarantine_is_never_asked_for_it() -> None:
    session = MilterSession(max_size=1 << 20)
    offer = Negotiate(6, ActionFlags.ALL & ~ActionFlags.QUARANTINE, ProtocolFlags(0))
    [answer], _ = run(session, pack(offer))
    assert isinstance(answer, Negotiate)
    assert ActionFlags.QUARANTINE not in answer.action_flags
    run(session, conversation(CONTENT, "ada@example.org", ["olive@example.net"], negotiate=False))
    with pytest.raises(UnexpectedMessage):
        session.answer([Quarantine("hold"), Accept()])
    assert session.waiting  # the server can still answer with a temporary failure


def test_one_message_is_rebuilt_byte_for_byte_with_its_envelope_and_macros() -> None:
    session = MilterSession(max_size=1 << 20)
    data = conversation(
        CONTENT, "ada@example.org", ["olive@example.net", "bo@example.net"], queue_id="4F1A2B", login="ada"
    )
    answered, complete = run(session, data)
    [message] = complete
    envelope = message.envelope  # type: ignore[attr-defined]
    assert envelope.content == CONTENT
    assert envelope.mail_from == "ada@example.org"
    assert envelope.rcpt_tos == ("olive@example.net", "bo@example.net")
    assert envelope.queue_id == "4F1A2B"
    assert envelope.login == "ada"
    assert envelope.client_address == "192.0.2.7"
    assert isinstance(answered[0], Negotiate)
    # Every event but the end of the message was answered "continue"; that one waits for the decision.
    assert all(isinstance(reply, Continue) for reply in answered[1:])
    assert session.waiting
    [accept] = responses(session.answer([Accept()]))
    assert isinstance(accept, Accept)
    assert not session.waiting


@given(cuts=st.lists(st.integers(min_value=1, max_value=400), max_size=30))
def test_any_split_of_the_bytes_gives_the_same_message_and_replies(cuts: list[int]) -> None:
    data = conversation(CONTENT, "ada@example.org", ["olive@example.net"], queue_id="Q1", chunk=7)
    whole = MilterSession(max_size=1 << 20)
    expected_replies, expected = whole.receive(data)
    pieces, start = [], 0
    for cut in sorted(set(cuts)):
        pieces.append(data[start : start + cut])
        start += cut
    pieces.append(data[start:])
    split = MilterSession(max_size=1 << 20)
    replies, complete = b"", []
    for piece in pieces:
        out, done = split.receive(piece)
        replies += out
        complete += done
    assert replies == expected_replies
    assert complete == expected


def test_an_abort_forgets_the_message_in_progress() -> None:
    session = MilterSession(max_size=1 << 20)
    run(session, pack(OFFER))
    run(
        session,
        conversation(CONTENT, "ada@example.org", ["olive@example.net"], negotiate=False, complete=False),
    )
    run(session, pack(Abort()))
    _, complete = run(
        session, conversation(CONTENT, "bo@example.org", ["olive@example.net"], negotiate=False)
    )
    [message] = complete
    assert message.envelope.mail_from == "bo@example.org"  # type: ignore[attr-defined]
    assert message.envelope.content == CONTENT  # type: ignore[attr-defined]


def test_a_message_over_the_size_limit_is_marked_and_not_kept() -> None:
    session = MilterSession(max_size=100)
    _, [message] = run(
        session, conversation(CONTENT + b"x" * 200 + b"\r\n", "ada@example.org", ["o@example.net"])
    )
    assert message.envelope.oversized  # type: ignore[attr-defined]
    assert len(message.envelope.content) <= 100 + 200  # type: ignore[attr-defined]


def test_garbage_from_the_mta_closes_the_connection() -> None:
    session = MilterSession(max_size=1 << 20)
    with pytest.raises(MilterProtocolError):
        session.receive(b"\x00\x00\x00\x02Z!")  # an unknown command


def test_an_answer_without_a_waiting_message_is_refused() -> None:
    session = MilterSession(max_size=1 << 20)
    with pytest.raises(MilterProtocolError):
        session.answer([Accept()])
