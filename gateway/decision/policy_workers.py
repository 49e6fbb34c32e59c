"""Policy worker processes: parsing and rules on other cores, so the SMTP event loop only waits.

Evaluating a message (``gateway.decision.evaluation``) is pure CPU work, about a millisecond for an ordinary
message, and the event loop also runs every session, the spool and delivery on its one core. With
``policy.workers`` above 0, ``PolicyScreener.screen_async`` sends each submission to an idle worker
process (one message per worker at a time; the others wait in the gateway, first come first
served) and awaits the evaluation; everything with a side effect (audit trail, holds, thread ledger
writes, the reply) stays in the gateway process. A slow message therefore occupies one worker, never
the messages behind it: they go to the other workers.

Each message has a budget of CPU time (``policy.evaluation_budget``), counted by the worker's own
CPU timer (``ITIMER_PROF``), so time spent waiting or sharing a busy machine never counts. A message
that uses it up is refused for good (``EvaluationTooComplex``: 552 5.3.4): the same message would
use it up again on every retry. A worker still busy after ``2 x budget + 30`` seconds of wall-clock
time (stuck in code that never yields to the timer, or starved of CPU by the machine) is killed and
its one message deferred (451: that one is the gateway's fault).

Each worker loads the policy (and the case registry) from the same files and opens its own
read-only connections to the thread ledger and the fingerprint store (SQLite: other processes'
writes are seen at once). A request names the policy version the gateway decided under. A worker
whose policy differs reloads; if it still differs (the file changed again, or is now invalid) it
says so and the gateway evaluates that message itself: a verdict is never made under a policy other
than the one recorded with it.

A small message (``INLINE_MAX_BYTES``) that arrives while no worker has a message and none waits is
evaluated on the event loop itself, within a slice of CPU time (``gateway.decision.cpu_slice``): one
sender then does not wait for the round trip to a worker process. A message that uses up the slice
is sent to a worker after all, with the whole budget.

A worker that dies (killed, out of memory, a crash in a C extension) fails the message it had
with ``PolicyWorkerError`` (451: the client retries) and is started again for the next message;
while no worker is alive, the gateway evaluates in-process (without a budget: nothing can stop a
computation on the event loop's own thread). Requests and answers are
``gateway.framing`` frames on a socket pair.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import signal
import socket
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.process import BaseProcess

from gateway.decision.evaluation import Evaluation, evaluate_submission
from gateway.decision.policy_source import freeze_loaded_policy, load_policy_for
from gateway.decision.screening import Submission
from gateway.errors import EvaluationTooComplex, PolicyWorkerError
from gateway.framing import FrameBuffer, encode_frame, read_frame
from gateway.helper_process import available_cpus, begin_helper_process
from gateway.logs import log_event
from gateway.policy.engine import CompiledPolicy
from gateway.settings import GatewaySettings
from gateway.state.opening import open_state

log = logging.getLogger("gateway.policy.workers")

MAX_AUTO_WORKERS = 4
# Never fewer with ``auto``: with one worker, one slow message would hold up every other member's.
MIN_AUTO_WORKERS = 2
RESTART_DELAY = 1.0  # a worker that keeps dying is restarted at most this often
RELOAD_RETRY_INTERVAL = 5.0  # a worker that could not load the gateway's policy tries again after this
WAIT_RECHECK = 1.0  # a message waiting for a worker looks again this often (a dead one may be restartable)
# Evaluated on the event loop when every worker is idle: an ordinary message takes about a millisecond
# there; the slice bounds how long a hard one can hold every other session up before it goes to a worker.
INLINE_MAX_BYTES = 64 * 1024
INLINE_SLICE_SECONDS = 0.02

# What a worker answers: an evaluation; STALE (its policy is not the requested version);
# OVER_BUDGET (the message used up its CPU budget); or the name of the exception it raised (never
# its text, which could quote the message). The gateway answers TIMED_OUT for a worker it killed.
STALE = "stale"
OVER_BUDGET = "over-budget"
TIMED_OUT = "EvaluationTimeout"


def worker_count(setting: int | str, cpus: int | None = None) -> int:
    """How many workers ``policy.workers`` asks for: ``auto`` is one per core beyond the first
    (the event loop keeps one), at least ``MIN_AUTO_WORKERS`` and at most ``MAX_AUTO_WORKERS``."""
    if isinstance(setting, int):
        return setting
    available = cpus if cpus is not None else available_cpus()
    return max(MIN_AUTO_WORKERS, min(MAX_AUTO_WORKERS, available - 1))


def stuck_after(budget: float) -> float:
    """Wall-clock seconds after which a worker still busy with one message is taken to be stuck."""
    return 2 * budget + 30


@dataclass(frozen=True)
class WorkerStatistics:
    """Snapshot for metrics."""

    workers: int  # configured
    alive: int
    restarts_total: int
    lost_total: int  # messages deferred because their worker died or was stuck
    stale_total: int  # messages evaluated in the gateway process because a worker's policy differed
    over_budget_total: int  # messages refused because they used up their evaluation budget
    waiting: int  # messages waiting for an idle worker now
    inline_total: int = 0  # messages evaluated on the event loop (every worker idle, a small message)
    inline_used_up_total: int = 0  # of those, stopped at the end of their slice and sent to a worker


@dataclass(frozen=True)
class _Request:
    policy_version: str
    submission: Submission


@dataclass
class _Waiting:
    """A request the worker has not answered yet."""

    answer: asyncio.Future[Evaluation | str]
    since: float  # loop time it was sent


class _AnswerProtocol(asyncio.Protocol):
    """The gateway's end of one worker's socket: each answer goes to its request; when the socket
    closes (the worker exited, died or was killed), every request still waiting fails."""

    def __init__(self) -> None:
        self.frames = FrameBuffer()
        self.pending: dict[int, _Waiting] = {}
        self.closed = False
        self.on_close: Callable[[_AnswerProtocol], None] = lambda _protocol: None

    def data_received(self, data: bytes) -> None:
        for request_id, result in self.frames.feed(data):
            waiting = self.pending.pop(request_id, None)
            if waiting is not None and not waiting.answer.done() and isinstance(result, Evaluation | str):
                waiting.answer.set_result(result)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.on_close(self)
        for waiting in self.pending.values():
            if not waiting.answer.done():
                waiting.answer.set_result("WorkerDied")
        self.pending.clear()


@dataclass
class _Worker:
    """One worker process as the gateway sees it: its socket, and the requests it has."""

    number: int
    process: BaseProcess
    transport: asyncio.Transport
    protocol: _AnswerProtocol
    started_at: float
    killed: bool = False  # by the watchdog: no new message may go to it while it exits

    @property
    def alive(self) -> bool:
        return not self.protocol.closed and not self.killed

    @property
    def pending(self) -> dict[int, _Waiting]:
        return self.protocol.pending


class PolicyWorkers:
    """A fixed number of worker processes evaluating submissions for one gateway."""

    def __init__(self, settings: GatewaySettings, count: int) -> None:
        if count < 1:
            raise ValueError("PolicyWorkers needs at least one worker")
        self.settings = settings
        self.count = count
        self._workers: list[_Worker | None] = [None] * count
        self._next_id = 0
        self._context = multiprocessing.get_context("spawn")  # never fork a process with threads
        self.restarts = 0
        self.lost = 0  # messages whose worker died with them
        self.stale = 0  # messages handed back because the worker's policy differed
        self.over_budget = 0  # messages that used up their CPU budget
        self.inline = 0  # messages evaluated on the event loop instead (see may_inline)
        self.inline_used_up = 0
        self._closed = False
        self._restarting: set[int] = set()  # worker numbers being replaced now
        self.budget = settings.policy.evaluation_budget
        self.evaluation_timeout = stuck_after(self.budget)
        self._watchdog: asyncio.Task[None] | None = None
        self._waiters: deque[asyncio.Future[None]] = deque()  # messages waiting for an idle worker

    async def start(self) -> None:
        """Start every worker (each loads the policy in the background; requests wait in its socket)."""
        for number in range(self.count):
            self._workers[number] = await self._spawn(number)
        self._watchdog = asyncio.create_task(self._watch(), name="policy-worker-watchdog")

    async def evaluate(self, submission: Submission, policy_version: str) -> Evaluation | None:
        """The evaluation of ``submission`` under ``policy_version``; None when the caller must
        evaluate it itself (no worker alive, or the worker's policy is not that version).

        Raises EvaluationTooComplex when the message used up its CPU budget, PolicyWorkerError
        when the worker raised, died with the message or was stuck.
        """
        worker = await self._idle_worker()
        if worker is None:
            return None
        self._next_id += 1
        request_id = self._next_id
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[Evaluation | str] = loop.create_future()
        # Taken before the first await: no other message can be handed to this worker meanwhile.
        worker.pending[request_id] = _Waiting(answer, loop.time())
        worker.transport.write(encode_frame(_Request(policy_version, submission), request_id))
        # No timer per request: the watchdog kills a worker that keeps one waiting too long, which
        # answers the request it had (see _watch and _AnswerProtocol.connection_lost).
        try:
            result = await answer
        finally:
            self._wake_one()  # this worker is idle again (or gone): the next message may go
        if isinstance(result, Evaluation):
            return result
        if result == STALE:
            self.stale += 1
            return None
        if result == OVER_BUDGET:
            self.over_budget += 1
            raise EvaluationTooComplex(self.budget)
        raise PolicyWorkerError(result)

    def may_inline(self, size: int) -> bool:
        """Whether a message of ``size`` bytes may be evaluated on the event loop instead: a small
        one, while no worker has a message and none waits (so it overtakes nobody and the loop
        has nothing else to evaluate)."""
        if size > INLINE_MAX_BYTES or self._waiters or self._closed:
            return False
        return all(worker is None or not worker.pending for worker in self._workers)

    def counted_inline(self, *, used_up: bool) -> None:
        """One message was evaluated on the event loop (``used_up``: it used up its slice)."""
        self.inline += 1
        self.inline_used_up += used_up

    async def close(self) -> None:
        """Stop every worker: close its socket (it exits at end of input), then make sure."""
        self._closed = True
        if self._watchdog is not None:
            self._watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watchdog
        workers = [worker for worker in self._workers if worker is not None]
        for worker in workers:
            worker.transport.close()
        self._wake_all()  # a message still waiting is evaluated in-process (no worker is left)
        for worker in workers:
            await self._reap(worker)

    def statistics(self) -> WorkerStatistics:
        alive = sum(1 for worker in self._workers if worker is not None and worker.alive)
        return WorkerStatistics(
            self.count,
            alive,
            self.restarts,
            self.lost,
            self.stale,
            self.over_budget,
            len(self._waiters),
            self.inline,
            self.inline_used_up,
        )

    def pids(self) -> list[int]:
        """Process ids of the live workers (for tests and operators)."""
        return [w.process.pid for w in self._workers if w is not None and w.alive and w.process.pid]

    async def _idle_worker(self) -> _Worker | None:
        """A live worker with no message, waiting (first come, first served) while all are busy;
        None when no worker is alive (the caller evaluates in-process)."""
        queued = bool(self._waiters)  # others were waiting first: do not overtake them
        while True:
            await self._replace_dead()
            alive = [worker for worker in self._workers if worker is not None and worker.alive]
            if not alive or self._closed:
                return None
            if not queued:
                for worker in alive:
                    if not worker.pending:
                        return worker
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                async with asyncio.timeout(WAIT_RECHECK):
                    await waiter
            except TimeoutError:
                pass
            finally:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
            queued = False

    def _wake_one(self) -> None:
        """Let the first waiting message look for an idle worker again."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def _wake_all(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)

    async def _replace_dead(self) -> None:
        for number, worker in enumerate(self._workers):
            if (worker is None or not worker.alive) and not self._closed and number not in self._restarting:
                started_at = worker.started_at if worker is not None else 0.0
                if time.monotonic() - started_at >= RESTART_DELAY:
                    # Concurrent requests must not each start a replacement for the same worker.
                    self._restarting.add(number)
                    try:
                        if worker is not None:
                            await self._reap(worker)
                        self.restarts += 1
                        log_event(log, "policy-worker-restarted", logging.WARNING, worker=number)
                        self._workers[number] = await self._spawn(number)
                    finally:
                        self._restarting.discard(number)

    async def _watch(self) -> None:
        """Kill a worker that has kept a request waiting longer than ``evaluation_timeout``."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(min(1.0, self.evaluation_timeout / 4))
            now = loop.time()
            for worker in self._workers:
                if worker is None or not worker.alive:
                    continue
                if any(now - waiting.since > self.evaluation_timeout for waiting in worker.pending.values()):
                    log_event(log, "policy-worker-stuck", logging.ERROR, worker=worker.number)
                    worker.killed = True
                    self.lost += len(worker.pending)
                    for waiting in worker.pending.values():
                        if not waiting.answer.done():
                            waiting.answer.set_result(TIMED_OUT)
                    worker.pending.clear()
                    worker.process.kill()

    @staticmethod
    async def _reap(worker: _Worker) -> None:
        """Collect a dead worker's exit status (a stuck one is killed first)."""
        await asyncio.to_thread(worker.process.join, 5)
        if worker.process.is_alive():
            worker.process.kill()
            await asyncio.to_thread(worker.process.join, 5)

    async def _spawn(self, number: int) -> _Worker:
        ours, theirs = socket.socketpair()
        process = self._context.Process(
            target=serve_worker,
            args=(theirs, self.settings),
            name=f"conduct-gateway policy worker {number}",
            daemon=True,
        )
        await asyncio.to_thread(process.start)
        theirs.close()
        loop = asyncio.get_running_loop()
        transport, protocol = await loop.create_connection(_AnswerProtocol, sock=ours)
        protocol.on_close = lambda closed: self._worker_gone(number, closed)
        return _Worker(number, process, transport, protocol, time.monotonic())

    def _worker_gone(self, number: int, protocol: _AnswerProtocol) -> None:
        if protocol.pending and not self._closed:
            self.lost += len(protocol.pending)
            log_event(log, "policy-worker-died", logging.ERROR, worker=number, messages=len(protocol.pending))
        self._wake_one()  # a message waiting for a worker may now start its replacement


# --- the worker process ------------------------------------------------------------------------


class _OverBudget(BaseException):
    """Raised in a worker by its CPU timer. A BaseException, so that no ``except Exception`` in the
    parser or the engine (which turn a fault into a refusal or a rule error) can swallow it."""


class _WorkerState:
    """What one worker holds: the policy in force, read connections to the ledger and fingerprints."""

    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        self.budget = settings.policy.evaluation_budget
        self.timing = False  # the CPU timer is armed for a message (a late signal is ignored)
        self.policy: CompiledPolicy | None = None
        self.last_failed_load = float("-inf")
        self.state = open_state(settings)
        self.ledger = self.state.ledger.open_read_only()
        self.fingerprints = self.state.fingerprints.open()
        self._load()

    def _load(self) -> None:
        try:
            self.policy, _stamp = load_policy_for(self.settings)
        except Exception:  # an invalid file: the gateway keeps its last good policy; so do we
            self.last_failed_load = time.monotonic()
            return
        freeze_loaded_policy()  # the index of protected messages was opened before: frozen with it

    def policy_for(self, version: str) -> CompiledPolicy | None:
        if (self.policy is None or self.policy.version != version) and (
            time.monotonic() - self.last_failed_load >= RELOAD_RETRY_INTERVAL
        ):
            self._load()
        return self.policy if self.policy is not None and self.policy.version == version else None

    def answer(self, request: _Request) -> Evaluation | str:
        policy = self.policy_for(request.policy_version)
        if policy is None:
            return STALE
        if self.ledger is None:  # created by the gateway after this worker started
            self.ledger = self.state.ledger.open_read_only()
        try:
            try:
                self.timing = True
                signal.setitimer(signal.ITIMER_PROF, self.budget)
                fingerprints = self.fingerprints.for_message()
                evaluation = evaluate_submission(request.submission, policy, self.ledger, fingerprints)
                return evaluation.without_copy_of(request.submission)
            finally:
                self.timing = False
                signal.setitimer(signal.ITIMER_PROF, 0)
        except _OverBudget:  # also when the timer fired just as the evaluation ended: it was at the limit
            return OVER_BUDGET
        except Exception as exc:
            return type(exc).__name__

    def out_of_time(self, _signum: int, _frame: object) -> None:
        """SIGPROF: the message used up its CPU budget (the regex engine, too, checks for signals)."""
        if self.timing:
            raise _OverBudget


def serve_worker(connection: socket.socket, settings: GatewaySettings) -> None:
    """A worker process's whole life: answer requests until the gateway closes the socket."""
    begin_helper_process(settings)
    stream = connection.makefile("rwb")
    state = _WorkerState(settings)
    signal.signal(signal.SIGPROF, state.out_of_time)
    while (frame := read_frame(stream)) is not None:
        request_id, request = frame
        answer = state.answer(request) if isinstance(request, _Request) else "UnknownRequest"
        stream.write(encode_frame(answer, request_id))
        stream.flush()
