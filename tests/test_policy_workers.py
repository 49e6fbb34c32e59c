"""Policy worker processes: the same decisions as in-process evaluation, and every way a worker fails."""

from __future__ import annotations

import asyncio
import gc
import os
import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import NoReturn

import pytest

from gateway.decision import policy_workers
from gateway.decision.policy_screener import PolicyScreener
from gateway.decision.policy_workers import PolicyWorkers, worker_count
from gateway.decision.screening import Accept
from gateway.replies import Reply
from gateway.settings import GatewaySettings, PolicySettings
from gateway.state.audit import audit_dir
from gateway.state.audit_reading import read_entries
from tests.test_policy_screener import CONDUCT, OUTSIDER, POLICY, message, submission

# One submission per kind of decision: unchanged, rewritten (Cc added), refused (a reporter's name),
# refused before any rule (ambiguous structure), and a reply whose parent the ledger knows.
SUBMISSIONS = {
    "deliver": submission(message()),
    "rewrite-cc": submission(message(cc=None), rcpt_tos=(OUTSIDER,)),
    "reject-identity": submission(message(body="Jin Park told us about it.\r\n")),
    "reject-ambiguous": submission(message(extra=("Subject: a second subject",))),
    "reply-banner": submission(
        message(
            message_id="<m2@example.org>",
            extra=("In-Reply-To: <m1@example.org>",),
            to=f"Olive Out <{OUTSIDER}>, Pat New <pat@example.net>",
        ),
        rcpt_tos=(OUTSIDER, "pat@example.net", CONDUCT),
        queue_id="Q2",
    ),
}


@pytest.fixture
def settings(tmp_path: Path) -> GatewaySettings:
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(POLICY, encoding="utf-8")
    return GatewaySettings(state_dir=tmp_path / "state", policy=PolicySettings(path=policy_file, workers=1))


@pytest.fixture
async def workers(settings: GatewaySettings) -> AsyncIterator[PolicyWorkers]:
    pool = PolicyWorkers(settings, 1)
    await pool.start()
    try:
        yield pool
    finally:
        await pool.close()


@pytest.fixture
def screener(settings: GatewaySettings, workers: PolicyWorkers) -> Iterator[PolicyScreener]:
    """The screener built whole with its worker pool, as the gateway builds it."""
    with PolicyScreener.from_settings(settings, workers=workers) as opened:
        yield opened


@pytest.fixture
def in_process(settings: GatewaySettings) -> Iterator[PolicyScreener]:
    """A screener without workers: it evaluates in its own process."""
    with PolicyScreener.from_settings(settings) as opened:
        yield opened


async def kill_the_worker(workers: PolicyWorkers) -> None:
    """SIGKILL the one worker and wait until the pool has seen it go."""
    [pid] = workers.pids()
    os.kill(pid, signal.SIGKILL)
    for _ in range(100):
        if not workers.pids():
            return
        await asyncio.sleep(0.02)


def outcome(result: Accept | Reply) -> tuple[object, ...]:
    """Everything the SMTP layer acts on."""
    if isinstance(result, Reply):
        return ("refuse", result.code, result.status, result.lines)
    return ("accept", result.content, result.rcpt_tos, result.changes, result.verdict, result.findings)


@pytest.mark.parametrize(
    ("cpus", "expected"), [(1, 2), (2, 2), (3, 2), (5, 4), (64, 4)], ids=lambda value: str(value)
)
def test_auto_keeps_one_core_for_the_event_loop_with_two_workers_at_least(cpus: int, expected: int) -> None:
    # Two at least, even on one or two cores: one slow message must not hold up everyone else's.
    assert worker_count("auto", cpus) == expected


def test_an_explicit_count_is_taken_as_given() -> None:
    assert worker_count(0, 8) == 0
    assert worker_count(3, 1) == 3


def command_line(pid: int) -> bytes:
    """What ``ps`` shows for a process (its argv, as the kernel holds it)."""
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").strip()


