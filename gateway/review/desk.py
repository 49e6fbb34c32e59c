"""Second-member review: held messages kept on disk, review requests, decisions by reply or CLI, expiry.

A message whose verdict is ``hold`` is not relayed. It is stored in ``<state_dir>/holds/`` (folder
0700, files 0600, written to a temporary file, fsynced, renamed, folder fsynced) as three files:

``<ref>.json``      what the review needs: envelope, findings (never ``private_detail``), the
                    changes the gateway will make, the eligible reviewers, hashes of the reply
                    tokens (never the tokens), the decisions so far, expiry and status
``<ref>.original``  the exact bytes the sender submitted (attached to review requests; returned
                    to the sender on rejection)
``<ref>.release``   the exact bytes to relay on approval: the policy's rewrite already applied
                    and the relay header on top; the approver header is added at release

``<ref>`` is the submission's queue id, the reference the sender is told. Each reviewer, and the
sender, gets a reply address ``<local>+TOKEN@<domain>`` whose TOKEN (200 random bits, base32) is
bound to that message and that person and works once. The gateway consumes mail to such an address
itself (``ReviewDesk.intercept``); it is never relayed. Decisions take a lock on the folder
(``flock``), so the running gateway and ``conduct-gateway review`` can decide concurrently and the
first decision wins. ``required_approvals`` (default 1) distinct eligible members must approve
before the message is released; one rejection ends the review.

The audit trail is owned by the running gateway (it holds an exclusive lock). Decisions made by
the CLI while the gateway runs are written to ``holds/audit-outbox/`` and appended to the trail by
the gateway's periodic review task (``drain_audit_outbox``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import email
import email.policy
import fcntl
import hashlib
import json
import logging
import os
import re
import secrets
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formataddr
from enum import StrEnum
from pathlib import Path
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict, ValidationError

from gateway.decision.notices import (
    Letter,
    NoticeFinding,
    NoticeKind,
    NoticeLimiter,
    NoticeRefused,
    Notices,
    finding_lines,
)
from gateway.decision.screening import Accept, Outgoing, Refuse, Ruling, Submission
from gateway.decision.verdict_replies import APPROVED_HEADER, held_lines
from gateway.errors import AuditError, GatewayError
from gateway.logs import log_event
from gateway.policy.engine import CompiledPolicy
from gateway.policy.html import render_html
from gateway.settings import ReviewSettings
from gateway.state.accounts import Accounts
from gateway.state.audit import AuditTrail, JsonValue
from gateway.state.spool import Spool, SpoolEnvelope, fsync_directory, make_private_directory

log = logging.getLogger("gateway.review.desk")

HOLDS_DIRNAME = "holds"
OUTBOX_DIRNAME = "audit-outbox"
TOKEN_BYTES = 25  # 200 bits; base32 without padding: 40 characters, case-insensitive
AUDIT_EVENT = "review"
# A hold still unconfirmed this long after it was stored belongs to a transaction that never ended.
ABANDONED_HOLD_GRACE = 600.0
_REFERENCE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")
_TOKEN = re.compile(r"^[a-z2-7]{40}$")
_QUOTED = re.compile(r"^\s*>")
_ATTRIBUTION = re.compile(r"^\s*(on .{0,200} wrote:|-----\s*original message\s*-----)\s*$", re.IGNORECASE)
_COMMAND_WORDS = {"approve": "approve", "approved": "approve", "reject": "reject", "rejected": "reject"}
_COMMAND_WORDS["cancel"] = "cancel"

Status = Literal["held", "released", "rejected", "cancelled", "expired"]
Command = Literal["approve", "reject", "cancel"]


class ReviewError(GatewayError):
    """A review action that cannot be done (unknown reference, not allowed, already decided)."""


# --- tokens and reply addresses -----------------------------------------------------------------------


def new_token() -> str:
    """An unguessable reply token: 200 random bits in lower-case base32 (safe in any local part)."""
    return base64.b32encode(secrets.token_bytes(TOKEN_BYTES)).decode("ascii").lower()


def token_hash(token: str) -> str:
    """What is stored on disk instead of the token."""
    return hashlib.sha256(token.lower().encode("ascii", "replace")).hexdigest()


def review_domain(settings: ReviewSettings, policy: CompiledPolicy) -> str:
    """The domain of reply addresses: the setting, else the conduct address's domain."""
    return (settings.address_domain or policy.conduct_address.rpartition("@")[2]).lower()


def reply_address(settings: ReviewSettings, policy: CompiledPolicy, token: str) -> str:
    return f"{settings.local_part}+{token}@{review_domain(settings, policy)}"


def is_review_address(address: str, settings: ReviewSettings, policy: CompiledPolicy) -> bool:
    """Any address of the review kind (valid token or not): mail to it is never relayed."""
    local, _, domain = address.rpartition("@")
    local = local.lower()
    return domain.lower() == review_domain(settings, policy) and (
        local == settings.local_part or local.startswith(settings.local_part + "+")
    )


def token_of(address: str, settings: ReviewSettings) -> str | None:
    local = address.rpartition("@")[0].lower()
    prefix = settings.local_part + "+"
    token = local[len(prefix) :] if local.startswith(prefix) else ""
    return token if _TOKEN.match(token) else None


# --- reading a decision out of a reply ----------------------------------------------------------------


@dataclass(frozen=True)
class ReplyCommand:
    command: Command
    reason: str = ""


def reply_text(content: bytes) -> str:
    """The text a person wrote at the top of a reply: text/plain, else the rendered text/html."""
    message = email.message_from_bytes(content, policy=email.policy.default)
    if not isinstance(message, EmailMessage):
        return ""
    try:
        body = message.get_body(preferencelist=("plain", "html"))
        if body is None:
            return ""
        text = body.get_content()
    except Exception:  # the header parser raises on malformed fields: an unreadable reply, not our fault
        return ""
    if not isinstance(text, str):
        return ""
    if body.get_content_type() == "text/html":
        text = render_html(text).body_text
    return text


