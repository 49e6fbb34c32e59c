"""An upstream that misbehaves in every way the fake can: each scenario ends with the accounting check.

The delivery worker runs in this process against ``FakeUpstream`` with sub-second timeouts; each
fault heals by itself after a few occurrences (``times``), and then every message must have arrived
exactly once (or, for a permanent refusal, bounced with a DSN to its sender).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from gateway.fake_upstream import FakeUpstream
from gateway.state.spool import QueueState, Spool

from .conftest import check_accounting, commit, delivery_settings, eventually, running, settled

STRAY = b"250 2.0.0 stray line\r\n"
MESSAGES = 4


@pytest.fixture(params=[False, True], ids=["one-command-at-a-time", "pipelining"])
async def fake(request: pytest.FixtureRequest) -> AsyncIterator[FakeUpstream]:
    async with FakeUpstream(pipelining=request.param) as server:
        yield server


@pytest.fixture
def spool(tmp_path: Path) -> Spool:
    return Spool(tmp_path / "spool")


Fault = Callable[[FakeUpstream], None]

TEMPORARY_FAULTS: list[object] = [
    pytest.param(lambda f: f.on("connect", drop=True, times=3), id="connection-closed-before-greeting"),
    pytest.param(lambda f: f.on("connect", delay=1.0, times=2), id="stall-before-greeting"),
    pytest.param(lambda f: f.on("greeting", reply=b"421 4.3.2 busy\r\n", times=2), id="421-greeting"),
    pytest.param(lambda f: f.on("mail", reply=b"451 4.3.0 later\r\n", times=3), id="4xx-to-mail"),
    pytest.param(lambda f: f.on("rcpt", reply=b"452 4.2.2 full\r\n", times=3), id="4xx-to-rcpt"),
    pytest.param(lambda f: f.on("data", reply=b"451 4.3.0 later\r\n", times=3), id="4xx-to-data"),
    pytest.param(lambda f: f.on("dot", reply=b"451 4.3.0 later\r\n", times=3), id="4xx-to-dot"),
    pytest.param(lambda f: f.on("dot", drop=True, times=2), id="drop-after-dot-before-reply"),
    pytest.param(lambda f: f.on("content", delay=1.0, drop=True, times=2), id="stall-mid-data"),
    pytest.param(lambda f: f.on("mail", delay=1.0, times=2), id="stall-at-mail"),
    pytest.param(
        lambda f: (f.on("data", extra=STRAY, times=2), f.on("dot", reply=b"451 4.3.0 no\r\n", times=2)),
        id="stray-250-after-354",
    ),
    pytest.param(lambda f: f.on("rcpt", extra=STRAY, times=2), id="stray-line-after-rcpt"),
    pytest.param(lambda f: f.on("mail", reply=b"354 what\r\n", times=2), id="354-to-mail"),
    pytest.param(
        lambda f: f.on("dot", reply=b"250-2.0.0 Ok\r\n250 2.0.0 queued\r\n", split=True),
        id="multi-line-reply-split-across-packets",
    ),
]


@pytest.mark.parametrize("fault", TEMPORARY_FAULTS)
async def test_a_temporary_fault_delays_but_every_message_arrives_once(
    fake: FakeUpstream, spool: Spool, fault: Fault
) -> None:
    tokens = await commit(spool, MESSAGES, "temporary")
    fault(fake)
    async with running(spool, delivery_settings(fake)):
        await fake.wait_for(MESSAGES)
        await eventually(lambda: settled(spool))
    ledger = check_accounting(tokens, fake.accepted, spool.root)
    assert set(ledger.copies.values()) == {1}
    assert set(ledger.states.values()) == {QueueState.DONE}


@pytest.mark.parametrize("phase", ["mail", "rcpt", "data", "dot"])
async def test_a_permanent_refusal_at_any_phase_bounces_with_one_dsn_and_delivers_nothing(
    fake: FakeUpstream, spool: Spool, phase: str
) -> None:
    fake.on(phase, reply=b"554 5.7.1 refused\r\n", times=1)  # type: ignore[arg-type]
    [token] = await commit(spool, 1, "permanent")
    async with running(spool, delivery_settings(fake)):
        await fake.wait_for(1)  # the DSN
        await eventually(lambda: settled(spool))
    ledger = check_accounting([token], fake.accepted, spool.root)
    assert ledger.copies[token] == 0
    assert ledger.states[token] is QueueState.BOUNCED
    assert ledger.dsns == 1


async def test_an_upstream_that_refuses_connections_for_a_while_then_gets_everything_once(
    fake: FakeUpstream, spool: Spool
) -> None:
    await fake.refuse()
    tokens = await commit(spool, MESSAGES, "refused")
    async with running(spool, delivery_settings(fake)) as worker:
        await eventually(lambda: worker.statistics().outcomes_total["deferred"] >= 2 * MESSAGES)
        await fake.listen()
        await fake.wait_for(MESSAGES)
        await eventually(lambda: settled(spool))
    ledger = check_accounting(tokens, fake.accepted, spool.root)
    assert set(ledger.copies.values()) == {1}


async def test_a_broken_starttls_never_falls_back_to_cleartext(spool: Spool) -> None:
    async with FakeUpstream(broken_tls=True) as fake:
        [token] = await commit(spool, 1, "tls")
        async with running(spool, delivery_settings(fake, security="starttls")) as worker:
            await eventually(lambda: worker.statistics().outcomes_total["deferred"] >= 3)
    assert not [line for line in fake.lines if line.upper().startswith((b"MAIL", b"RCPT", b"DATA"))]
    ledger = check_accounting([token], fake.accepted, spool.root)
    assert ledger.states[token] is QueueState.DEFERRED
    [entry] = spool.entries(QueueState.DEFERRED)
    assert entry.status is not None
    assert entry.status.recipients[0].reply.startswith("451 4.4.1 problem connecting to the upstream")


async def test_a_slow_upstream_within_the_final_reply_timeout_gets_no_duplicate(
    fake: FakeUpstream, spool: Spool
) -> None:
    # The reply to the dot takes longer than every other wait here, but less than its own.
    fake.on("dot", delay=0.8)
    tokens = await commit(spool, 2, "slow")
    async with running(spool, delivery_settings(fake, final_reply_timeout=5)):
        await fake.wait_for(2)
        await eventually(lambda: settled(spool))
    ledger = check_accounting(tokens, fake.accepted, spool.root)
    assert set(ledger.copies.values()) == {1}


async def test_no_reply_to_the_dot_within_the_timeout_defers_and_may_leave_one_extra_copy(
    fake: FakeUpstream, spool: Spool
) -> None:
    # SMTP's own ambiguity (RFC 1047): the upstream took the message but answered too late. The
    # gateway must send it again; the bound is one extra copy per such timeout.
    fake.on("dot", delay=1.0, times=1)
    [token] = await commit(spool, 1, "late")
    async with running(spool, delivery_settings(fake)) as worker:
        await eventually(lambda: len(fake.accepted) == 2)
        await eventually(lambda: settled(spool))
    assert worker.statistics().outcomes_total["deferred"] == 1
    ledger = check_accounting([token], fake.accepted, spool.root, extra_copies_allowed=1)
    assert ledger.copies[token] == 2


async def test_a_reply_after_the_dot_that_is_not_the_250_to_noop_defers_at_the_cost_of_one_extra_copy(
    fake: FakeUpstream, spool: Spool
) -> None:
    # 250 to the dot, then 421 to the NOOP sent after it: had the 250 been a stray line, the 421
    # would be the real reply to the dot. Without proof the message is deferred and sent again:
    # one extra copy per such event, never a loss.
    fake.on("noop", reply=b"421 4.4.2 closing\r\n", times=1)
    tokens = await commit(spool, 2, "unproven")
    async with running(spool, delivery_settings(fake)) as worker:
        await eventually(lambda: len(fake.accepted) == 3)
        await eventually(lambda: settled(spool))
    assert worker.statistics().out_of_step_total == 1
    ledger = check_accounting(tokens, fake.accepted, spool.root, extra_copies_allowed=1)
    assert sorted(ledger.copies.values()) == [1, 2]