async def test_a_worker_shows_what_it_is_in_ps(workers: PolicyWorkers) -> None:
    [pid] = workers.pids()
    for _ in range(250):  # it names itself as it starts
        if command_line(pid) == b"conduct-gateway policy worker 0":
            break
        await asyncio.sleep(0.02)
    assert command_line(pid) == b"conduct-gateway policy worker 0"


async def test_a_worker_decides_exactly_as_the_gateway_process_does(
    tmp_path: Path, settings: GatewaySettings, screener: PolicyScreener, workers: PolicyWorkers
) -> None:
    in_process_settings = settings.model_copy(update={"state_dir": tmp_path / "in-process"})
    kinds: set[object] = set()
    with PolicyScreener.from_settings(in_process_settings) as reference:
        for name in ("deliver",):  # the parent of "reply-banner", known to both ledgers
            for judge in (screener, reference):
                parent = judge.screen(SUBMISSIONS[name])
                assert isinstance(parent, Accept)
                judge.accepted(SUBMISSIONS[name], parent)
        for name, case in SUBMISSIONS.items():
            expected = reference.screen(case)
            actual = await screener.screen_async(case)
            assert outcome(actual) == outcome(expected), name
            kinds.add(outcome(expected)[0])
    assert workers.stale == 0 and workers.lost == 0
    # The table covers acceptance and refusal, so the comparison above is not vacuous.
    assert kinds == {"accept", "refuse"}


async def test_a_worker_on_another_policy_version_hands_the_message_back(settings: GatewaySettings) -> None:
    # The file changes after the gateway loaded it and before the worker starts: the worker
    # loads the new version while the gateway still decides under the old one.
    pool = PolicyWorkers(settings, 1)
    with PolicyScreener.from_settings(settings, workers=pool) as screener:
        settings.policy.path.write_text(POLICY.replace("Jin Park", "Kim Lee"), encoding="utf-8")
        await pool.start()
        try:
            result = await screener.screen_async(SUBMISSIONS["reject-identity"])
            assert isinstance(result, Reply)  # judged here, under the version in force: Jin Park protected
            assert pool.stale == 1
            # Once the gateway reloads, requests name the new version and the worker answers them.
            screener.reload()
            result = await screener.screen_async(SUBMISSIONS["reject-identity"])
            assert isinstance(result, Accept)
            assert pool.stale == 1
        finally:
            await pool.close()


