"""The policy in force: the policy file, the case registry and the accounts, compiled and reloaded.

``PolicySource`` holds the compiled policy the screener, the policy workers and the journal decide
under, and reloads it when its files change; an invalid edit is refused and logged, and the last
good policy stays in force.
"""

from __future__ import annotations

import gc
import hashlib
import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from gateway.errors import AccountError, ConfigError, RegistryUnreadable
from gateway.example_policy import missing_policy_hint
from gateway.logs import log_event
from gateway.policy.committee import Roster
from gateway.policy.engine import CompiledPolicy, FinderFactory, compile_policy
from gateway.policy.loader import parse_policy_text, read_policy
from gateway.policy.matcher import IdentityMatcher
from gateway.policy.model import IdentityFinder, ProtectedIdentity
from gateway.settings import GatewaySettings
from gateway.state.files import atomic_write
from gateway.state.opening import open_state
from gateway.state.ports import AccountsOpener, CasesPort

log = logging.getLogger("gateway.policy")


class ReloadResult(StrEnum):
    """What a reload attempt did."""

    UNCHANGED = "unchanged"  # same file content: nothing to do
    RELOADED = "reloaded"  # a new policy is in force
    REFUSED = "refused"  # the file is invalid; the last good policy stays in force


@dataclass(frozen=True)
class FileStamp:
    """Identity of one version of the policy file: cheap stat fields, and the content hash.

    ``registry`` is the case registry file's own stamp (None: no registry file, or none configured).
    """

    mtime_ns: int
    size: int
    sha256: str
    registry: FileStamp | None = None
    inode: int = 0  # kept for the registry only (rewritten by rename, its size rarely changes)
    # The accounts: their change token when read (``AccountsOpener.seen``), and their digest (None:
    # accounts not in use).
    users_seen: object = None
    accounts: str | None = None

    def seen(self) -> tuple[object, ...]:
        """The cheap stat fields of the policy file and the registry, and the accounts' change token."""
        registry = self.registry
        registry_seen = (registry.mtime_ns, registry.size, registry.inode) if registry is not None else None
        return self.mtime_ns, self.size, registry_seen, self.users_seen


def _stat(path: Path) -> tuple[int, int]:
    info = path.stat()
    return info.st_mtime_ns, info.st_size


def _accounts_seen(accounts: AccountsOpener | None) -> object:
    return accounts.seen() if accounts is not None else None


def _read_roster(accounts: AccountsOpener, known: bool) -> Roster | None:
    roster = accounts.roster()
    # Accounts that were in use and are gone mean nobody has an account, never "not in use"
    # (which would put every policy member back inside the committee).
    return Roster.of(()) if roster is None and known else roster


def load_compiled_policy(
    path: Path,
    registry: CasesPort | None = None,
    accounts: AccountsOpener | None = None,
    *,
    users_file_known: bool = False,
    previous: CompiledPolicy | None = None,
) -> tuple[CompiledPolicy, FileStamp]:
    """Read, validate and compile the policy file; ConfigError (file, line, key) if it is unusable.

    The file is read once: the version is the hash of exactly the bytes that were validated.
    With ``registry``, the case registry's cases are compiled in too (ConfigError naming the
    registry file when it cannot be decrypted or clashes with the policy). With ``accounts`` (the
    state's, on either backend), only members who hold an account are in the committee
    (``gateway.policy.committee``); ``users_file_known``: accounts were in use before, so their
    absence now means nobody has an account.
    ``previous``: the policy in force, whose identity matcher is reused when the identities are the
    same (a ``user remove`` must not wait for a large matcher to be rebuilt).
    """
    try:
        mtime_ns, size = _stat(path)
    except FileNotFoundError:
        raise ConfigError(missing_policy_hint(path)) from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the policy file: {exc.strerror}") from None
    users_seen = _accounts_seen(accounts)
    roster = _read_roster(accounts, users_file_known) if accounts is not None else None
    document, source = read_policy(path)
    snapshot = registry.read() if registry is not None else None
    digest_of_accounts = roster.digest if roster is not None else None
    build_finder = _reusing_finder(previous) if previous is not None else None
    digest = hashlib.sha256(source).hexdigest()
    if snapshot is None or registry is None:
        policy = compile_policy(document, source, accounts=roster, build_finder=build_finder)
        return policy, FileStamp(mtime_ns, size, digest, users_seen=users_seen, accounts=digest_of_accounts)
    policy = compile_policy(
        document,
        source,
        registry=snapshot.for_policy(registry.path),
        accounts=roster,
        build_finder=build_finder,
    )
    registry_stamp = FileStamp(snapshot.mtime_ns, snapshot.size, snapshot.sha256, inode=snapshot.inode)
    return policy, FileStamp(
        mtime_ns, size, digest, registry_stamp, users_seen=users_seen, accounts=digest_of_accounts
    )


def freeze_loaded_policy() -> None:
    """Take what is alive now, the compiled policy and the stores' indexes above all, out of the
    cyclic garbage collector's sight, in a long-lived process that has just loaded a policy.

    With 10,000 protected people and 10,000 protected messages a full collection walks millions of
    objects: about 300 ms during which nothing else runs (on the event loop: every session). They live
    until the next reload and hold no reference cycles, so reference counting still frees a replaced
    policy; the collection first clears what garbage there is, so none is kept for ever.
    """
    gc.collect()
    gc.freeze()


def write_policy_text(path: Path, text: str) -> None:
    """Replace the policy file at ``path`` with ``text`` atomically, keeping its mode; a policy the
    gateway would refuse is never written (``ConfigError``, as when it is loaded)."""
    parse_policy_text(text, path)
    atomic_write(path, text.encode("utf-8"), mode=path.stat().st_mode & 0o777)


