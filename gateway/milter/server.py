"""The milter listener: ``inet:PORT@HOST`` or ``unix:PATH``, one ``MilterSession`` per MTA connection.

Each complete message is judged (``judging.Judge``) within ``milter.decision_timeout``; a judge that
fails or runs out of time answers as ``milter.on_failure`` says (``tempfail`` by default: the MTA
tells the client to try again, and nothing passes unscreened). An MTA that cannot reach the milter
at all applies its own ``milter_default_action``, which the README tells admins to set to
``tempfail`` as well.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path

from kilter.protocol import Accept, TemporaryFailure, UnexpectedMessage
from kilter.protocol.messages import Message

from gateway.errors import ConfigError
from gateway.logs import describe_error, log_event
from gateway.milter.judging import Judge, Verdict
from gateway.milter.session import Envelope, MilterProtocolError, MilterSession
from gateway.settings import MilterSettings

log = logging.getLogger("gateway.milter")

READ_SIZE = 65536
STOP_GRACE = 10.0


@dataclass(frozen=True)
class SocketSpec:
    """Where the milter listens: a TCP host and port, or a unix socket path."""

    host: str = ""
    port: int = 0
    path: Path | None = None

    @classmethod
    def parse(cls, spec: str) -> SocketSpec:
        """``inet:PORT@HOST`` (Postfix's and Sendmail's notation), ``inet:HOST:PORT`` or ``unix:PATH``."""
        kind, _, rest = spec.partition(":")
        if kind == "unix" and rest:
            return cls(path=Path(rest))
        if kind in ("inet", "inet6") and rest:
            port, at, host = rest.partition("@")
            if not at:
                host, _, port = rest.rpartition(":")
            if port.isdigit() and int(port) < 65536:
                return cls(host=host.strip("[]") or "127.0.0.1", port=int(port))
        raise ConfigError(f"milter.listen: {spec!r} is not inet:PORT@HOST or unix:PATH")

    def __str__(self) -> str:
        return f"unix:{self.path}" if self.path is not None else f"inet:{self.port}@{self.host}"


@dataclass(frozen=True)
class MilterStatistics:
    """What ``/metrics`` shows of milter mode (counts and outcome words only, never addresses)."""

    connections_open: int
    connections_total: int
    messages_total: dict[str, int]  # outcome word (accepted, held, refused, failed, ...) -> messages
    edits_not_offered_total: int


class MilterServer:
    """Serves MTA connections until ``stop``; every message goes through ``judge``."""

    def __init__(self, judge: Judge, settings: MilterSettings, max_size: int) -> None:
        self.judge = judge
        self.settings = settings
        self.max_size = max_size
        self.spec = SocketSpec.parse(settings.listen)
        self._server: asyncio.Server | None = None
        self._connections: dict[asyncio.Task[None], asyncio.StreamWriter] = {}
        self._connections_total = 0
        self._outcomes: collections.Counter[str] = collections.Counter()
        self._edits_not_offered = 0

    def statistics(self) -> MilterStatistics:
        return MilterStatistics(
            connections_open=len(self._connections),
            connections_total=self._connections_total,
            messages_total=dict(self._outcomes),
            edits_not_offered_total=self._edits_not_offered,
        )

    @property
    def address(self) -> SocketSpec:
        """Where it listens (with the port chosen when the settings said 0)."""
        if self._server is None or self.spec.path is not None:
            return self.spec
        host, port = self._server.sockets[0].getsockname()[:2]
        return SocketSpec(host=str(host), port=int(port))

    async def start(self) -> None:
        if self.spec.path is not None:
            with contextlib.suppress(FileNotFoundError):
                self.spec.path.unlink()  # a socket left by a previous run
            self._server = await asyncio.start_unix_server(self._serve, path=str(self.spec.path))
            self.spec.path.chmod(0o660)  # the MTA's group reaches it; set the folder's group for that
        else:
            self._server = await asyncio.start_server(self._serve, self.spec.host, self.spec.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        # Closing the connections ends each session's read; a decision under way is given time to end.
        for writer in self._connections.values():
            writer.close()
        tasks = list(self._connections)
        if tasks:
            _done, pending = await asyncio.wait(tasks, timeout=STOP_GRACE)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections[task] = writer
        self._connections_total += 1
        session = MilterSession(self.max_size)
        try:
            while not session.closed:
                async with asyncio.timeout(self.settings.idle_timeout):
                    data = await reader.read(READ_SIZE)
                if not data:
                    break
                replies, complete = session.receive(data)
                writer.write(replies)
                for message in complete:
                    writer.write(self._answer(session, await self._judge(message.envelope)))
                await writer.drain()
        except (MilterProtocolError, TimeoutError, ConnectionError) as exc:
            log_event(log, "milter.connection_closed", logging.INFO, reason=describe_error(exc))
        finally:
            self._connections.pop(task, None)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _judge(self, envelope: Envelope) -> Verdict:
        try:
            async with asyncio.timeout(self.settings.decision_timeout):
                verdict = await self.judge.judge(envelope)
        except Exception as exc:
            log_event(log, "milter.judge_failed", logging.ERROR, error=describe_error(exc))
            self._outcomes["failed"] += 1
            return Verdict(self._on_failure(), "failed", envelope.queue_id)
        log_event(
            log,
            "milter.message",
            queue_id=verdict.reference,
            mta_queue_id=envelope.queue_id,
            authenticated=bool(envelope.login),
            recipients=len(envelope.rcpt_tos),
            size=len(envelope.body),
            outcome=verdict.outcome,
        )
        self._outcomes[verdict.outcome] += 1
        return verdict

    def _on_failure(self) -> list[Message]:
        return [Accept()] if self.settings.on_failure == "accept" else [TemporaryFailure()]

    def _answer(self, session: MilterSession, verdict: Verdict) -> bytes:
        try:
            return session.answer(verdict.actions)
        except UnexpectedMessage as exc:
            # The MTA did not agree to an edit the decision needs (milter_protocol, or its version):
            # never deliver the message without it.
            self._edits_not_offered += 1
            log_event(
                log, "milter.edit_not_offered", logging.ERROR, queue_id=verdict.reference, error=str(exc)
            )
            return session.answer([TemporaryFailure()])