async def test_a_message_whose_worker_is_stuck_is_deferred_and_the_worker_replaced(
    settings: GatewaySettings,
    screener: PolicyScreener,
    workers: PolicyWorkers,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await screener.screen_async(SUBMISSIONS["deliver"])
    [first] = workers.pids()
    os.kill(first, signal.SIGSTOP)  # alive but never answering
    workers.evaluation_timeout = 0.2
    result = await screener.screen_async(SUBMISSIONS["deliver"])
    assert isinstance(result, Reply)
    assert (result.code, result.status) == (451, "4.3.0")
    assert "could not finish checking it in time" in " ".join(result.lines)
    assert workers.lost == 1
    # The next message gets a new worker (once the restart delay has passed) and is relayed.
    monkeypatch.setattr(policy_workers, "RESTART_DELAY", 0.0)
    workers.evaluation_timeout = policy_workers.stuck_after(workers.budget)
    result = await screener.screen_async(SUBMISSIONS["deliver"])
    assert isinstance(result, Accept)
    assert workers.restarts == 1
    assert workers.pids() != [first]
    entries = [dict(entry.fields) for entry in read_entries(audit_dir(settings.state_dir))]
    assert [entry["verdict"] for entry in entries] == ["tempfail"]
    assert entries[0]["error"] == "EvaluationTimeout"


async def test_while_no_worker_is_alive_the_gateway_evaluates_itself(
    screener: PolicyScreener, workers: PolicyWorkers, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A restart delay no busy machine can outlast between the kill and the next message.
    monkeypatch.setattr(policy_workers, "RESTART_DELAY", 600.0)
    await screener.screen_async(SUBMISSIONS["deliver"])
    await kill_the_worker(workers)
    assert workers.pids() == []
    # Within the restart delay: not restarted, and the message is still decided (in-process).
    result = await screener.screen_async(SUBMISSIONS["reject-identity"])
    assert isinstance(result, Reply) and result.code == 550
    assert workers.restarts == 0 and workers.lost == 0


def test_an_exception_in_a_worker_is_answered_with_its_type_only(
    settings: GatewaySettings, in_process: PolicyScreener, monkeypatch: pytest.MonkeyPatch
) -> None:
    # In-process, because a fault cannot be injected into another process: the worker's side of
    # the protocol. (The gateway's side of an error answer is the stuck-worker test above.)
    def failing(*_args: object, **_kwargs: object) -> NoReturn:
        raise ValueError("Jin Park was mentioned")  # an exception text may quote the message

    state = policy_workers._WorkerState(settings)
    assert state.policy is not None
    monkeypatch.setattr(policy_workers, "evaluate_submission", failing)
    answer = state.answer(policy_workers._Request(state.policy.version, SUBMISSIONS["deliver"]))
    assert answer == "ValueError"
    assert state.answer(policy_workers._Request("another-version", SUBMISSIONS["deliver"])) == "stale"


async def test_closing_stops_every_worker(settings: GatewaySettings) -> None:
    pool = PolicyWorkers(settings, 2)
    with PolicyScreener.from_settings(settings):
        await pool.start()
        pids = pool.pids()
        assert len(pids) == 2
        await pool.close()
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


async def test_concurrent_messages_start_one_replacement_for_a_dead_worker(
    screener: PolicyScreener, workers: PolicyWorkers, monkeypatch: pytest.MonkeyPatch
) -> None:
    await screener.screen_async(SUBMISSIONS["deliver"])
    await kill_the_worker(workers)
    monkeypatch.setattr(policy_workers, "RESTART_DELAY", 0.0)
    results = await asyncio.gather(*(screener.screen_async(SUBMISSIONS["deliver"]) for _ in range(10)))
    assert all(isinstance(result, Accept) for result in results)
    assert workers.restarts == 1
    assert len(workers.pids()) == 1


# --- a slow message holds up nobody else, and ends in a clear refusal ------------------------------

# An admin's timestamp pattern with catastrophic backtracking: on a run of "a" without a "b" the regex
# engine tries every way of splitting the run, about 2**n steps. (The shipped patterns are linear:
# tests/fuzz/test_growth.py.)
SLOW_RULE = """\
  - rule: anonymisation
    action: reject
    params:
      timestamp_patterns: ["(a+)+b"]
      timestamp_hint: "a"
      gendered_terms: []
"""
PATHOLOGICAL = submission(message(body="a" * 40 + "!\r\n"), queue_id="SLOW")
ORDINARY = submission(message(), queue_id="QUICK")


@pytest.fixture
def slow_settings(tmp_path: Path) -> GatewaySettings:
    policy_file = tmp_path / "policy.yaml"
    text = POLICY.replace("rules:\n", "rules:\n" + SLOW_RULE, 1)
    policy_file.write_text(text, encoding="utf-8")
    return GatewaySettings(
        state_dir=tmp_path / "state",
        policy=PolicySettings(path=policy_file, workers=2, evaluation_budget=1.0),
    )


async def test_a_slow_message_holds_up_nobody_and_is_refused_as_too_complex(
    slow_settings: GatewaySettings,
) -> None:
    pool = PolicyWorkers(slow_settings, 2)
    await pool.start()
    with PolicyScreener.from_settings(slow_settings, workers=pool) as screener:
        try:
            await screener.screen_async(ORDINARY)  # both workers loaded and answering
            slow = asyncio.create_task(screener.screen_async(PATHOLOGICAL))
            while not any(worker is not None and worker.pending for worker in pool._workers):
                await asyncio.sleep(0.01)  # the slow message is in a worker now
            quick = await screener.screen_async(ORDINARY)
            # Answered while the slow one was still being evaluated: nothing waited behind it.
            assert isinstance(quick, Accept)
            assert not slow.done()
            refused = await slow
        finally:
            await pool.close()
    assert isinstance(refused, Reply)
    assert (refused.code, refused.status) == (552, "5.3.4")
    assert "too complex for the gateway to check" in " ".join(refused.lines)
    assert pool.over_budget == 1 and pool.lost == 0  # the worker survived its message
    entries = [dict(entry.fields) for entry in read_entries(audit_dir(slow_settings.state_dir))]
    decided = [(entry["verdict"], entry.get("error")) for entry in entries]
    assert decided == [("reject", "EvaluationTooComplex")]


async def test_messages_wait_for_an_idle_worker_instead_of_queueing_behind_a_busy_one(
    settings: GatewaySettings,
) -> None:
    pool = PolicyWorkers(settings, 2)
    await pool.start()
    screener = PolicyScreener.from_settings(settings, workers=pool)
    try:
        await asyncio.gather(*(screener.screen_async(SUBMISSIONS["deliver"]) for _ in range(2)))
        [first, _second] = pool.pids()
        os.kill(first, signal.SIGSTOP)  # busy for as long as we like: a message sent there waits
        stuck = asyncio.create_task(screener.screen_async(SUBMISSIONS["deliver"]))
        while not any(worker is not None and worker.pending for worker in pool._workers):
            await asyncio.sleep(0.01)
        # Every later message goes to the other worker, one after another, none to the stopped one.
        results = await asyncio.gather(*(screener.screen_async(SUBMISSIONS["deliver"]) for _ in range(5)))
        assert all(isinstance(result, Accept) for result in results)
        assert not stuck.done()
        os.kill(first, signal.SIGCONT)
        assert isinstance(await stuck, Accept)
    finally:
        await pool.close()
        screener.close()


# --- a small message while every worker is idle: evaluated on the event loop, within a CPU slice ---


@pytest.fixture
def inline_screener(settings: GatewaySettings, workers: PolicyWorkers) -> Iterator[PolicyScreener]:
    """The screener as the running gateway builds it: workers, and evaluation on the loop when idle."""
    with PolicyScreener.from_settings(settings, workers=workers, inline=True) as opened:
        yield opened


def requests_sent(workers: PolicyWorkers) -> int:
    return workers._next_id  # every request to a worker takes the next id


async def test_a_small_message_while_every_worker_is_idle_is_decided_on_the_event_loop_the_same_way(
    tmp_path: Path, settings: GatewaySettings, inline_screener: PolicyScreener, workers: PolicyWorkers
) -> None:
    in_process_settings = settings.model_copy(update={"state_dir": tmp_path / "in-process"})
    with PolicyScreener.from_settings(in_process_settings) as reference:
        for judge in (inline_screener, reference):
            parent = judge.screen(SUBMISSIONS["deliver"])
            assert isinstance(parent, Accept)
            judge.accepted(SUBMISSIONS["deliver"], parent)
        for name, case in SUBMISSIONS.items():
            assert outcome(await inline_screener.screen_async(case)) == outcome(reference.screen(case)), name
    assert requests_sent(workers) == 0
    assert workers.inline == len(SUBMISSIONS) and workers.inline_used_up == 0
    statistics = workers.statistics()
    assert (statistics.inline_total, statistics.inline_used_up_total) == (len(SUBMISSIONS), 0)


@pytest.mark.timeout(120)
async def test_a_message_that_uses_up_its_slice_is_decided_by_a_worker(
    inline_screener: PolicyScreener, workers: PolicyWorkers, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gateway.decision import policy_screener

    def endless(*_args: object) -> NoReturn:
        while True:
            pass

    # Endless here only: the worker process evaluates with the real function.
    monkeypatch.setattr(policy_screener, "evaluate_submission", endless)
    result = await inline_screener.screen_async(SUBMISSIONS["reject-identity"])
    assert isinstance(result, Reply) and result.code == 550  # the worker's verdict
    assert workers.inline == 1 and workers.inline_used_up == 1
    assert requests_sent(workers) == 1


async def test_a_large_message_goes_to_a_worker(
    inline_screener: PolicyScreener, workers: PolicyWorkers
) -> None:
    large = submission(message(body="Minutes of the meeting.\r\n" * 3000))
    assert len(large.content) > policy_workers.INLINE_MAX_BYTES
    assert isinstance(await inline_screener.screen_async(large), Accept)
    assert requests_sent(workers) == 1 and workers.inline == 0


async def test_while_a_worker_has_a_message_the_next_one_goes_to_a_worker_too(
    settings: GatewaySettings,
) -> None:
    pool = PolicyWorkers(settings, 2)
    await pool.start()
    screener = PolicyScreener.from_settings(settings, workers=pool, inline=True)
    try:
        await screener.screen_async(SUBMISSIONS["deliver"])  # on the loop: both workers idle
        assert pool.inline == 1
        await asyncio.gather(
            *(pool.evaluate(SUBMISSIONS["deliver"], screener.policy_version) for _ in range(2))
        )
        [first, _second] = pool.pids()
        os.kill(first, signal.SIGSTOP)
        busy = asyncio.create_task(pool.evaluate(SUBMISSIONS["deliver"], screener.policy_version))
        while not any(worker is not None and worker.pending for worker in pool._workers):
            await asyncio.sleep(0.01)
        sent = requests_sent(pool)
        # A worker has a message: the next one would overtake it on the loop; it goes to the other worker.
        assert isinstance(await screener.screen_async(SUBMISSIONS["deliver"]), Accept)
        assert pool.inline == 1 and requests_sent(pool) == sent + 1
        os.kill(first, signal.SIGCONT)
        await busy
    finally:
        await pool.close()
        screener.close()


def test_the_running_gateway_evaluates_small_messages_on_the_loop_only_from_local_files(
    settings: GatewaySettings,
) -> None:
    from gateway.decision.build import policy_screener

    with policy_screener(settings) as on_files:
        assert on_files._inline is not None
        assert on_files._inline.seconds == policy_workers.INLINE_SLICE_SECONDS
    without_workers = settings.model_copy(
        update={"policy": settings.policy.model_copy(update={"workers": 0})}
    )
    with policy_screener(without_workers) as alone:
        assert alone.workers is None and alone._inline is None


# --- a loaded policy is kept out of the garbage collector's walks in long-lived processes ------------


def collected(value: object) -> bool:
    """Whether the cyclic garbage collector walks ``value`` (frozen objects are in no generation)."""
    return any(tracked is value for tracked in gc.get_objects())


@pytest.fixture
def unfrozen() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()  # back to the oldest generation: this test process is not a gateway


def test_the_running_gateways_policy_is_frozen_at_start_and_after_a_reload(
    settings: GatewaySettings, unfrozen: None
) -> None:
    from gateway.decision.build import policy_screener

    with policy_screener(settings) as running:
        assert not collected(running.source.policy)
        settings.policy.path.write_text(POLICY.replace("Jin Park", "Kim Lee"), encoding="utf-8")
        assert running.reload().value == "reloaded"
        assert not collected(running.source.policy)
    gc.unfreeze()
    # A screener built for a tool or a test leaves the collector alone.
    with PolicyScreener.from_settings(settings) as tool:
        assert collected(tool.source.policy)


def test_a_worker_freezes_the_policy_it_loads(settings: GatewaySettings, unfrozen: None) -> None:
    state = policy_workers._WorkerState(settings)
    assert state.policy is not None and not collected(state.policy)
    if state.ledger is not None:
        state.ledger.close()
    state.fingerprints.close()
