"""The delivery worker's timetable: which messages are ready, which wait for a time, which are in flight."""

from __future__ import annotations

import collections
import heapq
from collections.abc import Container

from gateway.state.spool import QueueState


class Schedule:
    """Messages known to the worker, each in exactly one place: ready, scheduled, or active.

    ``where`` holds the folder of every waiting message (ready or scheduled); ``due`` the time of
    every scheduled one. The heap may hold stale entries (rescheduled or taken): ``due`` decides.
    """

    def __init__(self) -> None:
        self.ready: collections.deque[str] = collections.deque()
        self.where: dict[str, QueueState] = {}  # waiting messages (ready or scheduled) -> their folder
        self.due: dict[str, float] = {}  # scheduled messages -> next attempt (clock time)
        self.active: set[str] = set()
        self._heap: list[tuple[float, str]] = []

    def enqueue(self, queue_id: str, state: QueueState) -> None:
        """Make ``queue_id`` ready now, unless it is in flight or already ready."""
        if queue_id in self.active or (queue_id in self.where and queue_id not in self.due):
            return
        self.due.pop(queue_id, None)  # sent back to incoming/ by `queue retry`: try it now
        self.where[queue_id] = state
        self.ready.append(queue_id)

    def schedule(self, queue_id: str, state: QueueState, when: float) -> None:
        """Try ``queue_id`` (in folder ``state``) again at ``when`` (clock time)."""
        self.where[queue_id] = state
        self.due[queue_id] = when
        heapq.heappush(self._heap, (when, queue_id))

    def promote_due(self, now: float) -> float | None:
        """Move due messages to the ready queue; return when the next one is due."""
        heap = self._heap
        while heap:
            when, queue_id = heap[0]
            if self.due.get(queue_id) != when:
                heapq.heappop(heap)  # stale: rescheduled or already taken
                continue
            if when > now:
                return when
            heapq.heappop(heap)
            del self.due[queue_id]
            self.ready.append(queue_id)
        return None

    def next_ready(self, *, only: Container[str] | None = None) -> str | None:
        """The next ready message (restricted to ``only`` when given); None if there is none."""
        if only is None:
            return self.ready.popleft()
        queue_id = next((q for q in self.ready if q in only), None)
        if queue_id is not None:
            self.ready.remove(queue_id)
        return queue_id

    def start(self, queue_id: str) -> QueueState:
        """Mark a message taken from the ready queue as in flight; return its folder."""
        state = self.where.pop(queue_id)
        self.active.add(queue_id)
        return state

    def finish(self, queue_id: str) -> None:
        self.active.discard(queue_id)
