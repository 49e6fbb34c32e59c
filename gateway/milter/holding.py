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
    """Brings Postfix's hold queue in line with the review desk's records (one ``postsuper`` per round).

    A released record's copy is released, a rejected, cancelled or expired one's deleted; each once
    per run of the milter (after a restart once more, which finds nothing left to do).
    """

    def __init__(self, queue: PostfixQueue, records: Callable[[], list[HoldRecord]]) -> None:
        self.queue = queue
        self.records = records
        self._done: set[str] = set()
        self._lock = asyncio.Lock()

    async def round(self) -> None:
        """``postsuper -H`` the approved holds, then ``postsuper -d`` the refused ones."""
        async with self._lock:
            records = await asyncio.to_thread(self.records)
            for flag, statuses, event in (
                ("-H", RELEASED_STATUSES, "milter.released"),
                ("-d", DELETED_STATUSES, "milter.deleted"),
            ):
                due = [r.reference for r in records if r.status in statuses and r.reference not in self._done]
                if due and await self.queue.run(flag, due):
                    self._done.update(due)
                    for reference in due:
                        log_event(log, event, reference=reference)
