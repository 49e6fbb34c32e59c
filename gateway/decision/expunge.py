"""Expunging a case: its identities removed from every store the gateway keeps, the audit chain intact.

``expunge_case`` runs on ``conduct-gateway case expunge CODE`` and, for cases whose ``expunge_on``
date has come, in the running gateway (``expunge_due``, from the periodic review task). For one case
it removes, in this order (each step is idempotent, and the identities stay in the registry until the
last step, so an interrupted run is finished by running it again):

1. **fingerprints** of the case's protected messages (``fingerprints.sqlite3``);
2. **thread ledger** rows of the case's threads, and every row with one of the case's people among
   its participants; the file is then compacted so no deleted row survives in free pages or the WAL;
3. **holds** of the case (held or decided) and every hold whose message names one of its people;
4. **spool**: delivered (``done/``) and bounced messages that name one of its people, with their
   delivery status. Messages still waiting for delivery are left to be delivered (counted in the
   report); run the command again once they are delivered;
5. **overrides**: every override (with its justification, which a member typed and which may name
   someone) of a message in the case's threads, of a message removed above, or whose justification
   names one of its people, and the token that made it (``OverridesPort.forget``);
6. **audit trail**: the salts of every entry that refers to the case or to a removed message are
   deleted (``AuditTrail.forget_salts``), so their recipient, Message-ID and message digests can no
   longer be linked to anything, while the hash chain, and so ``audit verify``, is unchanged. The
   case's code name stays readable in those entries: code names are chosen not to identify anyone,
   and they keep the record of what was decided. While a gateway runs it owns the trail, so the
   command leaves the request for it (the audit port's "later", ``gateway.state.audit_later``),
   carried out at its next review round;
7. **the case registry**: every name, alias, address and username of the case's reporters,
   witnesses and reported parties becomes the single name "Expunged" (never matched), its consent
   records are dropped, and the case is closed. The running gateway recompiles its matcher when the
   registry changes. Cases written in the policy file are refused: the gateway never rewrites the
   file admins edit; move them into the registry (``case import-policy --remove-from-policy``).

Who is "one of its people" is decided with the policy's own matcher built from the case's identities
only, over decoded, normalised text, so the same encodings the policy sees through count here.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from gateway.errors import ConfigError, GatewayError
from gateway.logs import log_event
from gateway.policy.config import IDENTITY_FIELDS, Case, Person
from gateway.policy.engine import EXPUNGED_MARK
from gateway.policy.loader import read_policy
from gateway.policy.matcher import IdentityMatcher
from gateway.policy.mime import parse_message
from gateway.policy.model import ProtectedIdentity
from gateway.state.opening import State
from gateway.state.ports import AuditWriterPort, CasesPort
from gateway.state.spool import QueueState

log = logging.getLogger("gateway.decision.expunge")

EXPUNGED_NAME = "Expunged"
_SCANNED_STATES = (QueueState.DONE, QueueState.BOUNCED, QueueState.CORRUPT)


class ExpungeError(GatewayError):
    """A case cannot be expunged (unknown, kept in the policy file, or a store failed)."""


@dataclass(frozen=True)
class ExpungeReport:
    """What one expunge removed (counts only: never an identity)."""

    case: str
    fingerprints: int = 0
    ledger_rows: int = 0
    holds: int = 0
    spool_messages: int = 0
    spool_pending: int = 0  # messages naming the case's people still waiting for delivery: kept
    overrides: int = 0  # overrides (with their justifications) removed
    audit_entries: int = 0  # entries whose salts were deleted now
    audit_deferred: bool = False  # the running gateway will delete them at its next review round
    registry: bool = False  # the registry's identities were replaced

    def lines(self) -> list[str]:
        audit = (
            "audit entries: the running gateway makes them unreadable at its next review round"
            if self.audit_deferred
            else f"audit entries made unreadable (chain intact): {self.audit_entries}"
        )
        lines = [
            f"Case {self.case} expunged.",
            f"  fingerprints of protected messages removed: {self.fingerprints}",
            f"  thread ledger entries removed: {self.ledger_rows}",
            f"  held messages removed: {self.holds}",
            f"  delivered or bounced messages removed from the spool: {self.spool_messages}",
            f"  overrides and their justifications removed: {self.overrides}",
            f"  {audit}",
            "  case registry: identities replaced with 'Expunged'"
            if self.registry
            else "  case registry: already expunged",
        ]
        if self.spool_pending:
            lines.append(
                f"  {self.spool_pending} message(s) naming its people are still being delivered and were "
                "kept; run the command again once `conduct-gateway queue list` no longer shows them."
            )
        return lines


# -- the case itself ---------------------------------------------------------------------------------


def is_expunged(case: Case) -> bool:
    """True once ``expunged_case`` has been applied (every person keeps only the placeholder)."""
    return not case.consents and all(
        _expunged_person(person) for person in (*case.reporters, *case.witnesses, *case.reported)
    )


def _expunged_person(person: Person) -> bool:
    return (
        tuple(name.casefold() for name in person.names) == (EXPUNGED_MARK,)
        and not person.aliases
        and not person.addresses
        and not person.usernames
    )


def expunged_case(case: Case) -> Case:
    """The case with every identifying field replaced: people keep their code names only."""

    def blank(person: Person) -> Person:
        return person.model_copy(
            update={"names": (EXPUNGED_NAME,), "aliases": (), "addresses": (), "usernames": ()}
        )

    return case.model_copy(
        update={
            "reporters": tuple(blank(p) for p in case.reporters),
            "witnesses": tuple(blank(p) for p in case.witnesses),
            "reported": tuple(blank(p) for p in case.reported),
            "consents": (),
            "status": "closed",
        }
    )


def case_identities(case: Case) -> tuple[ProtectedIdentity, ...]:
    """Every identifying string of every person of the case (reported parties included)."""
    found: dict[ProtectedIdentity, None] = {}
    for person in (*case.reporters, *case.witnesses, *case.reported):
        for key, kind in IDENTITY_FIELDS:
            for value in getattr(person, key):
                if value.strip().casefold() != EXPUNGED_MARK:
                    found[ProtectedIdentity(case=case.code, person=person.id, kind=kind, value=value)] = None
    return tuple(found)


class _Names:
    """Recognises the case's people in any text, address or message (the policy's matcher)."""

    def __init__(self, case: Case) -> None:
        identities = case_identities(case)
        self.empty = not identities
        self._matcher = IdentityMatcher.build(identities)
        self._raw = [value.value.casefold().encode("utf-8") for value in identities if len(value.value) >= 4]

    def in_text(self, *texts: str) -> bool:
        return not self.empty and any(text and self._matcher.find(text) for text in texts)

    def in_message(self, content: bytes, envelope: Iterable[str] = (), *, raw: bool = False) -> bool:
        if self.empty:
            return False
        if self.in_text(*envelope):
            return True
        if raw and any(value in content.lower() for value in self._raw):
            return True  # plain bytes: also catches what a parser would refuse to read
        try:
            parsed = parse_message(content)
        except Exception:  # unreadable: the byte search above is all we can do
            return False
        return any(self.in_text(segment.text, segment.reading) for segment in parsed.segments)


# -- the orchestration -------------------------------------------------------------------------------


@dataclass
class Stores:
    """Where one gateway keeps things, and the trail if this process owns it."""

    state: State
    audit: AuditWriterPort | None = None  # None: open it, or leave a request for the running gateway

    @property
    def registry(self) -> CasesPort:
        return self.state.cases


def expunge_case(code: str, stores: Stores, *, policy_cases: Sequence[Case] = ()) -> ExpungeReport:
    """Expunge case ``code`` everywhere (see the module docstring). ExpungeError explains refusals."""
    if any(case.code == code for case in policy_cases):
        raise ExpungeError(
            f"case {code!r} is written in the policy file, which the gateway never rewrites (admins edit "
            "and review it). Move the policy's cases into the encrypted case registry with `conduct-gateway "
            f"case import-policy --remove-from-policy`, then run `conduct-gateway case expunge {code!r}` "
            "again; or delete the case from the policy file by hand and expunge nothing else."
        )
    found = [case for case in stores.registry.cases() if case.code == code]
    if not found:
        raise ExpungeError(f"no case {code!r} in the case registry (see: conduct-gateway case list)")
    case = found[0]
    names = _Names(case)
    state = stores.state

    with state.fingerprints.open() as fingerprints:
        forgotten_documents = fingerprints.forget_case(code)

    with state.ledger.open() as ledger:
        rows = ledger.forget_case(code)
        if not names.empty:
            rows += ledger.forget_participants(lambda name, address: names.in_text(name, address))
        ledger.scrub()

    removed_ids: set[str] = set()
    holds = 0
    if state.holds.exists():
        store = state.holds.open()
        for record in store.records():
            with store.locked():
                try:
                    original = store.original(record.reference)
                except FileNotFoundError:
                    original = b""
                if code in record.all_cases or names.in_message(original, record.rcpt_tos):
                    store.discard(record.reference)
                    removed_ids.add(record.reference)
                    if record.release_queue_id:
                        removed_ids.add(record.release_queue_id)
                    holds += 1

    spool_messages = pending = 0
    if state.queue.exists():
        spool = state.queue.open()
        for entry in spool.entries():
            if entry.state is QueueState.CORRUPT and entry.envelope is None:
                continue
            try:
                message = spool.load(entry.queue_id)
            except GatewayError:
                continue
            envelope = (message.envelope.mail_from, *message.envelope.rcpt_tos)
            if entry.queue_id not in removed_ids and not names.in_message(
                message.content, envelope, raw=True
            ):
                continue
            if entry.state not in _SCANNED_STATES:
                pending += 1
                continue
            with contextlib.suppress(GatewayError):
                spool.delete(entry.queue_id)
                removed_ids.add(entry.queue_id)
                spool_messages += 1

    overrides = 0
    if state.overrides.exists():
        with state.overrides.open() as override_store:
            overrides = override_store.forget(code, removed_ids, names.in_text)

    audit_entries, deferred = _forget_audit(code, removed_ids, stores)

    replaced = not is_expunged(case)
    if replaced:
        stores.registry.update(
            lambda cases: [expunged_case(item) if item.code == code else item for item in cases]
        )
    report = ExpungeReport(
        case=code,
        fingerprints=forgotten_documents,
        ledger_rows=rows,
        holds=holds,
        spool_messages=spool_messages,
        spool_pending=pending,
        overrides=overrides,
        audit_entries=audit_entries,
        audit_deferred=deferred,
        registry=replaced,
    )
    log_event(
        log,
        "case-expunged",
        case=code,
        fingerprints=forgotten_documents,
        ledger_rows=rows,
        holds=holds,
        spool=spool_messages,
        pending=pending,
        overrides=overrides,
        audit=audit_entries,
        audit_deferred=deferred,
    )
    return report


def _forget_audit(code: str, queue_ids: set[str], stores: Stores) -> tuple[int, bool]:
    # While a running gateway owns the trail it finishes this part at its next review round.
    forgotten = stores.state.audit.forget(code, queue_ids, stores.audit)
    return (0, True) if forgotten is None else (forgotten, False)


def policy_file_cases(path: Path) -> tuple[Case, ...]:
    """The cases written in the policy file itself (not the registry's); () if it cannot be read."""
    try:
        return read_policy(path)[0].cases
    except ConfigError:
        return ()


def due_cases(cases: Iterable[Case], today: datetime.date) -> list[Case]:
    """Cases whose ``expunge_on`` has come and that are not expunged yet."""
    return [
        case
        for case in cases
        if case.expunge_on is not None and case.expunge_on <= today and not is_expunged(case)
    ]


class DueExpunger:
    """The running gateway's part: expunge registry cases past their date; report policy-file ones once."""

    def __init__(
        self, stores: Stores, policy_path: Path, today: Callable[[], datetime.date] | None = None
    ) -> None:
        self.stores = stores
        self.policy_path = policy_path
        self._today = today or (lambda: datetime.datetime.now(datetime.UTC).date())
        self._reported: set[str] = set()

    def run(self) -> list[ExpungeReport]:
        """One round: finish the CLI's audit requests, then expunge what is due."""
        if self.stores.audit is not None:
            self.stores.state.audit.drain_later(self.stores.audit)
        policy_cases = policy_file_cases(self.policy_path)
        today = self._today()
        for case in due_cases(policy_cases, today):
            if case.code not in self._reported:
                self._reported.add(case.code)
                log_event(
                    log,
                    "expunge-due-in-policy-file",
                    logging.ERROR,
                    case=case.code,
                    advice=(
                        "the case is written in the policy file, which the gateway never rewrites: move it "
                        "into the case registry (case import-policy --remove-from-policy) or remove it"
                    ),
                )
        reports = []
        in_policy = {case.code for case in policy_cases}
        for case in due_cases(self.stores.registry.cases(), today):
            if case.code in in_policy:
                continue
            try:
                reports.append(expunge_case(case.code, self.stores, policy_cases=policy_cases))
            except GatewayError as exc:
                log_event(log, "expunge-failed", logging.ERROR, case=case.code, error=str(exc))
        return reports
