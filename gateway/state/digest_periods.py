"""The digest periods of the files backend: one gateway per state folder, the audit trail as record.

The gateway holding the trail is the only one (the trail's lock), so it may send any period not
older than the newest recorded one (``claim``). Its ``digest`` events are left "for later" and
appended at its next review round; a restart in between must still see them, so ``recorded``
reads the entries still waiting as well as the ones this process recorded (the schedule reads the
trail itself once at start): a period is recorded once, never again after a restart, and never a
period older than the newest recorded one. Nothing here grows with the periods (one end per kind);
the trail is the record.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from gateway.state.audit_format import JsonValue
from gateway.state.audit_later import FileAudit

DIGEST_EVENT = "digest"


def period_end(fields: Mapping[str, JsonValue]) -> datetime | None:
    """The ``end`` of a ``digest`` event's period, or None if it cannot be read."""
    try:
        return datetime.fromisoformat(str(fields.get("end", "")))
    except ValueError:
        return None


@dataclass
class FileDigestPeriods:
    """The ``DigestPeriodsPort`` of the files backend."""

    audit: FileAudit
    _recorded: dict[str, datetime] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def recorded(self, kind: str) -> datetime | None:
        ends = [self._recorded[kind]] if kind in self._recorded else []
        for event, fields in self.audit.waiting_entries():
            if event == DIGEST_EVENT and fields.get("period") == kind and (end := period_end(fields)):
                ends.append(end)
        return max(ends, default=None)

    def claim(self, kind: str, start: datetime, end: datetime, owner: str, lease: float) -> bool:
        # The only gateway on this state folder: any period not behind the newest recorded one.
        last = self.recorded(kind)
        return last is None or end > last

    def record(self, kind: str, end: datetime, fields: Mapping[str, JsonValue]) -> bool:
        with self._lock:
            last = self.recorded(kind)
            if last is not None and end <= last:
                return False
            self.audit.append_later(DIGEST_EVENT, fields)
            self._recorded[kind] = end
            return True
