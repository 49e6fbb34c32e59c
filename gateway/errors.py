"""Every failure the gateway knows, as one tree of exceptions.

    GatewayError                  base of everything we raise on purpose
    ├── ConfigError               a settings, policy or users file is unusable; message names file, line, key
    │   └── RegistryUnreadable    the encrypted case registry cannot be read, decrypted or understood
    ├── AccountError              a users-file operation failed (unknown user, bad address, ...)
    ├── SpoolError                the spool could not store or read a message
    │   └── CorruptSpoolEntry     an entry on disk cannot be read back; it is moved to corrupt/
    ├── MessageRefused            input is refused on purpose; carries the SMTP reply to send
    ├── LedgerError               the thread ledger cannot be opened or read
    ├── OverrideError             the override store (tokens, justifications, quotas) cannot be used
    ├── AuditError                the audit trail cannot be opened or appended to (checked by `audit verify`)
    ├── StateError                the shared state (PostgreSQL) refused an operation
    │   ├── StateUnavailable      PostgreSQL cannot be reached now (new mail gets 451 4.3.0; retried)
    │   └── SchemaMismatch        the database's schema is not the one this version runs on (migrate)
    ├── PolicyError               the policy engine failed internally (never a pass: 451)
    │   ├── PolicyWorkerError     a policy worker process failed, died or was stuck with the message (451)
    │   └── EvaluationTooComplex  the message used up its evaluation budget (552 5.3.4: a retry would too)

CLI commands print a GatewayError's message as one paragraph and exit 2; they never show a traceback.
"""

from __future__ import annotations


class GatewayError(Exception):
    """Base class of the errors the gateway raises on purpose."""


class ConfigError(GatewayError):
    """A configuration, policy or users file is unusable."""


class RegistryUnreadable(ConfigError):
    """The case registry exists but cannot be read, decrypted or understood (wrong key, damage)."""


class AccountError(GatewayError):
    """A users-file operation failed."""


class SpoolError(GatewayError):
    """The spool could not store or read a message."""


class CorruptSpoolEntry(SpoolError):
    """An entry on disk cannot be read back."""


class MessageRefused(GatewayError):
    """Input refused on purpose, with the SMTP reply that says why."""

    def __init__(self, reply: str) -> None:
        super().__init__(reply)
        self.reply = reply


class PolicyError(GatewayError):
    """The policy engine failed internally; the message is deferred, never passed."""


class PolicyWorkerError(PolicyError):
    """A policy worker process could not evaluate a message: it raised (``error`` names the
    exception type, never its text) or it died while it had the message."""

    def __init__(self, error: str) -> None:
        super().__init__(error)
        self.error = error


class EvaluationTooComplex(PolicyError):
    """A message used up its CPU budget (``policy.evaluation_budget`` seconds) in a policy worker.

    Unlike the other policy errors this is the message's doing, not the gateway's: the same message
    would use it up on every retry, so it is refused for good."""

    def __init__(self, budget: float) -> None:
        super().__init__(f"evaluation used more than {budget:g} s of CPU time")
        self.budget = budget


class LedgerError(GatewayError):
    """The thread ledger cannot be opened or read."""


class OverrideError(GatewayError):
    """The override store (tokens, justifications, quotas) cannot be opened or written."""


class AuditError(GatewayError):
    """The audit trail cannot be opened or appended to."""


class StateError(GatewayError):
    """The shared state (the PostgreSQL backend) refused or failed an operation."""


class StateUnavailable(StateError):
    """PostgreSQL cannot be reached (down, network, pool exhausted): our fault, answered 451 4.3.0."""


class SchemaMismatch(StateError):
    """The database's schema is unknown to this version or not migrated yet (`conduct-gateway state
    migrate`); a gateway never runs on it."""


def first_leaf(exc: BaseException) -> BaseException:
    """The first exception inside (nested) exception groups; ``exc`` itself if it is none."""
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc


def storage_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` (or every exception a task group gathered) is a store failing, not a bug."""
    if isinstance(exc, BaseExceptionGroup):
        return all(storage_unavailable(inner) for inner in exc.exceptions)
    return isinstance(exc, SpoolError | StateError) and not isinstance(exc, CorruptSpoolEntry)
