"""Delivery reads upstream replies strictly: a reply nobody asked for drops the connection and defers.

A message counts as delivered to a recipient only on the upstream's 2xx to the final dot, on a
connection known to be in step. The upstream here is ``FakeUpstream``, which sends exactly the bytes
it is told to, however badly packed: with and without PIPELINING, since the two paths read replies
differently.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.delivery.worker import UpstreamTransport
from gateway.fake_upstream import FakeUpstream
from gateway.settings import UpstreamSettings
from gateway.state.spool import QueueState, Spool, SpoolEnvelope

from .conftest import delivery_settings, envelope, eventually, message, running

CONTENT = b"From: a@example.org\r\nSubject: hi\r\n\r\nbody\r\n"
STRAY = b"250 2.0.0 stray line nobody asked for\r\n"


def transport_for(upstream: FakeUpstream, **overrides: Any) -> UpstreamTransport:
    settings = UpstreamSettings.model_validate(
        {"host": upstream.host, "port": upstream.port, "security": "none", "timeout": 5, **overrides}
    )
    return UpstreamTransport(settings, hostname="gateway.test", environ={})


def one(*recipients: str) -> SpoolEnvelope:
    return SpoolEnvelope("Q1", "sender@example.org", recipients, "sender@example.org", time.time())


@pytest.fixture(params=[False, True], ids=["one-command-at-a-time", "pipelining"])
async def fake(request: pytest.FixtureRequest) -> AsyncIterator[FakeUpstream]:
    async with FakeUpstream(pipelining=request.param) as server:
        yield server


@pytest.mark.parametrize("packed", [False, True], ids=["stray-in-its-own-packet", "stray-with-the-354"])
async def test_a_stray_250_after_354_is_never_taken_for_the_reply_to_the_dot(
    fake: FakeUpstream, packed: bool
) -> None:
    # The defect: the stray 250 was read as the answer to the final dot; the real answer, 451,
    # came after it, and the message was logged delivered though the upstream never took it.
    if packed:
        fake.on("data", extra=STRAY, times=1)
    else:
        fake.on("data", reply=b"354 go ahead\r\n" + STRAY, split=True, times=1)
    fake.on("dot", reply=b"451 4.3.0 not queued after all\r\n", times=1)
    transport = transport_for(fake)
    result = await transport.send(one("a@example.net"), CONTENT, ("a@example.net",))
    assert [r.outcome for r in result.recipients] == ["deferred"]
    assert fake.accepted == []
    # The connection was out of step: it is not reused, and the next message is delivered for real.
    fake.clear()  # the 451 may not have been used: the stray line can be seen before the dot is sent
    second = await transport.send(one("b@example.net"), CONTENT, ("b@example.net",))
    await transport.close()
    assert [r.outcome for r in second.recipients] == ["delivered"]
    assert [m.rcpt_tos for m in fake.accepted] == [("b@example.net",)]
    assert transport.connections_made() == 2
    assert transport.out_of_step == 1


async def test_after_a_stray_line_no_later_message_is_delivered_from_a_reply_to_another_command(
    fake: FakeUpstream,
) -> None:
    # Without the fix, the pooled connection stayed one reply behind: each later message was
    # "delivered" on the reply to one of its RCPTs while the upstream refused or never saw it.
    fake.on("data", extra=STRAY, times=1)
    fake.on("dot", reply=b"451 4.3.0 not queued\r\n", times=1)
    transport = transport_for(fake)
    outcomes = []
    for number in range(4):
        recipient = f"r{number}@example.net"
        result = await transport.send(one(recipient), CONTENT, (recipient,))
        outcomes.append(result.recipients[0].outcome)
        fake.clear()
    await transport.close()
    delivered = [f"r{n}@example.net" for n, outcome in enumerate(outcomes) if outcome == "delivered"]
    assert [m.rcpt_tos[0] for m in fake.accepted] == delivered
    assert outcomes == ["deferred", "delivered", "delivered", "delivered"]


@pytest.mark.parametrize(
    ("phase", "reply"),
    [
        ("mail", b"354 go ahead\r\n"),
        ("rcpt", b"354 go ahead\r\n"),
        ("data", b"250 2.0.0 Ok\r\n"),
        ("dot", b"354 more please\r\n"),
        ("rcpt", b"252 2.1.5 cannot verify, will try\r\n"),
        ("mail", b"199 what\r\n"),
    ],
    ids=["354-to-mail", "354-to-rcpt", "250-to-data", "354-to-dot", "252-to-rcpt", "1xx-to-mail"],
)
async def test_a_reply_of_the_wrong_kind_for_its_command_defers_and_drops_the_connection(
    fake: FakeUpstream, phase: Any, reply: bytes
) -> None:
    fake.on(phase, reply=reply, times=1)
    transport = transport_for(fake)
    result = await transport.send(one("a@example.net"), CONTENT, ("a@example.net",))
    assert [r.outcome for r in result.recipients] == ["deferred"]
    assert result.recipients[0].reply.startswith("451 4.4.2 ")
    second = await transport.send(one("b@example.net"), CONTENT, ("b@example.net",))
    await transport.close()
    assert [r.outcome for r in second.recipients] == ["delivered"]
    assert transport.connections_made() == 2
    assert [m.rcpt_tos for m in fake.accepted] == [("b@example.net",)]


@pytest.mark.parametrize("phase", ["mail", "rcpt", "noop", "rset"])
async def test_an_extra_line_after_any_reply_drops_the_connection_before_it_is_reused(
    fake: FakeUpstream, phase: Any
) -> None:
    fake.on(phase, extra=STRAY, times=1)
    if phase == "rset":
        fake.on("rcpt", reply=b"550 5.1.1 unknown\r\n", times=1)  # so that an RSET follows
    transport = transport_for(fake)
    first = await transport.send(one("a@example.net"), CONTENT, ("a@example.net",))
    second = await transport.send(one("b@example.net"), CONTENT, ("b@example.net",))
    await transport.close()
    # Whatever the first attempt's outcome, nothing counts as delivered that the upstream did not take
    # (after a stray line that follows the NOOP the upstream has the message, but it is deferred
    # all the same: the retry may then make one extra copy, never a loss).
    delivered = {r.address for r in (*first.recipients, *second.recipients) if r.outcome == "delivered"}
    assert delivered <= {r for m in fake.accepted for r in m.rcpt_tos}
    assert [r.outcome for r in first.recipients] == ["deferred"]
    assert [r.outcome for r in second.recipients] == ["delivered"]
    assert transport.out_of_step == 1
    assert transport.connections_made() == 2


async def test_a_line_sent_while_the_connection_waits_in_the_pool_retires_it(fake: FakeUpstream) -> None:
    # The extra line comes after the whole exchange (here: after the 250 to NOOP, the last reply of
    # a message), while the connection waits for the next message.
    fake.on("noop", extra=STRAY, times=1)
    transport = transport_for(fake)
    await transport.send(one("a@example.net"), CONTENT, ("a@example.net",))
    await eventually(lambda: len(fake.lines) > 0 and fake.lines[-1] == b"NOOP")
    second = await transport.send(one("b@example.net"), CONTENT, ("b@example.net",))
    await transport.close()
    assert [r.outcome for r in second.recipients] == ["delivered"]
    assert transport.connections_made() == 2


@pytest.mark.parametrize("phase", ["greeting", "ehlo", "mail", "rcpt", "data", "dot", "noop"])
async def test_multi_line_replies_split_across_packets_are_read_whole(fake: FakeUpstream, phase: Any) -> None:
    replies = {
        "greeting": b"220-fake.test ESMTP\r\n220-more words\r\n220 end\r\n",
        "ehlo": None,
        "mail": b"250-2.1.0 sender\r\n250 2.1.0 Ok\r\n",
        "rcpt": b"250-2.1.5 recipient\r\n250 2.1.5 Ok\r\n",
        "data": b"354-go\r\n354 ahead\r\n",
        "dot": b"250-2.0.0 Ok\r\n250 2.0.0 queued as 123\r\n",
        "noop": b"250-2.0.0 still\r\n250 2.0.0 here\r\n",
    }
    fake.on(phase, reply=replies[phase], split=True)
    transport = transport_for(fake)
    first = await transport.send(one("a@example.net"), CONTENT, ("a@example.net",))
    second = await transport.send(one("b@example.net"), CONTENT, ("b@example.net",))
    await transport.close()
    assert [r.outcome for r in (*first.recipients, *second.recipients)] == ["delivered", "delivered"]
    assert transport.connections_made() == 1
    assert transport.out_of_step == 0


async def test_the_worker_defers_counts_and_logs_a_stray_reply_then_delivers_once(
    spool: Spool, caplog: pytest.LogCaptureFixture
) -> None:
    async with FakeUpstream(pipelining=True) as fake:
        fake.on("data", extra=STRAY, times=1)
        fake.on("dot", reply=b"451 4.3.0 not queued\r\n", times=1)
        sent = envelope()
        await spool.commit(sent, message(body="secret words"))
        settings = delivery_settings(
            UpstreamSettings(host=fake.host, port=fake.port, security="none", timeout=5)
        )
        with caplog.at_level(logging.INFO, logger="gateway.delivery.worker"):
            async with running(spool, settings) as worker:
                await fake.wait_for(1)
                await eventually(lambda: spool.locate(sent.queue_id) is QueueState.DONE)
        assert len(fake.accepted) == 1
        statistics = worker.statistics()
        assert statistics.out_of_step_total == 1
        assert statistics.outcomes_total["deferred"] >= 1
        logged = [r.getMessage() for r in caplog.records if "upstream_out_of_step" in r.getMessage()]
        assert len(logged) == 1
        assert "secret" not in caplog.text
        assert "bob@example.org" not in caplog.text


def test_the_waits_default_to_rfc_5321s_recommendations() -> None:
    # §4.5.3.2: 5 minutes for the greeting, MAIL and RCPT, 2 for the 354, 10 for the reply to the
    # final dot (a shorter wait there turns a slow upstream into duplicates).
    settings = UpstreamSettings(host="mail.example.org")
    assert (settings.timeout, settings.data_timeout, settings.final_reply_timeout) == (300, 120, 600)


PHASES = ("greeting", "ehlo", "mail", "rcpt", "data", "dot", "noop")
LINES = st.sampled_from(
    [b"250 2.0.0 ok\r\n", b"451 4.3.0 later\r\n", b"554 5.0.0 no\r\n", b"354 go\r\n", b"250-a\r\n250 b\r\n"]
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    pipelining=st.booleans(),
    stray_at=st.sampled_from(PHASES),
    stray=LINES,
    split_at=st.sampled_from((None, *PHASES)),
    dot_reply=st.sampled_from([b"250 2.0.0 queued\r\n", b"451 4.3.0 later\r\n", b"554 5.7.1 refused\r\n"]),
)
def test_whatever_stray_line_arrives_wherever_nothing_is_delivered_that_the_upstream_did_not_take(
    pipelining: bool, stray_at: Any, stray: bytes, split_at: Any, dot_reply: bytes
) -> None:
    async def scenario() -> None:
        async with FakeUpstream(pipelining=pipelining) as fake:
            fake.on(stray_at, extra=stray, times=1)
            fake.on("dot", reply=dot_reply, times=1)
            if split_at is not None:
                fake.on(split_at, split=True, times=1)
            transport = transport_for(fake, timeout=2, final_reply_timeout=2)
            first = await transport.send(one("a@example.net"), CONTENT, ("a@example.net",))
            fake.clear()
            second = await transport.send(one("b@example.net"), CONTENT, ("b@example.net",))
            await transport.close()
            taken = {r for m in fake.accepted for r in m.rcpt_tos}
            results = (*first.recipients, *second.recipients)
            delivered = {r.address for r in results if r.outcome == "delivered"}
            assert delivered <= taken  # never delivered without the upstream's acceptance
            if first.recipients[0].outcome == "failed":
                assert dot_reply.startswith(b"5") or stray.startswith(b"5")
            assert [r.outcome for r in second.recipients] == ["delivered"]  # and it recovers

    asyncio.run(scenario())