def parse_command(text: str) -> ReplyCommand | None:
    """The first written line's command: ``approve``, ``reject <reason>`` or ``cancel``.

    Case does not matter, trailing punctuation is ignored, quoted text and signatures are never
    read. A reason may also follow on the next lines (up to a blank line, quote or signature).
    """
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    for index, line in enumerate(lines):
        stripped = line.strip().lstrip("\ufeff")
        if not stripped:
            continue
        if stripped in ("--", "-- ") or _QUOTED.match(line) or _ATTRIBUTION.match(stripped):
            return None
        word, _, rest = stripped.partition(" ")
        command = _COMMAND_WORDS.get(word.lower().rstrip(".!:,;"))
        if command is None:
            return None
        reason = rest.strip().lstrip(":-").strip()
        if command == "reject" and not reason:
            following: list[str] = []
            for more in lines[index + 1 :]:
                if not more.strip() and not following:
                    continue  # blank lines between "reject" and its reason
                if (
                    not more.strip()
                    or more.strip() == "--"
                    or _QUOTED.match(more)
                    or _ATTRIBUTION.match(more)
                ):
                    break
                following.append(more.strip())
            reason = " ".join(following)
        return ReplyCommand(command, " ".join(reason.split())[:1000])  # type: ignore[arg-type]
    return None


# --- the committee -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Member:
    """A committee member as the policy names them: display name and every address."""

    name: str
    addresses: tuple[str, ...]  # lower-cased; the first is where review requests go

    @property
    def key(self) -> str:
        return self.addresses[0]


def committee_members(policy: CompiledPolicy) -> tuple[Member, ...]:
    return tuple(
        Member(member.name, tuple(a.lower() for a in member.addresses))
        for member in policy.document.organisation.members
    )


def member_of(policy: CompiledPolicy, address: str) -> Member | None:
    lowered = address.lower()
    for member in committee_members(policy):
        if lowered in member.addresses:
            return member
    return None


AccountCheck = Callable[[str], bool]
"""Does this address (a member's) still have an account in the users file?"""


def account_check(accounts: Accounts) -> AccountCheck:
    """Review rights end with the member's account (``user remove``), read live from ``accounts``.

    With no accounts at all the users file is not in use (nobody can submit), and nobody is refused.
    """

    def has_account(address: str) -> bool:
        members = accounts.members()
        lowered = address.lower()
        return not members or any(lowered in accounts.addresses_of(member) for member in members)

    return has_account


def conflicted_members(policy: CompiledPolicy, cases: Sequence[str]) -> frozenset[str]:
    """Every address of every member with a conflict of interest on any of ``cases``."""
    found: set[str] = set()
    for case in cases:
        found |= policy.conflicts.get(case, frozenset())
    return frozenset(found)


def review_refusal(
    policy: CompiledPolicy, member: Member, cases: Sequence[str], has_account: AccountCheck | None
) -> str | None:
    """Why ``member`` may not review a message of ``cases`` now (None: they may).

    Checked when the hold is made *and* at every decision, so a member removed from the policy or
    the users file, or declared conflicted meanwhile, loses the right at once.
    """
    current = member_of(policy, member.key)
    if current is None:
        # Either gone from organisation.members, or without an account (committee.members_in_force).
        return (
            f"{member.name} is no longer a committee member (removed from the policy, or no longer has an "
            "account on the gateway: `user remove`)"
        )
    if has_account is not None and not any(has_account(address) for address in current.addresses):
        return f"{member.name} no longer has an account on the gateway (removed with `user remove`)"
    conflicted = sorted(case for case in cases if set(current.addresses) & policy.conflicts.get(case, set()))
    if conflicted:
        return f"{member.name} has a declared conflict of interest on case {', '.join(conflicted)}"
    return None


def eligible_reviewers(
    policy: CompiledPolicy,
    *,
    sender: Member | None,
    sender_address: str,
    cases: Sequence[str],
    has_account: AccountCheck | None = None,
    excluded: frozenset[str] = frozenset(),
) -> tuple[Reviewer, ...]:
    """The members who may review a message: all but the sender, the conflicted, the offboarded."""
    return tuple(
        Reviewer(name=m.name, address=m.key)
        for m in committee_members(policy)
        if m != sender
        and sender_address.lower() not in m.addresses
        and not (set(m.addresses) & excluded)
        and review_refusal(policy, m, cases, has_account) is None
    )


@dataclass(frozen=True)
class ReviewPlan:
    """Who would be asked to review a held message, how many must approve, or why it cannot be held."""

    reviewers: tuple[Reviewer, ...]
    required_approvals: int
    refusal: str | None  # the 550 text when fewer members may review it than must approve it


def plan_review(
    policy: CompiledPolicy,
    *,
    authenticated_as: str,
    mail_from: str,
    cases: Sequence[str],
    has_account: AccountCheck | None = None,
    excluded: frozenset[str] = frozenset(),
    required_approvals: int | None = None,
) -> ReviewPlan:
    """The review a message would get if held now (the desk uses it, and so does ``check``)."""
    sender = member_of(policy, authenticated_as) or member_of(policy, mail_from)
    reviewers = eligible_reviewers(
        policy,
        sender=sender,
        sender_address=mail_from,
        cases=cases,
        has_account=has_account,
        excluded=excluded,
    )
    required = quorum(policy, cases, len(reviewers)) if required_approvals is None else required_approvals
    refusal = None
    if len(reviewers) < required:
        refusal = (
            f"Message not sent: it needs approval by {required} other committee member(s), and only "
            f"{len(reviewers)} may review it (not the sender, not members with a conflict of interest on "
            "its case). Ask an admin to add committee members."
        )
    return ReviewPlan(reviewers, required, refusal)


