"""The holds folder: held messages' records and bytes on disk, their reply-token grants, and the lock.

A message held for review is stored in ``<state_dir>/holds/`` (folder 0700, files 0600, written to a
temporary file, fsynced, renamed, folder fsynced) as three files:

``<ref>.json``      what the review needs: envelope, findings (never ``private_detail``), the
                    changes the gateway will make, the eligible reviewers, hashes of the reply
                    tokens (never the tokens), the decisions so far, expiry and status
``<ref>.original``  the exact bytes the sender submitted (attached to review requests; returned
                    to the sender on rejection)
``<ref>.release``   the exact bytes to relay on approval: the policy's rewrite already applied
                    and the relay header on top; the approver header is added at release

``<ref>`` is the submission's queue id, the reference the sender is told. Decisions take a lock on
the folder (``flock``), so the running gateway and ``conduct-gateway review`` can decide
concurrently and the first decision wins.

The audit trail is owned by the running gateway (it holds an exclusive lock). Decisions made by
the CLI while the gateway runs are left for it to append at its periodic review task (the audit
port's "append later", ``gateway.state.audit_later``).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from gateway.errors import GatewayError
from gateway.logs import log_event
from gateway.policy.reviewers import Reviewer
from gateway.state.files import atomic_write, fsync_directory, locked, make_private_directory
from gateway.state.layout import StateLayout

log = logging.getLogger("gateway.state.holds")

REFERENCE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")

Status = Literal["held", "released", "rejected", "cancelled", "expired"]


class ReviewError(GatewayError):
    """A review action that cannot be done (unknown reference, not allowed, already decided)."""


def token_hash(token: str) -> str:
    """What is stored on disk instead of a reply token (grants are keyed by it)."""
    return hashlib.sha256(token.lower().encode("ascii", "replace")).hexdigest()


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HeldFinding(_Model):
    rule: str
    code: str
    where: str
    kind: str
    advice: str
    action: str
    recipients: tuple[str, ...] = ()


class Grant(_Model):
    """One reply token (stored by its hash): whose it is and whether it was used."""

    holder: str  # lower-cased address
    role: Literal["reviewer", "sender"]
    used_at: float | None = None


class Decision(_Model):
    member: str  # the deciding member's address ("" for the gateway itself: expiry)
    name: str
    decision: Literal["approve", "reject", "cancel", "expire"]
    reason: str = ""
    at: float
    via: Literal["mail", "cli", "gateway"]


class HoldRecord(_Model):
    """``<ref>.json``: everything about one held message but its bytes."""

    format: Literal[1] = 1
    reference: str
    status: Status = "held"
    created_at: float
    expires_at: float
    sender: str  # MAIL FROM
    sender_account: str  # the authenticated account
    sender_name: str
    rcpt_tos: tuple[str, ...]  # as submitted
    release_rcpt_tos: tuple[str, ...]  # with the recipients the policy adds
    message_id: str | None = None
    subject: str = ""
    findings: tuple[HeldFinding, ...] = ()
    changes: tuple[str, ...] = ()  # what the gateway will change, in plain words
    policy_version: str = ""
    case: str | None = None
    # Every case the message concerns (its findings' and its thread's); ``case`` is the first.
    cases: tuple[str, ...] = ()
    required_approvals: int = 1
    reviewers: tuple[Reviewer, ...] = ()
    grants: dict[str, Grant] = {}
    decisions: tuple[Decision, ...] = ()
    release_queue_id: str | None = None
    released: bool = False  # the release is durably in the spool
    confirmed: bool = False  # the sender was answered 250 (notices and requests are spooled)

    @property
    def approvals(self) -> tuple[Decision, ...]:
        return tuple(d for d in self.decisions if d.decision == "approve")

    @property
    def all_cases(self) -> tuple[str, ...]:
        return self.cases or ((self.case,) if self.case else ())

    def counted_approvers(self) -> tuple[str, ...]:
        """Distinct approving members who are still eligible reviewers (a former member's or a
        since-conflicted member's approval no longer counts)."""
        eligible = {reviewer.address for reviewer in self.reviewers}
        return tuple(dict.fromkeys(d.member for d in self.approvals if d.member in eligible))

    @property
    def final(self) -> Decision | None:
        return next((d for d in reversed(self.decisions) if d.decision != "approve"), None) or (
            self.approvals[-1] if self.status == "released" and self.approvals else None
        )

    def reasons(self) -> str:
        codes = dict.fromkeys(f.code for f in self.findings if f.action == "hold")
        return (
            ", ".join(codes) or ", ".join(dict.fromkeys(f.code for f in self.findings)) or "review required"
        )


# --- the store -----------------------------------------------------------------------------------------


class HoldStore:
    """The holds folder. Safe to use from the gateway and the CLI at the same time."""

    def __init__(self, root: Path) -> None:
        self.root = root
        try:
            make_private_directory(root)
        except OSError as exc:
            raise ReviewError(f"cannot create the holds folder {root}: {exc.strerror}") from None

    @classmethod
    def in_state_dir(cls, state_dir: Path) -> HoldStore:
        return cls(StateLayout(state_dir).holds)

    def _path(self, reference: str, suffix: str) -> Path:
        if not REFERENCE.match(reference):
            raise ReviewError(f"{reference!r} is not a hold reference (see: conduct-gateway review list)")
        return self.root / f"{reference}.{suffix}"

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Exclusive across processes and threads (each call opens its own file description)."""
        with locked(self.root / ".lock"):
            yield

    def create(self, record: HoldRecord, original: bytes, release: bytes) -> None:
        """Store a new hold durably (bytes first, the record last: a record always has its bytes)."""
        try:
            self._write(self._path(record.reference, "original"), original, sync_dir=False)
            self._write(self._path(record.reference, "release"), release, sync_dir=False)
            self._write(self._path(record.reference, "json"), _encode(record))
        except OSError as exc:
            raise ReviewError(f"cannot store held message {record.reference}: {exc.strerror}") from None

    def save(self, record: HoldRecord) -> None:
        try:
            self._write(self._path(record.reference, "json"), _encode(record))
        except OSError as exc:
            raise ReviewError(f"cannot update held message {record.reference}: {exc.strerror}") from None

    def discard(self, reference: str) -> None:
        for suffix in ("json", "release", "original"):
            with contextlib.suppress(FileNotFoundError):
                self._path(reference, suffix).unlink()
        fsync_directory(self.root)

    def get(self, reference: str) -> HoldRecord:
        path = self._path(reference, "json")
        try:
            return _decode(path.read_bytes(), path)
        except FileNotFoundError:
            raise ReviewError(f"no held message {reference!r} (see: conduct-gateway review list)") from None

    def original(self, reference: str) -> bytes:
        return self._path(reference, "original").read_bytes()

    def release_content(self, reference: str) -> bytes:
        return self._path(reference, "release").read_bytes()

    def records(self) -> list[HoldRecord]:
        """Every readable hold, oldest first (references sort by arrival time)."""
        found = []
        for path in sorted(self.root.glob("*.json")):
            try:
                found.append(_decode(path.read_bytes(), path))
            except (OSError, ReviewError) as exc:
                log_event(log, "hold-unreadable", logging.ERROR, file=path.name, error=str(exc))
        return found

    def find_token(self, token: str) -> tuple[HoldRecord, Grant] | None:
        digest = token_hash(token)
        for record in self.records():
            grant = record.grants.get(digest)
            if grant is not None:
                return record, grant
        return None

    def _write(self, path: Path, data: bytes, *, sync_dir: bool = True) -> None:
        atomic_write(path, data, sync_directory=sync_dir)


def decided_at(record: HoldRecord) -> float:
    """When the hold's outcome was decided (its last decision; creation time if it has none)."""
    return max((decision.at for decision in record.decisions), default=record.created_at)


def _encode(record: HoldRecord) -> bytes:
    return record.model_dump_json(indent=1).encode("utf-8")


def _decode(data: bytes, path: Path) -> HoldRecord:
    try:
        return HoldRecord.model_validate_json(data)
    except ValidationError as exc:
        raise ReviewError(f"{path}: not a readable hold record ({exc.error_count()} problems)") from None
