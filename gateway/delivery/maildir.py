"""The embedded default destination: a local Maildir that shows what the gateway would have sent.

Standard layout (``tmp/``, ``new/``, ``cur/``; folders 0700, files 0600). A message is written to
``tmp/``, flushed, renamed into ``new/`` and the folder is flushed, like a local delivery agent.
One file per message, whatever the number of recipients, with ``Return-Path`` and one
``X-Original-To`` per envelope recipient prepended to the exact bytes received.

File names are derived from the queue id, so delivering the same message again after a crash
finds the copy already in ``new/`` (or in ``cur/`` if no mail client has changed its flags yet)
instead of writing a second one.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import socket
from collections.abc import Sequence
from pathlib import Path

from gateway.delivery.model import AttemptResult, RecipientResult
from gateway.state.files import fsync_directory, make_private_directory
from gateway.state.spool import SpoolEnvelope, io_executor

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class Maildir:
    """A Maildir folder the gateway delivers into. Blocking: call ``deliver`` from a thread."""

    def __init__(self, path: Path, *, hostname: str | None = None) -> None:
        self.path = path
        # Maildir names must not contain '/' or ':'; the convention escapes them as octal.
        host = hostname or socket.gethostname() or "localhost"
        self._host = host.replace("/", r"\057").replace(":", r"\072")

    def ensure(self) -> None:
        """Create the Maildir's folders (0700) if they are missing."""
        for folder in (self.path, self.path / "tmp", self.path / "new", self.path / "cur"):
            make_private_directory(folder)

    def file_name(self, envelope: SpoolEnvelope) -> str:
        return f"{int(envelope.received_at)}.Q{envelope.queue_id}.{self._host}"

    def deliver(self, envelope: SpoolEnvelope, content: bytes, recipients: Sequence[str]) -> Path:
        """Durably store one copy of the message for ``recipients``; return its path in ``new/``."""
        self.ensure()
        name = self.file_name(envelope)
        final = self.path / "new" / name
        if final.exists() or (self.path / "cur" / f"{name}:2,").exists():
            return final
        tmp = self.path / "tmp" / f"{name}.{os.getpid()}"
        prefix = [f"Return-Path: <{_header_safe(envelope.mail_from)}>\r\n"]
        prefix += [f"X-Original-To: {_header_safe(address)}\r\n" for address in recipients]
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            try:
                os.fchmod(fd, 0o600)
                _write_all(fd, "".join(prefix).encode("utf-8") + content)
                os.fsync(fd)
            finally:
                os.close(fd)
            tmp.rename(final)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        fsync_directory(self.path / "new")
        return final


def _header_safe(address: str) -> str:
    # Envelope addresses never hold line breaks (intake refuses them); never let one start a header.
    return _CONTROL.sub("?", address)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


class MaildirTransport:
    """The embedded default: every message lands in the local Maildir."""

    description = "maildir"
    out_of_step = 0

    def __init__(self, maildir: Maildir) -> None:
        self._maildir = maildir

    async def send(self, envelope: SpoolEnvelope, content: bytes, recipients: Sequence[str]) -> AttemptResult:
        try:
            path = await asyncio.get_running_loop().run_in_executor(
                io_executor(), self._maildir.deliver, envelope, content, recipients
            )
        except OSError as exc:
            reply = f"451 4.3.0 cannot write to the local maildir {self._maildir.path}: {exc.strerror or exc}"
            return AttemptResult(tuple(RecipientResult(r, "deferred", reply) for r in recipients))
        reply = f"250 2.0.0 delivered to the local maildir as new/{path.name}"
        return AttemptResult(tuple(RecipientResult(r, "delivered", reply) for r in recipients))

    async def close_idle(self, older_than: float) -> None:
        return None

    async def close(self) -> None:
        return None

    def connections_open(self) -> int:
        return 0

    def connections_made(self) -> int:
        return 0