def _reusing_finder(previous: CompiledPolicy) -> FinderFactory:
    def build(identities: Iterable[ProtectedIdentity]) -> IdentityFinder:
        wanted = tuple(identities)
        return previous.finder if wanted == previous.identities else IdentityMatcher.build(wanted)

    return build


def load_policy_for(settings: GatewaySettings) -> tuple[CompiledPolicy, FileStamp]:
    """The policy in force for these settings: the policy file, the case registry and the accounts."""
    state = open_state(settings)
    return load_compiled_policy(settings.policy.path, state.cases, state.accounts)


def log_committee_notes(policy: CompiledPolicy, previous: CompiledPolicy | None = None) -> None:
    """Name every difference between the policy's members and the accounts (new ones only on reload)."""
    known = set(previous.committee_notes) if previous is not None else set()
    for note in policy.committee_notes:
        if note not in known:
            log_event(log, "committee-differs-from-accounts", logging.WARNING, detail=note)


class PolicySource:
    """The policy in force, and the files it came from (the policy file and the case registry)."""

    def __init__(
        self,
        path: Path,
        policy: CompiledPolicy,
        stamp: FileStamp,
        registry: CasesPort | None = None,
        accounts: AccountsOpener | None = None,
    ) -> None:
        self.path = path
        self.registry = registry
        self.accounts = accounts
        self._policy = policy
        self._stamp = stamp
        self._seen: tuple[object, ...] | None = stamp.seen()  # last stat looked at
        self._last_error: str | None = None  # the refusal last reported
        self.registry_unreadable = False  # the last refusal was the case registry's
        self._lock = threading.Lock()

    @classmethod
    def load(
        cls, path: Path, registry: CasesPort | None = None, accounts: AccountsOpener | None = None
    ) -> PolicySource:
        policy, stamp = load_compiled_policy(path, registry, accounts)
        return cls(path, policy, stamp, registry, accounts)

    @classmethod
    def from_settings(cls, settings: GatewaySettings) -> PolicySource:
        """The policy file, the case registry and the accounts these settings name."""
        state = open_state(settings)
        return cls.load(settings.policy.path, state.cases, state.accounts)

    @property
    def policy(self) -> CompiledPolicy:
        return self._policy

    def reload(self) -> ReloadResult:
        """Re-read the file (SIGHUP); switch to it if its content changed and it is valid."""
        with self._lock:
            return self._reload(force=True)

    def reload_if_changed(self) -> ReloadResult:
        """Cheap poll: look at the file only if its mtime or size changed since last seen."""
        with self._lock:
            return self._reload(force=False)

    def _reload(self, *, force: bool) -> ReloadResult:
        registry_digest: str | None = None
        try:
            registry_seen = self.registry.stat() if self.registry is not None else None
            users_seen = _accounts_seen(self.accounts)
            seen = (*_stat(self.path), registry_seen, users_seen)
            if not force and seen == self._seen:
                return ReloadResult.UNCHANGED
            self._seen = seen
            digest = hashlib.sha256(self.path.read_bytes()).hexdigest()
            if self.registry is not None:
                registry_digest = self.registry.digest()
            users_known = self._stamp.accounts is not None
            roster = _read_roster(self.accounts, users_known) if self.accounts is not None else None
        except OSError as exc:
            self._seen = None
            return self._refuse(f"{exc.filename or self.path}: cannot read: {exc.strerror}", force=force)
        except AccountError as exc:  # the accounts' database cannot be reached: the committee is kept
            self._seen = None
            return self._refuse(str(exc), force=force)
        except ConfigError as exc:  # a broken users file: the committee in force is kept
            return self._refuse(str(exc), force=force)
        known_registry = self._stamp.registry
        if registry_digest is None and known_registry is not None and self.registry is not None:
            # Losing the registry must never quietly drop every case's protection.
            return self._refuse(
                f"{self.registry.path}: the case registry has disappeared; the cases in force are kept. "
                "Restore the file from a backup.",
                force=force,
                registry=True,
            )
        known_digest = known_registry.sha256 if known_registry is not None else None
        accounts = roster.digest if roster is not None else None
        if (
            digest == self._stamp.sha256
            and registry_digest == known_digest
            and accounts == self._stamp.accounts
        ):
            self._last_error, self.registry_unreadable = None, False
            return ReloadResult.UNCHANGED
        try:
            policy, stamp = load_compiled_policy(
                self.path,
                self.registry,
                self.accounts,
                users_file_known=users_known,
                previous=self._policy,
            )
        except RegistryUnreadable as exc:
            return self._refuse(str(exc), force=force, registry=True)
        except ConfigError as exc:
            return self._refuse(str(exc), force=force)
        except Exception as exc:  # a compiler bug must not take the running policy down with it
            message = f"{self.path}: the policy could not be compiled ({type(exc).__name__})"
            return self._refuse(message, force=force)
        previous = self._policy
        self._policy, self._stamp = policy, stamp
        self._seen, self._last_error = stamp.seen(), None
        self.registry_unreadable = False
        log_event(log, "policy-reloaded", previous=previous.version, version=policy.version, file=self.path)
        log_committee_notes(policy, previous)
        return ReloadResult.RELOADED

    @property
    def refused(self) -> bool:
        """Whether the files on disk differ from the policy in force because they were refused."""
        return self._last_error is not None

    def _refuse(self, message: str, *, force: bool, registry: bool = False) -> ReloadResult:
        self.registry_unreadable = registry
        # Polling finds the same broken file every few seconds: report it once (and on every SIGHUP).
        if force or message != self._last_error:
            log_event(
                log, "policy-reload-refused", logging.ERROR, error=message, kept_version=self._policy.version
            )
        self._last_error = message
        return ReloadResult.REFUSED
