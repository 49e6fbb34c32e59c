"""A scriptable fake SMTP upstream for fault tests: refusals per phase, stalls, drops, stray lines, bad TLS.

In the spirit of Postfix's smtp-sink, ``FakeUpstream`` is a raw asyncio server on loopback that
speaks just enough SMTP, with every byte it sends under the test's control (``CaptureUpstream`` in
``gateway.testing`` is a real aiosmtpd server, which cannot misbehave). Each phase of a session can
be scripted::

    async with FakeUpstream(pipelining=True) as upstream:
        upstream.on("data", extra=b"250 2.0.0 stray\\r\\n", times=1)   # a line nobody asked for
        upstream.on("dot", reply=b"451 4.3.0 try later\\r\\n", times=1)
        ...  # deliver to upstream.host, upstream.port
        await upstream.wait_for(1)
        assert len(upstream.accepted) == 1

Phases: ``connect`` (``drop`` closes the connection at once, ``delay`` stalls before the greeting),
``greeting``, ``ehlo``, ``starttls``, ``mail``, ``rcpt``, ``data``, ``content`` (``delay`` stops
reading in the middle of the message), ``dot`` (the reply to the end of the message), ``rset``,
``noop``, ``quit``. A step replaces the reply (``reply``), sends bytes after it (``extra``), waits
first (``delay``), closes instead of replying (``drop``) or sends the reply in pieces (``split``: each
line cut in two, one piece per packet), for the next ``times`` occurrences, and for MAIL and RCPT
optionally only when the command line contains ``match`` (an address). ``refuse()`` stops listening
(connection refused) and ``listen()`` starts again on the same port. ``broken_tls`` offers STARTTLS
and answers the handshake with garbage. A message counts as accepted only when the reply to its
final dot was 2xx.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from types import TracebackType
from typing import Literal

Phase = Literal[
    "connect",
    "greeting",
    "ehlo",
    "starttls",
    "mail",
    "rcpt",
    "data",
    "content",
    "dot",
    "rset",
    "noop",
    "quit",
]

_DEFAULTS: dict[str, bytes] = {
    "greeting": b"220 fake.test ESMTP\r\n",
    "starttls": b"220 2.0.0 ready to start TLS\r\n",
    "mail": b"250 2.1.0 Ok\r\n",
    "rcpt": b"250 2.1.5 Ok\r\n",
    "data": b"354 End data with <CR><LF>.<CR><LF>\r\n",
    "dot": b"250 2.0.0 Ok: queued\r\n",
    "rset": b"250 2.0.0 Ok\r\n",
    "noop": b"250 2.0.0 Ok\r\n",
    "quit": b"221 2.0.0 Bye\r\n",
    "other": b"502 5.5.2 command not recognized\r\n",
}


@dataclass
class Step:
    """What the fake does at one phase instead of its default."""

    reply: bytes | None = None
    extra: bytes = b""
    delay: float = 0.0
    drop: bool = False
    split: bool = False
    times: int | None = None
    match: bytes | None = None  # only for command lines containing this (an address, say)


@dataclass(frozen=True)
class FakeMessage:
    """A message the fake accepted (its final dot got a 2xx reply)."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    content: bytes  # dot-unstuffed, CRLF line endings, as the client sent it
    session: int


@dataclass
class _Transaction:
    mail_from: str | None = None
    rcpt_tos: list[str] = field(default_factory=list)


