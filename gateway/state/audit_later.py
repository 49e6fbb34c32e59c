"""The audit trail as a store (the ``AuditPort`` of the files backend), with "append later".

The running gateway holds the trail (an exclusive lock). An admin action taken meanwhile on the
command line (a review decision, a case command, expunging a case's audit entries) must still reach
it, so the CLI leaves it in ``<state_dir>/audit-later/`` (one JSON file per action, 0600, written atomically,
named by time so they sort oldest first) and the gateway carries it out at its next review round
(``drain_later``): an entry is appended with ``recorded_later: true``; an expunge request forgets
the salts it names. Without a running gateway the CLI acts on the trail directly.

Actions left by earlier versions in ``holds/audit-outbox/`` and ``audit/expunge-pending/`` are
carried out the same way, in the same order.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.errors import AuditError
from gateway.logs import log_event
from gateway.state.audit import AuditTrail
from gateway.state.audit_format import JsonValue
from gateway.state.audit_reading import (
    StoredEntry,
    Verification,
    entries_about,
    read_entries,
    read_salts,
    verify,
)
from gateway.state.files import atomic_write, private_directory
from gateway.state.ports import AuditWriterPort

log = logging.getLogger("gateway.state.audit_later")

# Review decisions made on the command line were queued before entries carried their event name.
REVIEW_EVENT = "review"
_DRAINING = threading.Lock()


@dataclass(frozen=True)
class FileAudit:
    """The audit folder, and where actions wait while a gateway holds it."""

    directory: Path
    later: Path
    # Folders of the two mechanisms ``later`` replaced: still drained, never written.
    holds_outbox: Path | None = None
    expunge_pending: Path | None = None

    def open(self, *, deferred: bool = False) -> AuditWriterPort:
        return AuditTrail.open(self.directory, deferred=deferred)

    def _open_unless_held(self) -> AuditTrail | None:
        try:
            return AuditTrail.open(self.directory)
        except AuditError:
            return None  # the running gateway holds it

    def record(self, event: str, fields: Mapping[str, JsonValue]) -> None:
        trail = self._open_unless_held()
        if trail is None:
            self.append_later(event, fields)
            return
        with trail:
            trail.append(event, fields)

    def append_later(self, event: str, fields: Mapping[str, JsonValue]) -> None:
        try:
            self._leave({"event": event, "fields": dict(fields)})
        except OSError as exc:
            raise AuditError(
                f"{self.later}: cannot record this action for the audit trail ({exc.strerror}). "
                "Tell the gateway's administrators: case actions must be on record."
            ) from None

    def forget(
        self, case: str, queue_ids: Iterable[str], writer: AuditWriterPort | None = None
    ) -> int | None:
        wanted = set(queue_ids)
        if writer is not None:
            return writer.forget_salts(self.entries_about(case, wanted))
        trail = self._open_unless_held()
        if trail is None:
            self._leave({"forget": {"case": case, "queue_ids": sorted(wanted)}})
            return None
        with trail:
            return trail.forget_salts(self.entries_about(case, wanted))

    def _leave(self, item: Mapping[str, Any]) -> None:
        private_directory(self.later)
        name = f"{time.time_ns():020d}-{secrets.token_hex(4)}.json"
        atomic_write(self.later / name, json.dumps(item, sort_keys=True).encode())

    def _waiting(self) -> list[tuple[str, Path, Path]]:
        return sorted(
            (path.name, path, folder)
            for folder in (self.later, self.holds_outbox, self.expunge_pending)
            if folder is not None and folder.is_dir()
            for path in folder.glob("*.json")
        )

    def waiting(self) -> list[str]:
        return [name for name, _path, _folder in self._waiting()]

    def waiting_entries(self) -> Iterator[tuple[str, dict[str, JsonValue]]]:
        """The entries waiting to be appended (event, fields), oldest first; unreadable ones skipped."""
        for _name, path, folder in self._waiting():
            try:
                action = _action(json.loads(path.read_bytes()), legacy_outbox=folder == self.holds_outbox)
            except (OSError, ValueError, KeyError, TypeError):
                continue  # drained meanwhile, or unreadable (logged by the drain)
            if isinstance(action, _Append):
                yield action.event, action.fields

    def drain_later(self, writer: AuditWriterPort) -> int:
        """Carry out every waiting action, oldest first; unreadable ones are logged and kept."""
        with _DRAINING:  # the review round and the expunge round both drain: never one file twice
            return self._drain(writer)

    def _drain(self, writer: AuditWriterPort) -> int:
        done = 0
        for _name, path, folder in self._waiting():
            try:
                item = json.loads(path.read_bytes())
                action = _action(item, legacy_outbox=folder == self.holds_outbox)
            except (OSError, ValueError, KeyError, TypeError):
                pending = folder == self.expunge_pending
                unreadable = "expunge-request-unreadable" if pending else "audit-outbox-unreadable"
                log_event(log, unreadable, logging.ERROR, file=path.name)
                continue
            if isinstance(action, _Forget):
                forgotten = writer.forget_salts(self.entries_about(action.case, action.queue_ids))
                path.unlink()
                log_event(log, "case-expunged-audit", case=action.case, audit=forgotten)
            else:
                writer.append(action.event, {**action.fields, "recorded_later": True})
                path.unlink()
            done += 1
        return done

    def entries(self) -> Iterator[StoredEntry]:
        return read_entries(self.directory)

    def salts(self) -> dict[int, bytes | None]:
        return read_salts(self.directory)

    def verify(self) -> Verification:
        return verify(self.directory)

    def entries_about(self, case: str, queue_ids: Iterable[str] = ()) -> list[int]:
        return entries_about(self.directory, case, queue_ids)


@dataclass(frozen=True)
class _Append:
    event: str
    fields: dict[str, JsonValue]


@dataclass(frozen=True)
class _Forget:
    case: str
    queue_ids: frozenset[str]


def _action(item: Any, *, legacy_outbox: bool) -> _Append | _Forget:
    """What a waiting file asks for (KeyError, TypeError or ValueError if it cannot be read)."""
    if not isinstance(item, dict):
        raise TypeError("not an object")
    if legacy_outbox:  # the fields themselves, with the event name under ``_event`` (or none)
        fields = dict(item)
        event = fields.pop("_event", REVIEW_EVENT)
        return _Append(event if isinstance(event, str) else REVIEW_EVENT, fields)
    request = item.get("forget", item)  # expunge-pending held the request itself
    if "event" in item:
        if not isinstance(item["event"], str) or not isinstance(item["fields"], dict):
            raise TypeError("not an audit entry")
        return _Append(item["event"], item["fields"])
    return _Forget(str(request["case"]), frozenset(str(q) for q in request["queue_ids"]))
