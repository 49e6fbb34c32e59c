"""Relayed messages' places in their threads, on their way to the thread ledger (metadata only)."""

from __future__ import annotations

import logging
import threading

from gateway.logs import log_event
from gateway.mail.disposition import ThreadStep
from gateway.state.ports import LedgerPort

log = logging.getLogger("gateway.policy")

__all__ = ["ThreadStep", "ThreadSteps", "ledger_failed", "record_step"]


def record_step(ledger: LedgerPort, thread: ThreadStep, case: str | None) -> None:
    if thread.message_id is not None:
        ledger.record(
            thread.message_id,
            in_reply_to=thread.in_reply_to,
            references=thread.references,
            from_=thread.from_,
            to=thread.to,
            cc=thread.cc,
            case=case,
        )


def ledger_failed(queue_id: str, exc: Exception) -> None:
    log_event(log, "ledger-record-failed", logging.ERROR, queue_id=queue_id, error=type(exc).__name__)


class ThreadSteps:
    """Accepted messages' thread steps the ledger has not learnt yet, written in one ledger batch.

    A failure is logged, never raised: the messages are already accepted, and losing one thread step
    is not fatal.
    """

    def __init__(self, ledger: LedgerPort) -> None:
        self.ledger = ledger
        self._steps: list[tuple[str, ThreadStep, str | None]] = []  # (queue id, step, case)
        self._lock = threading.Lock()

    def add(self, queue_id: str, thread: ThreadStep, case: str | None) -> None:
        with self._lock:
            self._steps.append((queue_id, thread, case))

    def write(self) -> None:
        """Teach the ledger every step added so far (blocking)."""
        with self._lock:
            steps, self._steps = self._steps, []
        if not steps:
            return
        try:
            with self.ledger.batch():
                for queue_id, thread, case in steps:
                    try:
                        record_step(self.ledger, thread, case)
                    except Exception as exc:
                        ledger_failed(queue_id, exc)
        except Exception as exc:  # the commit itself failed: none of the batch was recorded
            for queue_id, _thread, _case in steps:
                ledger_failed(queue_id, exc)