class FakeUpstream:
    """A raw SMTP server on loopback that does what each scripted step says."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        pipelining: bool = False,
        broken_tls: bool = False,
        hostname: str = "fake.test",
    ) -> None:
        self.host = host
        self.port = port
        self.pipelining = pipelining
        self.broken_tls = broken_tls
        self.hostname = hostname
        self.accepted: list[FakeMessage] = []
        self.lines: list[bytes] = []
        """Every command line received (without CRLF), in order, across sessions."""
        self.sessions = 0
        self.dots = 0
        """Final dots received (whatever the reply)."""
        self._steps: dict[str, list[Step]] = {}
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._changed = asyncio.Condition()

    async def __aenter__(self) -> FakeUpstream:
        await self.listen()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        await self.refuse()

    async def listen(self) -> None:
        """Accept connections (on the same port as before, after ``refuse``)."""
        if self._server is None:
            self._server = await asyncio.start_server(
                self._session, self.host, self.port, reuse_address=True, limit=1 << 20
            )
            self.port = self._server.sockets[0].getsockname()[1]

    async def refuse(self) -> None:
        """Stop listening and cut every open connection: new connections are refused."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=5)
        if server is not None:
            await server.wait_closed()

    def on(
        self,
        phase: Phase,
        *,
        reply: bytes | None = None,
        extra: bytes = b"",
        delay: float = 0.0,
        drop: bool = False,
        split: bool = False,
        times: int | None = None,
        match: bytes | None = None,
    ) -> None:
        """Script ``phase`` for its next ``times`` occurrences (every one if None), or only for
        command lines that contain ``match``."""
        self._steps.setdefault(phase, []).append(Step(reply, extra, delay, drop, split, times, match))

    def clear(self) -> None:
        """Back to the default behaviour at every phase."""
        self._steps.clear()

    async def wait_for(self, count: int, within: float = 10.0) -> list[FakeMessage]:
        """Wait until ``count`` messages were accepted; return them all (TimeoutError after ``within`` s)."""
        async with asyncio.timeout(within), self._changed:
            await self._changed.wait_for(lambda: len(self.accepted) >= count)
        return list(self.accepted)

    # -- the session

    def _step(self, phase: str, line: bytes = b"") -> Step:
        steps = self._steps.get(phase, [])
        step = next((s for s in steps if s.match is None or s.match in line), None)
        if step is None:
            return Step()
        if step.times is not None:
            step.times -= 1
            if step.times <= 0:
                steps.remove(step)
        return step

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        self.sessions += 1
        try:
            await self._converse(reader, writer, self.sessions)
        except (ConnectionError, asyncio.IncompleteReadError, _Dropped):
            pass
        finally:
            self._tasks.discard(task)
            self._writers.discard(writer)
            writer.transport.abort()

    async def _answer(
        self, writer: asyncio.StreamWriter, phase: str, default: bytes | None = None, line: bytes = b""
    ) -> bytes:
        step = self._step(phase, line)
        if step.delay:
            await asyncio.sleep(step.delay)
        if step.drop:
            raise _Dropped
        reply = step.reply if step.reply is not None else _DEFAULTS[phase] if default is None else default
        if step.split:
            for line in reply.splitlines(keepends=True):
                for piece in (line[: len(line) // 2], line[len(line) // 2 :]):
                    writer.write(piece)
                    await writer.drain()
                    await asyncio.sleep(0.005)
        else:
            writer.write(reply)
        if step.extra:
            writer.write(step.extra)
        await writer.drain()
        return reply

    async def _converse(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, session: int
    ) -> None:
        await self._answer(writer, "connect", b"")
        await self._answer(writer, "greeting")
        transaction = _Transaction()
        while True:
            line = (await reader.readuntil(b"\r\n"))[:-2]
            self.lines.append(line)
            verb = line[:4].upper()
            if verb in (b"EHLO", b"HELO"):
                transaction = _Transaction()
                await self._answer(writer, "ehlo", self._ehlo(verb))
            elif verb == b"STAR" and self.broken_tls:
                await self._answer(writer, "starttls")
                writer.write(b"this is not a TLS handshake\r\n" * 4)
                await writer.drain()
                raise _Dropped
            elif verb == b"MAIL":
                reply = await self._answer(writer, "mail", line=line)
                transaction = _Transaction(_address(line) if reply.startswith(b"2") else None)
            elif verb == b"RCPT":
                reply = await self._answer(writer, "rcpt", line=line)
                if reply.startswith(b"2") and transaction.mail_from is not None:
                    transaction.rcpt_tos.append(_address(line))
            elif verb == b"DATA":
                reply = await self._answer(writer, "data")
                if reply.startswith(b"354"):
                    await self._content(reader, writer, transaction, session)
                    transaction = _Transaction()
            elif verb == b"RSET":
                transaction = _Transaction()
                await self._answer(writer, "rset")
            elif verb == b"NOOP":
                await self._answer(writer, "noop")
            elif verb == b"QUIT":
                await self._answer(writer, "quit")
                return
            else:
                await self._answer(writer, "other")

    def _ehlo(self, verb: bytes) -> bytes:
        if verb == b"HELO":
            return f"250 {self.hostname}\r\n".encode()
        lines = [self.hostname, "8BITMIME", "SIZE 10240000", "SMTPUTF8"]
        if self.pipelining:
            lines.append("PIPELINING")
        if self.broken_tls:
            lines.append("STARTTLS")
        last = len(lines) - 1
        return b"".join(f"250{'-' if i < last else ' '}{t}\r\n".encode() for i, t in enumerate(lines))

    async def _content(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        transaction: _Transaction,
        session: int,
    ) -> None:
        stall = self._step("content")
        lines: list[bytes] = []
        while True:
            line = await reader.readuntil(b"\r\n")
            if stall.delay and len(lines) == 1:
                await asyncio.sleep(stall.delay)
            if stall.drop and len(lines) == 1:
                raise _Dropped
            if line == b".\r\n":
                break
            lines.append(line[1:] if line.startswith(b".") else line)
        self.dots += 1
        reply = await self._answer(writer, "dot")
        if reply.startswith(b"2") and transaction.mail_from is not None and transaction.rcpt_tos:
            self.accepted.append(
                FakeMessage(transaction.mail_from, tuple(transaction.rcpt_tos), b"".join(lines), session)
            )
        async with self._changed:
            self._changed.notify_all()


class _Dropped(Exception):
    """A step said to close the connection."""


def _address(line: bytes) -> str:
    start, end = line.find(b"<"), line.find(b">")
    with contextlib.suppress(UnicodeDecodeError):
        return line[start + 1 : end].decode("utf-8") if 0 <= start < end else ""
    return ""
