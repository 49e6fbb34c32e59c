"""The holds port: held messages with their review tokens (Mailman's pendings: add, confirm, evict).

A module of its own while the hold records still live in the review package (issue 15 moves them
into the state layer): only ``open_state`` needs it, so the other ports do not reach the review code.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from gateway.state.holds import Grant, HoldRecord


class HoldsPort(Protocol):
    """Held messages with their review tokens (Mailman's pendings: add, confirm, evict)."""

    def locked(self) -> contextlib.AbstractContextManager[None]:
        """Exclusive across processes: the first decision wins."""
        ...

    def create(self, record: HoldRecord, original: bytes, release: bytes) -> None: ...

    def save(self, record: HoldRecord) -> None: ...

    def discard(self, reference: str) -> None: ...

    def get(self, reference: str) -> HoldRecord: ...

    def original(self, reference: str) -> bytes: ...

    def release_content(self, reference: str) -> bytes: ...

    def records(self) -> list[HoldRecord]: ...

    def find_token(self, token: str) -> tuple[HoldRecord, Grant] | None: ...
