"""SMTP smuggling: only <CRLF>.<CRLF> ends DATA, so one submission can never turn into two messages.

Each attack hides a second transaction (to a victim, in a From the attacker may not use) behind an
end-of-data look-alike. The gateway must answer the whole DATA once, refuse it (the look-alikes carry
bare CR or LF), store nothing, and stay in step with the client.
"""

# Fixtures are imported from smtp_fixtures (tests/relay/conftest.py is not ours); pytest passes them
# in as arguments of the same name.
# ruff: noqa: F811

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.intake.dataread import DataReader, has_long_line
from tests.relay.smtp_fixtures import (  # noqa: F401
    ALICE,
    OUTSIDER,
    RawClient,
    RunningGateway,
    ca,
    client_tls,
    gateway,
    message,
    raw_clients,
    server_tls,
    start_gateway,
)

Connect = Callable[..., Awaitable[RawClient]]
VICTIM = "victim@example.net"
SMUGGLED = (
    f"MAIL FROM:<{ALICE}>\r\nRCPT TO:<{VICTIM}>\r\nDATA\r\n"
    f"From: ceo@example.org\r\nTo: {VICTIM}\r\nSubject: smuggled\r\n\r\nsmuggled body\r\n"
).encode()

END_OF_DATA_LOOKALIKES = [
    pytest.param(b"\n.\n", id="LF.LF"),
    pytest.param(b"\n.\r\n", id="LF.CRLF"),
    pytest.param(b"\r.\r\n", id="CR.CRLF"),
    pytest.param(b"\r\n.\n", id="CRLF.LF"),
    pytest.param(b"\r\n.\r", id="CRLF.CR"),
    pytest.param(b"\r.\n", id="CR.LF"),
    pytest.param(b"\r\n\x00.\r\n", id="CRLF-NUL.CRLF"),
]


async def open_session(raw_clients: Connect, gateway: RunningGateway, implicit_tls: bool) -> RawClient:
    if implicit_tls:
        client = await raw_clients(gateway.submissions, gateway.client_tls)
        await client.login(None)
    else:
        client = await raw_clients(gateway.submission)
        await client.login(gateway.client_tls)
    return client


@pytest.mark.parametrize("implicit_tls", [False, True], ids=["starttls", "implicit-tls"])
@pytest.mark.parametrize("lookalike", END_OF_DATA_LOOKALIKES)
async def test_end_of_data_lookalike_never_splits_a_submission(
    gateway: RunningGateway, raw_clients: Connect, lookalike: bytes, implicit_tls: bool
) -> None:
    client = await open_session(raw_clients, gateway, implicit_tls)
    assert (await client.command(f"MAIL FROM:<{ALICE}>")).startswith("250 ")
    assert (await client.command(f"RCPT TO:<{OUTSIDER}>")).startswith("250 ")
    assert (await client.command("DATA")).startswith("354 ")
    await client.send(message(body="first part") + lookalike + SMUGGLED + b"\r\n.\r\n")
    reply = await client.reply()
    assert reply.startswith("550 5.5.2 "), reply
    # Exactly one reply for the whole DATA: the next reply is the NOOP's, not a smuggled command's.
    assert await client.command("NOOP") == "250 2.0.0 Ok"
    assert gateway.stored() == []


async def test_terminator_split_across_network_writes(gateway: RunningGateway, raw_clients: Connect) -> None:
    client = await open_session(raw_clients, gateway, implicit_tls=True)
    await client.command(f"MAIL FROM:<{ALICE}>")
    await client.command(f"RCPT TO:<{OUTSIDER}>")
    await client.command("DATA")
    content = message(body="line\r\n..dot-stuffed\r\n")
    await client.send(content[:-2])
    for byte in b"\r\n.\r\n":
        await client.send(bytes([byte]))
        await asyncio.sleep(0.01)
    assert (await client.reply()).startswith("250 2.0.0 Ok: queued as ")
    (stored,) = gateway.stored()
    assert stored.content.endswith(content.replace(b"..dot", b".dot"))


