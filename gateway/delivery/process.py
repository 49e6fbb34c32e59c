"""Delivery in a process of its own: the spool is the only link between intake and delivery.

As in Postfix, where smtpd and the queue manager are separate programs, the event loop that answers
clients does not also speak SMTP to the upstream: relaying a message costs about as much CPU as
accepting it, and a Python process runs on one core. With ``delivery.own_process`` (``auto``: when
the machine has three cores or more) the gateway starts one delivery process, which runs the same
``DeliveryWorker`` on its own ``Spool`` object over the same folder (it takes the spool's delivery
lock, so there is still only one deliverer). The gateway cleans the spool up after an unclean stop
before it starts the process (``Spool.recover`` under the same lock).

The gateway tells it of every commit at once (queue ids as ``gateway.framing`` frames on a socket
pair; mail committed by other processes, such as ``queue retry``, is found by its periodic scan), and
it sends back its statistics for ``/metrics`` whenever they change. To stop, the gateway says so: the
process lets the attempts in flight finish, closes its connections and exits.

A delivery process that dies is started again after ``RESTART_DELAY`` (nothing is lost: accepted
mail is on disk, and the new process picks it up from the spool). One that cannot start at all
(another process is delivering from this spool, the spool is unreadable) stops the gateway with its
reason, as the in-process worker does.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import multiprocessing
import socket
from dataclasses import dataclass
from multiprocessing.process import BaseProcess

from gateway.delivery.model import DeliveryStatistics
from gateway.delivery.restart import run_restarting
from gateway.delivery.worker import DeliveryWorker
from gateway.errors import GatewayError
from gateway.framing import encode_frame, read_frame_async
from gateway.helper_process import available_cpus, begin_helper_process
from gateway.histogram import combined
from gateway.logs import log_event
from gateway.settings import GatewaySettings
from gateway.state.opening import open_state
from gateway.state.ports import QueuePort

log = logging.getLogger("gateway.delivery.process")

RESTART_DELAY = 1.0
STATISTICS_INTERVAL = 0.1  # how often the process looks whether its statistics changed


# With two cores the event loop and a policy worker already have one each: measured on two cores, a
# delivery process only adds its hand-offs (bench/relay.py, the same throughput either way).
AUTO_MIN_CPUS = 3


def wants_own_process(setting: bool | str, cpus: int | None = None) -> bool:
    """Whether ``delivery.own_process`` asks for a delivery process (``auto``: three cores or more)."""
    if isinstance(setting, bool):
        return setting
    return (cpus if cpus is not None else available_cpus()) >= AUTO_MIN_CPUS


# What goes over the socket pair.
@dataclass(frozen=True)
class _Committed:
    queue_id: str


@dataclass(frozen=True)
class _Stop:
    pass


@dataclass(frozen=True)
class _CannotStart:
    reason: str


class DeliveryProcess:
    """The gateway's side: starts the process, tells it of commits, keeps its latest statistics."""

    def __init__(self, settings: GatewaySettings, spool: QueuePort) -> None:
        self.settings = settings
        self._spool = spool
        self._context = multiprocessing.get_context("spawn")  # never fork a process with threads
        self._process: BaseProcess | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._statistics = DeliveryStatistics.empty()
        self._earlier: DeliveryStatistics | None = None  # totals of processes that have ended
        self.restarts = 0

    @property
    def alive(self) -> bool:
        return self._process is not None and self._process.is_alive()

    def statistics(self) -> DeliveryStatistics:
        """The delivery process's latest statistics; totals include processes that have ended."""
        return _added(self._earlier, self._statistics)

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until ``stop`` is set, restarting a process that dies; then stop it and return.

        Raises GatewayError when the process cannot start (its reason is the message).
        """
        # Cleaning up after an unclean stop is the spool owner's job: the delivery process must not,
        # as it would take the intake's half-written files for leftovers.
        with self._spool.delivery_lock():
            await asyncio.to_thread(self._spool.recover)
        unsubscribe = self._spool.on_commit(self._committed)
        try:
            while True:
                reason = await self._run_once(stop)
                if reason is not None:
                    raise GatewayError(reason)
                if stop.is_set():
                    return
                self.restarts += 1
                log_event(log, "delivery_process_died", logging.ERROR, restart_in=RESTART_DELAY)
                self._earlier = self.statistics()
                self._statistics = DeliveryStatistics.empty()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(RESTART_DELAY):
                        await stop.wait()
                if stop.is_set():
                    return
        finally:
            unsubscribe()

    async def _run_once(self, stop: asyncio.Event) -> str | None:
        """One process's life; the reason it could not start, or None."""
        ours, theirs = socket.socketpair()
        process = self._context.Process(
            target=serve_delivery, args=(theirs, self.settings), name="conduct-gateway delivery", daemon=True
        )
        await asyncio.to_thread(process.start)
        theirs.close()
        self._process = process
        reader, self._writer = await asyncio.open_connection(sock=ours)
        cannot_start: str | None = None
        listening = asyncio.ensure_future(self._listen(reader))
        stopping = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait((listening, stopping), return_when=asyncio.FIRST_COMPLETED)
            if not listening.done():
                # Stop requested: in-flight attempts finish (bounded by the upstream timeouts).
                self._send(_Stop())
                cannot_start = await listening
            else:
                cannot_start = listening.result()
        finally:
            stopping.cancel()
            writer, self._writer = self._writer, None
            writer.close()
            await asyncio.to_thread(process.join, 10)
            if process.is_alive():
                process.kill()
                await asyncio.to_thread(process.join, 10)
        return cannot_start

    async def _listen(self, reader: asyncio.StreamReader) -> str | None:
        """Take the process's statistics until it has gone; the reason it gave if it could not start."""
        cannot_start: str | None = None
        while (frame := await read_frame_async(reader)) is not None:
            _request_id, message = frame
            if isinstance(message, DeliveryStatistics):
                self._statistics = message
            elif isinstance(message, _CannotStart):
                cannot_start = message.reason
        return cannot_start

    def _committed(self, queue_id: str) -> None:
        self._send(_Committed(queue_id))

    def _send(self, message: _Committed | _Stop) -> None:
        # Between processes the message waits in the spool; the next process loads its backlog.
        if self._writer is not None and not self._writer.is_closing():
            self._writer.write(encode_frame(message))


