"""The holds port: held messages with their review tokens (Mailman's pendings: add, confirm, evict).

With the port come the hold's record types and ``ReviewError``, so the CLI names them without
reaching into the file store (``gateway.state.holds``).
"""

from __future__ import annotations

import contextlib
from typing import Protocol

from gateway.state.holds import Grant, HoldRecord, ReviewError

__all__ = ["Grant", "HoldRecord", "HoldsPort", "ReviewError"]


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