async def test_a_real_terminator_inside_data_ends_the_message_and_the_rest_are_commands(
    gateway: RunningGateway, raw_clients: Connect
) -> None:
    # The control case: a client that really ends DATA gets two transactions checked one by one, and the
    # second one is still bound by the sender checks (its From is not Alice's).
    client = await open_session(raw_clients, gateway, implicit_tls=False)
    await client.command(f"MAIL FROM:<{ALICE}>")
    await client.command(f"RCPT TO:<{OUTSIDER}>")
    await client.command("DATA")
    await client.send(message(body="first part") + b"\r\n.\r\n" + SMUGGLED + b"\r\n.\r\n")
    replies = [await client.reply() for _ in range(5)]
    assert [reply[:3] for reply in replies] == ["250", "250", "250", "354", "550"]
    assert replies[4].startswith("550 5.7.1 Message refused: From: <ceo@example.org>")
    assert len(gateway.stored()) == 1


# --- The DATA reader on its own (sans I/O) -------------------------------------------------------------


def reference(stream: bytes) -> tuple[bytes, bytes] | None:
    """(content, rest) by the RFC 5321 definition, or None if the data has not ended."""
    virtual = b"\r\n" + stream
    end = virtual.find(b"\r\n.\r\n")
    if end < 0:
        return None
    raw = virtual[2 : end + 2]
    lines = raw.split(b"\r\n")
    content = b"\r\n".join(line[1:] if line.startswith(b".") else line for line in lines)
    return content, virtual[end + 5 :]


def read_in_chunks(stream: bytes, cuts: list[int], max_size: int = 10**6) -> tuple[DataReader, bytes] | None:
    reader = DataReader(max_size)
    buffer = bytearray()
    edges = sorted({cut % (len(stream) + 1) for cut in cuts} | {len(stream)})
    start = 0
    for edge in edges:
        buffer += stream[start:edge]
        start = edge
        if reader.consume(buffer):
            return reader, bytes(buffer) + stream[start:]
    return None


@settings(max_examples=400, deadline=None)
@given(
    stream=st.lists(
        st.sampled_from([b"\r", b"\n", b".", b"a", b"\r\n", b"\r\n.", b".\r\n"]), max_size=40
    ).map(b"".join),
    cuts=st.lists(st.integers(min_value=0, max_value=200), max_size=12),
)
def test_data_reader_matches_the_rfc_definition_for_any_chunking(stream: bytes, cuts: list[int]) -> None:
    expected = reference(stream)
    got = read_in_chunks(stream, cuts)
    if expected is None:
        assert got is None
    else:
        assert got is not None
        reader, rest = got
        assert (reader.content, rest) == expected


@settings(max_examples=200, deadline=None)
@given(
    lines=st.lists(
        st.binary(max_size=30).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"")), max_size=20
    ),
    after=st.binary(max_size=20),
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=8),
)
def test_dot_stuffed_messages_round_trip_exactly(lines: list[bytes], after: bytes, cuts: list[int]) -> None:
    content = b"".join(line + b"\r\n" for line in lines)
    stuffed = b"".join((b"." + line if line.startswith(b".") else line) + b"\r\n" for line in lines)
    got = read_in_chunks(stuffed + b".\r\n" + after, cuts)
    assert got is not None
    reader, rest = got
    assert (reader.content, rest) == (content, after)


def test_oversized_data_is_discarded_but_the_end_is_still_found() -> None:
    reader = DataReader(max_size=1000)
    buffer = bytearray()
    for _ in range(50):
        buffer += b"x" * 998 + b"\r\n"
        assert not reader.consume(buffer)
        assert len(buffer) < 3000  # memory stays bounded
    buffer += b".\r\nNOOP\r\n"
    assert reader.consume(buffer)
    assert reader.too_big and reader.content is None
    assert bytes(buffer) == b"NOOP\r\n"


@settings(max_examples=500, deadline=None)
@given(
    content=st.lists(st.sampled_from([b"a", b"bb", b"ccccc", b"d" * 17, b"\r\n"]), max_size=80).map(b"".join),
    limit=st.integers(min_value=0, max_value=30),
)
def test_long_line_check_matches_splitting_into_lines(content: bytes, limit: int) -> None:
    assert has_long_line(content, limit) == (max(len(line) for line in content.split(b"\r\n")) > limit)