def _added(earlier: DeliveryStatistics | None, now: DeliveryStatistics) -> DeliveryStatistics:
    if earlier is None:
        return now
    return DeliveryStatistics(
        in_flight=now.in_flight,
        sending=now.sending,
        ready=now.ready,
        scheduled=now.scheduled,
        connections_open=now.connections_open,
        connections_total=earlier.connections_total + now.connections_total,
        attempts_total=earlier.attempts_total + now.attempts_total,
        outcomes_total={k: earlier.outcomes_total.get(k, 0) + v for k, v in now.outcomes_total.items()},
        recipients_total={k: earlier.recipients_total.get(k, 0) + v for k, v in now.recipients_total.items()},
        dsns_total=earlier.dsns_total + now.dsns_total,
        errors_total=earlier.errors_total + now.errors_total,
        out_of_step_total=earlier.out_of_step_total + now.out_of_step_total,
        unrecorded=now.unrecorded,
        disk_full_total=earlier.disk_full_total + now.disk_full_total,
        delivery_seconds=combined(earlier.delivery_seconds, now.delivery_seconds),
    )


# --- the delivery process ------------------------------------------------------------------------


def serve_delivery(connection: socket.socket, settings: GatewaySettings) -> None:
    """The delivery process's whole life: deliver until the gateway says stop (or goes away)."""
    begin_helper_process(settings)
    asyncio.run(_deliver(connection, settings))


async def _deliver(connection: socket.socket, settings: GatewaySettings) -> None:
    reader, writer = await asyncio.open_connection(sock=connection)
    queue = open_state(settings).queue.open()
    worker = DeliveryWorker(
        queue,
        settings.delivery,
        hostname=settings.server.hostname,
        crash_at=settings.crash_at,
    )
    stop = asyncio.Event()

    async def listen() -> None:
        while (frame := await read_frame_async(reader)) is not None:
            _request_id, message = frame
            if isinstance(message, _Committed):
                worker.committed_elsewhere(message.queue_id)
            elif isinstance(message, _Stop):
                break
        stop.set()  # told to stop, or the gateway has gone: finish what is in flight and exit

    async def report() -> None:
        sent: DeliveryStatistics | None = None
        while not writer.is_closing():
            current = worker.statistics()
            if current != sent:
                writer.write(encode_frame(current))
                sent = current
            await asyncio.sleep(STATISTICS_INTERVAL)

    listening = asyncio.ensure_future(listen())
    reporting = asyncio.ensure_future(report())
    try:
        # An outage of a shared queue is waited out here: the gateway would take a stopped process
        # for one that cannot start.
        run = functools.partial(worker.run, stop, recover=False)
        await run_restarting(run, stop, shared=queue.shared)
    except GatewayError as exc:
        writer.write(encode_frame(_CannotStart(str(exc))))
    finally:
        listening.cancel()
        reporting.cancel()
        await asyncio.gather(listening, reporting, return_exceptions=True)
        with contextlib.suppress(ConnectionError):
            writer.write(encode_frame(worker.statistics()))
            await writer.drain()
        writer.close()
