"""Postfix's hold queue as the review desk decides: approved holds released (``postsuper -H``) exactly
once, rejected, cancelled and expired ones deleted (``postsuper -d``).

Why ``postsuper -H`` and not re-injecting the approved bytes: Postfix moves a held queue file back
to the incoming queue with one rename, and a second ``-H`` for the same id finds nothing in the hold
queue and does nothing. So a crash between the release and its record only leads to the same
``-H`` again at the next round, never to a second copy. Re-injecting (``sendmail``, or our own
delivery) has a window between the MTA's 250 and our record of it in which a crash sends the
message twice, and leaves the held copy behind to be deleted as well. The copy in the hold queue
already carries every change the decision announced: the milter made them before quarantining it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from gateway.logs import log_event
from gateway.state.holds import HoldRecord

log = logging.getLogger("gateway.milter")

RELEASED_STATUSES = frozenset({"released"})
DELETED_STATUSES = frozenset({"rejected", "cancelled", "expired"})
POSTSUPER_TIMEOUT = 60.0


@dataclass(frozen=True)
class PostfixQueue:
    """Runs ``postsuper`` for one Postfix instance (``command``, e.g. ``sudo -n postsuper``)."""

    command: tuple[str, ...]
    config_directory: str | None = None

    async def run(self, flag: str, references: Sequence[str]) -> bool:
        """``postsuper FLAG -`` with the queue ids on standard input; False (logged) if it failed."""
        if not references:
            return True
        arguments = [*self.command]
        if self.config_directory:
            arguments += ["-c", self.config_directory]
        arguments += [flag, "-"]
        try:
            process = await asyncio.create_subprocess_exec(
                *arguments,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
            )
            async with asyncio.timeout(POSTSUPER_TIMEOUT):
                _out, errors = await process.communicate("".join(f"{r}\n" for r in references).encode())
        except (OSError, TimeoutError) as exc:
            log_event(log, "milter.postsuper_failed", logging.ERROR, flag=flag, error=type(exc).__name__)
            return False
        if process.returncode != 0:
            detail = errors.decode("utf-8", "replace").strip()[:300]
            log_event(
                log,
                "milter.postsuper_failed",
                logging.ERROR,
                flag=flag,
                status=process.returncode,
                detail=detail,
            )
            return False
        return True


class HoldQueue:
    """Brings Postfix's hold queue in line with the review desk's records (one ``postsuper`` per kind
    of change per round).

    An approval decided by reply (through the milter) releases Postfix's copy. One decided with the
    CLI (``conduct-gateway review approve``) put the approved copy in the gateway's own queue, as in
    gateway mode: that copy is delivered and Postfix's is deleted, so either way exactly one goes out.
    Rejected, cancelled and expired holds are deleted. Each is done once per run of the milter (after a
    restart once more, which finds nothing left to do).
    """

    def __init__(
        self,
        queue: PostfixQueue,
        records: Callable[[], list[HoldRecord]],
        spooled: Callable[[str], bool],
    ) -> None:
        self.queue = queue
        self.records = records
        self.spooled = spooled  # whether the gateway's own queue has this queue id
        self._done: set[str] = set()
        self._lock = asyncio.Lock()

    def _due(self, records: list[HoldRecord]) -> tuple[list[str], list[str]]:
        release: list[str] = []
        delete: list[str] = []
        for record in records:
            if record.reference in self._done:
                continue
            if record.status in RELEASED_STATUSES:
                queued = record.release_queue_id is not None and self.spooled(record.release_queue_id)
                (delete if queued else release).append(record.reference)
            elif record.status in DELETED_STATUSES:
                delete.append(record.reference)
        return release, delete

    async def round(self) -> None:
        """``postsuper -H`` the holds approved by reply, then ``postsuper -d`` the others decided."""
        async with self._lock:
            release, delete = self._due(await asyncio.to_thread(self.records))
            for flag, due, event in (("-H", release, "milter.released"), ("-d", delete, "milter.deleted")):
                if due and await self.queue.run(flag, due):
                    self._done.update(due)
                    for reference in due:
                        log_event(log, event, reference=reference)