def quorum(policy: CompiledPolicy, cases: Sequence[str], eligible: int) -> int:
    """The quorum for a message of ``cases``: the policy's count for the gravest case's severity.

    ``majority`` is more than half of the ``eligible`` reviewers (at least 1).
    """
    counts = policy.document.review.approvals
    severities = {policy.severities.get(case, "normal") for case in cases}
    wanted = [counts.severe if "severe" in severities else counts.normal, counts.normal]
    numbers = [max(1, eligible // 2 + 1) if value == "majority" else int(value) for value in wanted]
    return max(numbers)


# --- the hold record -----------------------------------------------------------------------------------


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

    def notice(self) -> NoticeFinding:
        return NoticeFinding(self.rule, self.code, self.where, self.kind, self.advice, self.action)


class Reviewer(_Model):
    name: str
    address: str  # lower-cased: the member's first address


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
            make_private_directory(root / OUTBOX_DIRNAME)
        except OSError as exc:
            raise ReviewError(f"cannot create the holds folder {root}: {exc.strerror}") from None

    @classmethod
    def in_state_dir(cls, state_dir: Path) -> HoldStore:
        return cls(state_dir / HOLDS_DIRNAME)

    def _path(self, reference: str, suffix: str) -> Path:
        if not _REFERENCE.match(reference):
            raise ReviewError(f"{reference!r} is not a hold reference (see: conduct-gateway review list)")
        return self.root / f"{reference}.{suffix}"

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Exclusive across processes and threads (each call opens its own file description)."""
        fd = os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

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
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            os.fchmod(fd, 0o600)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        os.close(fd)
        tmp.replace(path)
        if sync_dir:
            fsync_directory(self.root)

    # -- the audit outbox (CLI decisions while the gateway holds the audit trail)

    def outbox_put(self, fields: Mapping[str, JsonValue]) -> None:
        name = f"{time.time_ns():020d}-{secrets.token_hex(4)}.json"
        self._write(self.root / OUTBOX_DIRNAME / name, json.dumps(dict(fields), sort_keys=True).encode())

    def outbox_items(self) -> list[tuple[Path, dict[str, JsonValue]]]:
        items = []
        for path in sorted((self.root / OUTBOX_DIRNAME).glob("*.json")):
            try:
                items.append((path, json.loads(path.read_bytes())))
            except (OSError, ValueError):
                log_event(log, "audit-outbox-unreadable", logging.ERROR, file=path.name)
        return items


def _decided_at(record: HoldRecord) -> float:
    """When the hold's outcome was decided (its last decision; creation time if it has none)."""
    return max((decision.at for decision in record.decisions), default=record.created_at)


def _encode(record: HoldRecord) -> bytes:
    return record.model_dump_json(indent=1).encode("utf-8")


def _decode(data: bytes, path: Path) -> HoldRecord:
    try:
        return HoldRecord.model_validate_json(data)
    except ValidationError as exc:
        raise ReviewError(f"{path}: not a readable hold record ({exc.error_count()} problems)") from None


# --- auditing --------------------------------------------------------------------------------------------


class AuditSink(Protocol):
    def __call__(self, fields: Mapping[str, JsonValue]) -> None: ...


def trail_sink(trail: AuditTrail) -> AuditSink:
    """Record review events in the audit trail (metadata only: no reasons, subjects or bodies)."""

    def record(fields: Mapping[str, JsonValue]) -> None:
        trail.append(AUDIT_EVENT, fields)

    return record


def drain_audit_outbox(store: HoldStore, trail: AuditTrail) -> int:
    """Append the CLI's queued events (review decisions, case actions) to the trail, oldest first;
    returns how many."""
    drained = 0
    for path, queued in store.outbox_items():
        # Items carry their event name (the CLI's case actions); review decisions predate the key.
        fields = dict(queued)
        event = fields.pop("_event", AUDIT_EVENT)
        trail.append(event if isinstance(event, str) else AUDIT_EVENT, {**fields, "recorded_later": True})
        path.unlink()
        drained += 1
    return drained


async def spool_outgoing(spool: Spool, messages: Sequence[Outgoing]) -> list[str]:
    """Commit gateway messages to the spool together; the queue ids of those that failed (logged)."""
    now = time.time()
    results = await asyncio.gather(
        *(
            spool.commit(
                SpoolEnvelope(
                    queue_id=m.queue_id,
                    mail_from=m.mail_from,
                    rcpt_tos=m.rcpt_tos,
                    authenticated_as=m.authenticated_as,
                    received_at=now,
                ),
                m.content,
            )
            for m in messages
        ),
        return_exceptions=True,
    )
    failed = []
    for message, result in zip(messages, results, strict=True):
        if isinstance(result, BaseException):
            failed.append(message.queue_id)
            log_event(
                log, "outgoing-store-failed", logging.ERROR, queue_id=message.queue_id, error=str(result)
            )
    return failed


# --- the review flow -------------------------------------------------------------------------------------


class Outcome(StrEnum):
    RELEASED = "released"  # approved by enough members: the release is among the messages to spool
    APPROVAL_RECORDED = "approval-recorded"  # approved, more approvals needed
    REJECTED = "rejected"
    CANCELLED = "cancelled"
    ALREADY_DECIDED = "already-decided"


@dataclass(frozen=True)
class DecisionResult:
    """What a decision did, the messages to spool for it, and the lines to tell the decider."""

    outcome: Outcome
    record: HoldRecord
    outgoing: tuple[Outgoing, ...] = ()
    lines: tuple[str, ...] = ()


@dataclass
class _Undo:
    """What ``not_stored`` restores (and ``accepted`` confirms) for one SMTP transaction."""

    reference: str
    before: HoldRecord | None  # None: the hold was created by this transaction; remove it
    released: bool = False  # the transaction carries the release of the held message


@dataclass
class ReviewDesk:
    """The review flow for one state folder: holds, requests, decisions, notices, expiry."""

    store: HoldStore
    settings: ReviewSettings
    hostname: str
    audit: AuditSink
    clock: Callable[[], float] = time.time
    limiter: NoticeLimiter | None = None
    # The users file: review rights end with the account (None: not checked, e.g. no users file).
    has_account: AccountCheck | None = None
    _undo: dict[str, _Undo] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.limiter is None:
            self.limiter = NoticeLimiter(self.settings.notices_per_hour)

    def notices(self, policy: CompiledPolicy) -> Notices:
        return Notices(
            conduct_address=policy.document.organisation.conduct_address,
            committee=policy.committee,
            hostname=self.hostname,
            limiter=self.limiter,
            clock=self.clock,
        )

    # -- holding

    def hold(
        self,
        submission: Submission,
        policy: CompiledPolicy,
        *,
        findings: Sequence[HeldFinding],
        changes: Sequence[str],
        release: bytes,
        release_rcpt_tos: tuple[str, ...],
        message_id: str | None,
        subject: str,
        case: str | None,
        cases: Sequence[str] = (),
        required_approvals: int | None = None,
        excluded_reviewers: frozenset[str] = frozenset(),
    ) -> Accept | Refuse:
        """Keep the message, and prepare the sender's notice and the review requests.

        ``cases`` are every case the message concerns: members conflicted on any of them are not
        asked, and the gravest case's severity sets the quorum (``required_approvals`` overrides).
        The hold is on disk when this returns; the 250 (and ``accepted``) follows once the notices
        are spooled, or ``not_stored`` removes the hold again.
        """
        now = self.clock()
        all_cases = tuple(dict.fromkeys((*cases, *((case,) if case else ()))))
        plan = plan_review(
            policy,
            authenticated_as=submission.authenticated_as,
            mail_from=submission.mail_from,
            cases=all_cases,
            has_account=self.has_account,
            excluded=excluded_reviewers,
            required_approvals=required_approvals,
        )
        if plan.refusal is not None:
            return _refuse(plan.refusal, submission.queue_id)
        reviewers, required_approvals = plan.reviewers, plan.required_approvals
        sender_member = member_of(policy, submission.authenticated_as) or member_of(
            policy, submission.mail_from
        )
        tokens = {reviewer.address: new_token() for reviewer in reviewers}
        sender_token = new_token()
        grants = {token_hash(t): Grant(holder=a, role="reviewer") for a, t in tokens.items()}
        grants[token_hash(sender_token)] = Grant(holder=submission.mail_from.lower(), role="sender")
        record = HoldRecord(
            reference=submission.queue_id,
            created_at=now,
            expires_at=now + self.settings.expiry,
            sender=submission.mail_from,
            sender_account=submission.authenticated_as,
            sender_name=sender_member.name if sender_member else submission.mail_from,
            rcpt_tos=submission.rcpt_tos,
            release_rcpt_tos=release_rcpt_tos,
            message_id=message_id,
            subject=subject,
            findings=tuple(findings),
            changes=tuple(changes),
            policy_version=policy.version,
            case=case or (all_cases[0] if all_cases else None),
            cases=all_cases,
            required_approvals=required_approvals,
            reviewers=reviewers,
            grants=grants,
        )
        notices = self.notices(policy)
        outgoing: list[Outgoing] = []
        for reviewer in reviewers:
            request = notices.outgoing(
                self._request_letter(
                    record,
                    reviewer,
                    reply_address(self.settings, policy, tokens[reviewer.address]),
                    submission.content,
                ),
                essential=True,
            )
            if request is not None:
                outgoing.append(request)
        notified = submission.mail_from.lower() in notices.committee
        if notified:
            held = notices.outgoing(
                self._held_letter(
                    record, reply_address(self.settings, policy, sender_token), submission.mail_from
                )
            )
            if held is not None:
                outgoing.append(held)
        else:
            # Notices never leave the committee: say so now, in the log and in the 250, not later.
            log_event(
                log,
                "notice-not-sent",
                logging.WARNING,
                kind=NoticeKind.HELD.value,
                reference=record.reference,
                reason="sender address is not a committee address in the policy",
            )
        self.store.create(record, submission.content, release)
        self._undo[submission.queue_id] = _Undo(record.reference, before=None)
        log_event(
            log, "held", reference=record.reference, reviewers=len(reviewers), expires=record.expires_at
        )
        return Accept(
            content=b"",
            rcpt_tos=release_rcpt_tos,
            verdict=Ruling.HOLD,
            findings=tuple(f"{f.rule}:{f.code}" for f in findings),
            extra=tuple(outgoing),
            spool_submission=False,
            reply_lines=held_reply(record, notified=notified, sender=submission.mail_from),
        )

    # -- intercepting replies

    def intercepts(self, submission: Submission, policy: CompiledPolicy) -> bool:
        return any(is_review_address(r, self.settings, policy) for r in submission.rcpt_tos)

    def intercept(self, submission: Submission, policy: CompiledPolicy) -> Accept | Refuse:
        """A reply to a review address: decide, and answer; never relayed."""
        reference = submission.queue_id
        actor = member_of(policy, submission.authenticated_as)
        review_rcpts = [r for r in submission.rcpt_tos if is_review_address(r, self.settings, policy)]
        others = [
            r
            for r in submission.rcpt_tos
            if r not in review_rcpts and (actor is None or r.lower() not in actor.addresses)
        ]
        if others:
            return _refuse(
                "Not sent: a reply to a review address goes to the gateway only. Send your decision to "
                "the review address alone, and write to other people in a separate message.",
                reference,
            )
        if actor is None or submission.mail_from.lower() not in actor.addresses:
            self._audit_refusal(reference, submission.authenticated_as, "not-a-member")
            return _refuse(
                "Not accepted: only committee members named in the policy can review held messages, "
                "and only from their own address.",
                reference,
            )
        if len(review_rcpts) != 1:
            return _refuse("Not accepted: send one decision to one review address at a time.", reference)
        token = token_of(review_rcpts[0], self.settings)
        found = self.store.find_token(token) if token is not None else None
        if found is None:
            self._audit_refusal(reference, actor.key, "unknown-token")
            return _refuse(
                "Not accepted: this review address is not valid (mistyped, altered, or the held message "
                "is gone). Reply to the review request or hold notice exactly as received.",
                reference,
            )
        record, grant = found
        command = parse_command(reply_text(submission.content))
        if command is None:
            return Refuse(
                550,
                "5.6.0",
                (
                    "Not understood: write approve, reject <reason> or (as the sender) cancel as the "
                    "first line of your reply, above any quoted text.",
                    f"Reference: {record.reference}",
                ),
            )
        sender_member = member_of(policy, record.sender_account)
        is_sender = actor.key == (sender_member.key if sender_member else record.sender.lower()) or (
            record.sender.lower() in actor.addresses
        )
        if command.command in ("approve", "reject") and is_sender:
            self._audit_refusal(record.reference, actor.key, "self-review")
            return _refuse(
                f"Not accepted: you sent message {record.reference}, so you cannot review it; another "
                "committee member must. To withdraw it, reply cancel to your hold notice.",
                record.reference,
            )
        if command.command == "cancel" and not is_sender:
            return _refuse(
                f"Not accepted: only the sender can cancel message {record.reference}; reviewers reply "
                "approve or reject <reason>.",
                record.reference,
            )
        if grant.holder not in actor.addresses:
            self._audit_refusal(record.reference, actor.key, "token-of-another-member")
            return _refuse(
                "Not accepted: this review address was sent to another committee member. Use the one in "
                "the review request sent to you.",
                record.reference,
            )
        if command.command == "reject" and not command.reason:
            return Refuse(
                550,
                "5.6.0",
                (
                    "Not understood: write the reason on the same line, e.g. 'reject names a witness in "
                    "paragraph 2'. The sender is told the reason.",
                    f"Reference: {record.reference}",
                ),
            )
        result = self.decide(
            record.reference,
            actor,
            command.command,
            command.reason,
            policy,
            via="mail",
            token=token,
            undo_key=submission.queue_id,
        )
        return Accept(
            content=b"",
            rcpt_tos=(),
            verdict=Ruling.REVIEW,
            extra=result.outgoing,
            spool_submission=False,
            reply_lines=result.lines,
        )

    # -- deciding (reply or CLI)

    def decide(
        self,
        reference: str,
        actor: Member,
        command: Command,
        reason: str,
        policy: CompiledPolicy,
        *,
        via: Literal["mail", "cli"],
        token: str | None = None,
        undo_key: str | None = None,
    ) -> DecisionResult:
        """Record one decision under the lock; the first deciding one wins.

        Raises ReviewError when the actor may not make it (the sender reviewing, a member who is not
        an eligible reviewer). An already decided hold is not an error: the result says who decided.
        """
        now = self.clock()
        with self.store.locked():
            record = self.store.get(reference)
            grant_key = token_hash(token) if token is not None else None
            grant = record.grants.get(grant_key) if grant_key else None
            if record.status != "held" or now >= record.expires_at:
                return self._already(record, actor, policy, now)
            if command != "cancel":
                eligible = {reviewer.address for reviewer in record.reviewers}
                if actor.key not in eligible:
                    raise ReviewError(
                        f"{actor.name} is not among the eligible reviewers of {reference} (the sender, "
                        "or a member excluded from this case, cannot review it)"
                    )
                # Rights are checked again now: offboarding or a conflict declared since the hold.
                refusal = review_refusal(policy, actor, record.all_cases, self.has_account)
                if refusal is not None:
                    self._audit_refusal(reference, actor.key, "not-eligible-now")
                    raise ReviewError(f"{refusal}, so they cannot review message {reference}")
                if any(d.member == actor.key for d in record.approvals):
                    return DecisionResult(
                        Outcome.APPROVAL_RECORDED,
                        record,
                        lines=(
                            f"Already recorded: you approved message {reference} before; nothing changed.",
                        ),
                    )
            if grant is not None and grant.used_at is not None:
                return self._already(record, actor, policy, now)
            before = record
            decision = Decision(
                member=actor.key, name=actor.name, decision=command, reason=reason, at=now, via=via
            )
            grants = dict(record.grants)
            if grant_key is not None and grant is not None:
                grants[grant_key] = grant.model_copy(update={"used_at": now})
            record = record.model_copy(update={"decisions": (*record.decisions, decision), "grants": grants})
            notices = self.notices(policy)
            outgoing: list[Outgoing] = []
            if command == "approve":
                approvers = self._valid_approvers(record, policy)
                if len(approvers) < record.required_approvals:
                    outcome = Outcome.APPROVAL_RECORDED
                    lines: tuple[str, ...] = (
                        f"Recorded: your approval of message {reference} "
                        f"({len(approvers)} of {record.required_approvals} approvals needed; it is "
                        "released when the others have approved).",
                    )
                    outgoing += self._to_sender(notices, self._progress_letter(record, len(approvers)))
                else:
                    release_id = Spool.new_queue_id()
                    record = record.model_copy(update={"status": "released", "release_queue_id": release_id})
                    outgoing.append(self._release(record, actor, release_id))
                    outcome = Outcome.RELEASED
                    lines = (
                        f"Approved: message {reference} released for delivery. Thank you for reviewing.",
                    )
                    outgoing += self._to_sender(notices, self._approved_letter(record, actor))
            elif command == "reject":
                record = record.model_copy(update={"status": "rejected"})
                outcome = Outcome.REJECTED
                lines = (
                    f"Recorded: message {reference} rejected; the sender is told your reason. "
                    "Nothing was sent.",
                )
                outgoing += self._to_sender(
                    notices, self._rejected_letter(record, actor, reason, self.store.original(reference))
                )
            else:
                record = record.model_copy(update={"status": "cancelled"})
                outcome = Outcome.CANCELLED
                lines = (f"Cancelled: message {reference} withdrawn; it will not be sent.",)
                outgoing += self._to_sender(notices, self._cancelled_letter(record))
            self.store.save(record)
            if undo_key is not None:
                self._undo[undo_key] = _Undo(reference, before, released=outcome is Outcome.RELEASED)
        self._audit(record, decision.decision, actor.key, via)
        if outcome is Outcome.RELEASED:
            self._audit(record, "release", actor.key, via)
        log_event(
            log, "review-decision", reference=reference, decision=command, outcome=outcome.value, via=via
        )
        return DecisionResult(outcome, record, tuple(outgoing), lines)

    def _valid_approvers(self, record: HoldRecord, policy: CompiledPolicy) -> tuple[str, ...]:
        """Distinct approvers who may still review it (quorum counts only them)."""
        valid = []
        for address in record.counted_approvers():
            member = member_of(policy, address)
            if (
                member is not None
                and review_refusal(policy, member, record.all_cases, self.has_account) is None
            ):
                valid.append(address)
        return tuple(valid)

    def _already(
        self, record: HoldRecord, actor: Member, policy: CompiledPolicy, now: float
    ) -> DecisionResult:
        if record.status == "held":  # past its expiry, not yet swept
            text = f"Already decided: message {record.reference} has expired; nothing was sent."
        else:
            final = record.final
            who = f" by {final.name}" if final is not None and final.name else ""
            status = _STATUS_WORDS[record.status]
            text = (
                f"Already decided: message {record.reference} was {status}{who}. "
                "Your reply was not needed; thank you."
            )
        outgoing: list[Outgoing] = []
        with contextlib.suppress(NoticeRefused):
            notice = self.notices(policy).outgoing(
                Letter(
                    NoticeKind.ALREADY_DECIDED,
                    actor.key,
                    f"Already decided: held message {record.reference}",
                    text,
                )
            )
            if notice is not None:
                outgoing.append(notice)
        return DecisionResult(Outcome.ALREADY_DECIDED, record, tuple(outgoing), (text,))

    def _release(self, record: HoldRecord, approver: Member, release_id: str) -> Outgoing:
        content = self.store.release_content(record.reference)
        counted = set(record.counted_approvers())
        approvers = ", ".join(
            _mailbox(d.name, d.member)
            for d in {d.member: d for d in record.approvals if d.member in counted}.values()
        ) or _mailbox(approver.name, approver.key)
        header = f"{APPROVED_HEADER}: {approvers}\r\n".encode()
        return Outgoing(
            queue_id=release_id,
            mail_from=record.sender,
            rcpt_tos=record.release_rcpt_tos,
            content=header + content,
            essential=True,
            authenticated_as=record.sender_account,
        )

    def _to_sender(self, notices: Notices, letter: Letter) -> list[Outgoing]:
        try:
            notice = notices.outgoing(letter)
        except NoticeRefused:
            log_event(
                log,
                "notice-not-sent",
                logging.WARNING,
                kind=letter.kind.value,
                reason="sender outside committee",
            )
            return []
        return [notice] if notice is not None else []

    # -- recovery after a crash

    def unreleased(self, settle: float = 60.0) -> list[tuple[str, Outgoing]]:
        """Approved holds whose release never reached the spool (a crash between recording the
        decision and the spool commit), rebuilt with the queue id chosen at the decision.

        Decisions younger than ``settle`` seconds are left alone: their own transaction (or a CLI
        command in another process) may still be committing them.
        """
        in_flight = {undo.reference for undo in self._undo.values() if undo.released}
        now = self.clock()
        found: list[tuple[str, Outgoing]] = []
        for record in self.store.records():
            if record.status != "released" or record.released or record.reference in in_flight:
                continue
            if not record.release_queue_id or not record.approvals:
                continue
            last = record.approvals[-1]
            if now - last.at < settle:
                continue
            approver = Member(name=last.name, addresses=(last.member,))
            found.append((record.reference, self._release(record, approver, record.release_queue_id)))
        return found

    def mark_released(self, reference: str) -> None:
        """The release of ``reference`` is durably in the spool (recovered after a crash)."""
        with self.store.locked():
            record = self.store.get(reference)
            if record.released:
                return
            record = record.model_copy(update={"released": True})
            self.store.save(record)
        self._audit(record, "release-recovered", "", "gateway")

    # -- the SMTP layer's callbacks

    def accepted(self, key: str) -> HoldRecord | None:
        """The messages of the hold or decision made for transaction ``key`` are spooled: confirm it.

        Returns the hold record if the transaction released it.
        """
        undo = self._undo.pop(key, None)
        if undo is None:
            return None
        with self.store.locked():
            record = self.store.get(undo.reference)
            if undo.before is None and not record.confirmed:
                record = record.model_copy(update={"confirmed": True})
                self.store.save(record)
            elif undo.released and not record.released:
                record = record.model_copy(update={"released": True})
                self.store.save(record)
        return record if undo.released else None

    def not_stored(self, key: str) -> None:
        """The messages could not be spooled (the client got 451): undo the hold or the decision."""
        undo = self._undo.pop(key, None)
        if undo is None:
            return
        with self.store.locked():
            if undo.before is None:
                self.store.discard(undo.reference)
            else:
                self.store.save(undo.before)
        log_event(log, "review-undone", logging.WARNING, reference=undo.reference)

    # -- expiry

    def expire_due(self, policy: CompiledPolicy) -> list[Outgoing]:
        """Mark every held message past its expiry as expired; return the senders' notices.

        Nothing is ever sent to the original recipients on expiry.
        """
        now = self.clock()
        outgoing: list[Outgoing] = []
        for candidate in self.store.records():
            if candidate.status != "held" or now < candidate.expires_at:
                continue
            with self.store.locked():
                record = self.store.get(candidate.reference)
                if record.status != "held":
                    continue
                decision = Decision(member="", name="", decision="expire", at=now, via="gateway")
                record = record.model_copy(
                    update={"status": "expired", "decisions": (*record.decisions, decision)}
                )
                self.store.save(record)
            self._audit(record, "expire", "", "gateway")
            outgoing += self._to_sender(self.notices(policy), self._expired_letter(record))
        return outgoing

    def prune_decided(self) -> list[str]:
        """Delete decided holds older than ``decided_retention``: held mail must not stay forever.

        A release not yet durably in the spool is kept (it is still needed). Returns the references.
        """
        cutoff = self.clock() - self.settings.decided_retention
        pruned: list[str] = []
        for candidate in self.store.records():
            if candidate.status == "held" or _decided_at(candidate) > cutoff:
                continue
            with self.store.locked():
                record = self.store.get(candidate.reference)
                if record.status == "held" or (record.status == "released" and not record.released):
                    continue
                self.store.discard(record.reference)
            self._audit(record, "prune", "", "gateway")
            pruned.append(record.reference)
        return pruned

    def discard_abandoned(self, grace: float = ABANDONED_HOLD_GRACE) -> list[str]:
        """Delete holds whose transaction never ended: unconfirmed, not in progress here, older than
        ``grace``. A crash between storing a hold and answering 250 leaves one; the client was not
        told the message was accepted and sends it again, which makes the real hold. Returns the
        references."""
        cutoff = self.clock() - grace
        live = {undo.reference for undo in tuple(self._undo.values())}  # the event loop may add some
        discarded: list[str] = []
        for candidate in self.store.records():
            if candidate.confirmed or candidate.reference in live or candidate.created_at > cutoff:
                continue
            with self.store.locked():
                record = self.store.get(candidate.reference)
                if record.confirmed or record.reference in live:
                    continue
                self.store.discard(record.reference)
            self._audit(record, "abandoned", "", "gateway")
            log_event(log, "review-abandoned", logging.WARNING, reference=record.reference)
            discarded.append(record.reference)
        return discarded

    # -- offboarding and conflicts declared after the hold

    def reassign(self, policy: CompiledPolicy) -> list[Outgoing]:
        """Re-check every held message's reviewers against the policy and the users file now.

        A reviewer who lost the right (removed from the users file or the policy's members, or
        declared conflicted on the message's case) loses their reply address, and their approval
        stops counting; every remaining eligible member who has not decided yet gets a new review
        request, and so does a member who became eligible. Returns the requests to spool.
        Idempotent: once the reviewers match, a second run changes and sends nothing.
        """
        outgoing: list[Outgoing] = []
        for candidate in self.store.records():
            if candidate.status != "held" or not candidate.confirmed:
                continue  # an unconfirmed hold may still be undone by its own transaction
            with self.store.locked():
                record = self.store.get(candidate.reference)
                if record.status != "held" or not record.confirmed or self.clock() >= record.expires_at:
                    continue
                sender = member_of(policy, record.sender_account) or member_of(policy, record.sender)
                eligible = eligible_reviewers(
                    policy,
                    sender=sender,
                    sender_address=record.sender,
                    cases=record.all_cases,
                    has_account=self.has_account,
                )
                current = {reviewer.address for reviewer in record.reviewers}
                wanted = {reviewer.address for reviewer in eligible}
                dropped, added = current - wanted, wanted - current
                if not dropped and not added:
                    continue
                decided = {d.member for d in record.decisions}
                targets = [
                    r for r in eligible if r.address in added or (dropped and r.address not in decided)
                ]
                grants = {
                    key: grant
                    for key, grant in record.grants.items()
                    if not (grant.role == "reviewer" and grant.holder in dropped)
                }
                tokens = {reviewer.address: new_token() for reviewer in targets}
                grants.update({token_hash(t): Grant(holder=a, role="reviewer") for a, t in tokens.items()})
                record = record.model_copy(update={"reviewers": eligible, "grants": grants})
                self.store.save(record)
                original = self.store.original(record.reference)
            for address in sorted(dropped):
                self._audit(record, "reviewer-removed", address, "gateway")
            for address in sorted(added):
                self._audit(record, "reviewer-added", address, "gateway")
            if len(eligible) < record.required_approvals:
                log_event(
                    log,
                    "hold-quorum-unreachable",
                    logging.WARNING,
                    reference=record.reference,
                    eligible=len(eligible),
                    required=record.required_approvals,
                )
            note = (
                "This request is sent again because a member asked before can no longer review it. "
                if dropped
                else ""
            )
            notices = self.notices(policy)
            for reviewer in targets:
                with contextlib.suppress(NoticeRefused):
                    request = notices.outgoing(
                        self._request_letter(
                            record,
                            reviewer,
                            reply_address(self.settings, policy, tokens[reviewer.address]),
                            original,
                            note=note,
                        ),
                        essential=True,
                    )
                    if request is not None:
                        outgoing.append(request)
            log_event(
                log,
                "hold-reassigned",
                reference=record.reference,
                removed=len(dropped),
                added=len(added),
                requests=len(targets),
            )
        return outgoing

    # -- audit

    def _audit(self, record: HoldRecord, event: str, member: str, via: str) -> None:
        fields: dict[str, JsonValue] = {
            "queue_id": record.reference,
            "review": event,
            "member": member,
            "via": via,
            "status": record.status,
            "approvals": len(record.counted_approvers()),
            "required_approvals": record.required_approvals,
            "policy": record.policy_version,
            "cases": list(record.all_cases),
        }
        if record.release_queue_id and event == "release":
            fields["release_queue_id"] = record.release_queue_id
        try:
            self.audit(fields)
        except AuditError as exc:
            # The decision is on disk in the hold record; the trail is missing one line: say so loudly.
            log_event(log, "review-audit-failed", logging.ERROR, reference=record.reference, error=str(exc))

    def _audit_refusal(self, reference: str, member: str, reason: str) -> None:
        with contextlib.suppress(AuditError):
            self.audit({"queue_id": reference, "review": "refused", "member": member, "reason": reason})

    # -- letters

    def _request_letter(
        self, record: HoldRecord, reviewer: Reviewer, reply_to: str, original: bytes, *, note: str = ""
    ) -> Letter:
        expires = _when(record.expires_at)
        approvals = (
            ""
            if record.required_approvals == 1
            else f" It needs {record.required_approvals} approvals from different members."
        )
        lines = [
            f"{note}{record.sender_name} <{record.sender}> sent a message that the committee's policy holds "
            "for review by a second committee member before it goes out. Please review it: it is "
            "attached exactly as it was written.",
            "",
            f"Subject: {record.subject or '(none)'}",
            f"Recipients: {', '.join(record.release_rcpt_tos)}",
            f"Reference: {record.reference}",
            f"Expires: {expires} (after that it is not sent, and the sender is told).{approvals}",
            "",
            "Why it was held:",
            *finding_lines([f.notice() for f in record.findings]),
            "",
            "What the gateway will change before sending it:",
            *([f"* {change}" for change in record.changes] or ["* nothing"]),
            "",
            "To decide, reply to this message (the reply goes to the gateway only, never to the "
            "recipients) with one of these as the first line:",
            "",
            "    approve",
            "    reject <the reason, which the sender is told>",
            "",
            "The reply address works once and only for you. Your mail client shows the gateway's "
            "answer; you also get an e-mail if someone else decided first.",
            "",
            "The attached message is for the committee only: do not forward it.",
        ]
        return Letter(
            NoticeKind.REVIEW_REQUEST,
            reviewer.address,
            f"Review needed: {record.subject or record.reference}",
            "\n".join(lines),
            in_reply_to=None,
            reply_to=reply_to,
            attachment=original,
        )

    def _held_letter(self, record: HoldRecord, reply_to: str, to: str) -> Letter:
        reviewers = ", ".join(r.name for r in record.reviewers)
        lines = [
            f'Your message "{record.subject or "(no subject)"}" is held: the committee\'s policy asks a '
            "second committee member to review it before it goes out. Nothing has been sent yet.",
            "",
            f"Reference: {record.reference}",
            f"Asked to review: {reviewers}",
            f"Approvals needed: {record.required_approvals} (0 of {record.required_approvals} so far)",
            f"Expires: {_when(record.expires_at)} "
            "(if nobody decides by then it is not sent; you will be told)",
            "",
            "Why:",
            *finding_lines([f.notice() for f in record.findings]),
            "",
            "What the gateway will change before sending it:",
            *([f"* {change}" for change in record.changes] or ["* nothing"]),
            "",
            "You will get an e-mail when it is approved (and sent) or rejected (with the reason).",
            "To withdraw it, reply to this notice with the single word cancel as the first line.",
        ]
        return Letter(
            NoticeKind.HELD,
            to,
            f"Held for review: {record.subject or record.reference}",
            "\n".join(lines),
            in_reply_to=record.message_id,
            reply_to=reply_to,
        )

    def _progress_letter(self, record: HoldRecord, approvals: int) -> Letter:
        missing = record.required_approvals - approvals
        text = (
            f'Your message "{record.subject or "(no subject)"}" (reference {record.reference}) now has '
            f"{approvals} of {record.required_approvals} approvals. It is still held: it needs "
            f"{missing} more committee member{'s' if missing != 1 else ''} to approve it before it is "
            "sent. You will be told when it is sent or rejected."
        )
        return Letter(
            NoticeKind.APPROVAL_RECORDED,
            record.sender,
            f"{approvals} of {record.required_approvals} approvals: {record.subject or record.reference}",
            text,
            in_reply_to=record.message_id,
        )

    def _approved_letter(self, record: HoldRecord, approver: Member) -> Letter:
        counted = set(record.counted_approvers())
        names = (
            ", ".join(dict.fromkeys(d.name for d in record.approvals if d.member in counted)) or approver.name
        )
        text = (
            f'Your message "{record.subject or "(no subject)"}" (reference {record.reference}) was approved '
            f"by {names} and has been released for delivery to {', '.join(record.release_rcpt_tos)}."
        )
        if record.changes:
            text += "\n\nThe gateway changed it as announced:\n" + "\n".join(f"* {c}" for c in record.changes)
        return Letter(
            NoticeKind.APPROVED,
            record.sender,
            f"Approved and sent: {record.subject or record.reference}",
            text,
            in_reply_to=record.message_id,
        )

    def _rejected_letter(self, record: HoldRecord, reviewer: Member, reason: str, original: bytes) -> Letter:
        text = "\n".join(
            [
                f'Your message "{record.subject or "(no subject)"}" (reference {record.reference}) '
                "was not sent: "
                f"{reviewer.name} reviewed it and rejected it.",
                "",
                f"Their reason: {reason}",
                "",
                "Your message is attached, so you can change it and send it again.",
            ]
        )
        return Letter(
            NoticeKind.REJECTED,
            record.sender,
            f"Not sent (rejected in review): {record.subject or record.reference}",
            text,
            in_reply_to=record.message_id,
            attachment=original,
        )

    def _cancelled_letter(self, record: HoldRecord) -> Letter:
        return Letter(
            NoticeKind.CANCELLED,
            record.sender,
            f"Withdrawn: {record.subject or record.reference}",
            f'You withdrew your held message "{record.subject or "(no subject)"}" (reference '
            f"{record.reference}). It was not sent, and the reviewers' reply addresses no longer work.",
            in_reply_to=record.message_id,
        )

    def _expired_letter(self, record: HoldRecord) -> Letter:
        return Letter(
            NoticeKind.EXPIRED,
            record.sender,
            f"Expired, not sent: {record.subject or record.reference}",
            f'Your held message "{record.subject or "(no subject)"}" (reference {record.reference}) was not '
            f"reviewed before it expired ({_when(record.expires_at)}), so it was not sent, and will not be. "
            "Send it again if it is still needed, and ask another committee member to look out for it.",
            in_reply_to=record.message_id,
            attachment=self.store.original(record.reference),
            attachment_headers_only=True,
        )


_STATUS_WORDS = {
    "released": "approved and sent",
    "rejected": "rejected",
    "cancelled": "withdrawn by the sender",
    "expired": "not reviewed in time and has expired",
    "held": "held",
}


def held_reply(record: HoldRecord, *, notified: bool = True, sender: str = "") -> tuple[str, ...]:
    """The 250 text for a held message (ASCII, short lines)."""
    return held_lines(record.reasons(), record.reference, notified=notified, sender=sender)


def _refuse(text: str, reference: str) -> Refuse:
    return Refuse(550, "5.7.1", (text, f"Reference: {reference}"))


def _mailbox(name: str, address: str) -> str:
    display = "".join(ch for ch in name if ch >= " " and ch not in '"\\')
    return formataddr((display, address)) if display.isascii() else f"<{address}>"


def _when(timestamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(timestamp))
