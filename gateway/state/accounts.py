"""Committee members' accounts: the users file and argon2 password checks.

The users file has one member per line::

    alice@example.org:$argon2id$v=19$m=65536,t=3,p=4$...$...:alice.smith@example.org,conduct@example.org

i.e. ``address:argon2-hash[:alias,alias...]``. Blank lines and lines starting with ``#`` are ignored.
The file is 0600 and always rewritten atomically (temporary file, fsync, rename, directory fsync),
under a lock file so two ``conduct-gateway user`` commands never lose each other's change. The
running server notices a changed file (``reload_if_changed``) without a restart.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import stat
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from email_validator import EmailNotValidError, validate_email

from gateway.errors import AccountError, ConfigError
from gateway.logs import log_event
from gateway.policy.committee import Roster
from gateway.state.files import atomic_write, locked

logger = logging.getLogger(__name__)

MIN_PASSWORD_LENGTH = 8
_FILE_HEADER = (
    "# conduct-gateway users file: address:argon2-hash[:alias,alias...]\n"
    "# Managed with `conduct-gateway user add|list|remove`; keep it private (mode 0600).\n"
)


def normalize_address(address: str) -> str:
    """Validate a mailbox address (syntax only, no DNS) and return it lower-cased.

    Raises ValueError with a readable reason. ``.test`` domains are allowed for examples and tests.
    """
    try:
        checked = validate_email(
            address.strip(),
            check_deliverability=False,
            test_environment=True,
            allow_smtputf8=True,
        )
    except EmailNotValidError as exc:
        raise ValueError(str(exc)) from None
    return checked.normalized.lower()


@dataclass(frozen=True)
class Member:
    """One committee member: primary address (also the login), password hash, extra addresses."""

    address: str
    password_hash: str
    aliases: tuple[str, ...] = ()

    @property
    def addresses(self) -> frozenset[str]:
        return frozenset((self.address, *self.aliases))

    def line(self) -> str:
        aliases = f":{','.join(self.aliases)}" if self.aliases else ""
        return f"{self.address}:{self.password_hash}{aliases}\n"


def users_stat(path: Path) -> tuple[int, int, int] | None:
    """The users file's inode, mtime and size (None: no file): changes whenever the file does."""
    try:
        info = path.stat()
    except FileNotFoundError:
        return None
    return (info.st_ino, info.st_mtime_ns, info.st_size)


def users_file_text(members: dict[str, Member]) -> str:
    """The users file holding ``members`` (sorted by address, with the header)."""
    return _FILE_HEADER + "".join(members[key].line() for key in sorted(members))


def parse_users(text: str, path: Path) -> dict[str, Member]:
    """Parse a users file; any problem is a ConfigError naming the file and line."""
    members: dict[str, Member] = {}
    owner_of: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{path}, line {number}"
        fields = line.split(":")
        if len(fields) not in (2, 3):
            raise ConfigError(f"{where}: expected address:argon2-hash[:alias,alias...]")
        try:
            address = normalize_address(fields[0])
        except ValueError as exc:
            raise ConfigError(f"{where}: bad address {fields[0]!r}: {exc}") from None
        password_hash = fields[1].strip()
        if not password_hash.startswith("$argon2"):
            raise ConfigError(
                f"{where}: the password hash is not an argon2 hash (use `conduct-gateway user add`)"
            )
        aliases: list[str] = []
        for alias in filter(
            None, (part.strip() for part in (fields[2] if len(fields) == 3 else "").split(","))
        ):
            try:
                aliases.append(normalize_address(alias))
            except ValueError as exc:
                raise ConfigError(f"{where}: bad alias {alias!r}: {exc}") from None
        member = Member(address, password_hash, tuple(dict.fromkeys(a for a in aliases if a != address)))
        for owned in member.addresses:
            if owned in owner_of:
                raise ConfigError(f"{where}: address {owned} already belongs to {owner_of[owned]}")
            owner_of[owned] = address
        members[address] = member
    return members


def read_roster(path: Path, *, missing_is_empty: bool = False) -> Roster | None:
    """Who holds an account, for the policy (``gateway.policy.committee``); None: no users file.

    ``missing_is_empty``: a users file that existed and has gone means nobody has an account, never
    "accounts are not in use" (which would put every policy member back inside the committee).
    Raises ConfigError for a file that cannot be read or parsed.
    """
    if not path.exists() and not missing_is_empty:
        return None
    members = Accounts._read(path)
    return Roster.of(((m.address, m.aliases) for m in members.values()), origin=str(path))


class Accounts:
    """The members allowed to submit mail, read from (and saved to) the users file."""

    def __init__(self, path: Path, members: dict[str, Member], hasher: PasswordHasher | None = None) -> None:
        self.path = path
        self._members = members
        self._hasher = hasher or PasswordHasher()
        self._stamp = users_stat(path)
        self._dummy_hash: str | None = None
        self._dummy_lock = threading.Lock()

    @classmethod
    def load(cls, path: Path, hasher: PasswordHasher | None = None) -> Accounts:
        """Read the users file; a missing file means no members yet. Bad lines raise ConfigError."""
        return cls(path, cls._read(path), hasher)

    @staticmethod
    def _read(path: Path) -> dict[str, Member]:
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: cannot read the users file: {exc}") from None
        with contextlib.suppress(OSError):
            if stat.S_IMODE(path.stat().st_mode) & 0o077:
                log_event(logger, "accounts.permissions", logging.WARNING, path=path, advice="chmod 600")
        return parse_users(text, path)

    # --- queries -------------------------------------------------------------------------------
    def members(self) -> list[str]:
        return sorted(self._members)

    def addresses_of(self, member: str) -> frozenset[str]:
        found = self._members.get(member.lower())
        return found.addresses if found else frozenset()

    def aliases_of(self, member: str) -> tuple[str, ...]:
        found = self._members.get(member.lower())
        return found.aliases if found else ()

    def verify(self, login: str, password: str) -> str | None:
        """The member's primary address if ``password`` is right, else None.

        An unknown login is checked against a dummy hash so both cases cost one argon2 verification
        and take about the same time. Blocking (tens of milliseconds): call it from a worker thread.
        """
        member = self._members.get(login.strip().lower())
        target = member.password_hash if member is not None else self._dummy()
        try:
            matched = bool(self._hasher.verify(target, password))
        except (VerificationError, InvalidHashError):
            matched = False
        return member.address if member is not None and matched else None

    def _dummy(self) -> str:
        with self._dummy_lock:
            if self._dummy_hash is None:
                self._dummy_hash = self._hasher.hash(secrets.token_urlsafe(24))
            return self._dummy_hash

    # --- changes -------------------------------------------------------------------------------
    def add(self, address: str, password: str, aliases: Sequence[str] = ()) -> None:
        """Add a member and save. AccountError for a bad or taken address/alias, or a short password."""
        try:
            primary = normalize_address(address)
            extra = [normalize_address(alias) for alias in aliases]
        except ValueError as exc:
            raise AccountError(f"not a usable address: {exc}") from None
        self._check_password(password)
        password_hash = self._hasher.hash(password)
        member = Member(primary, password_hash, tuple(dict.fromkeys(a for a in extra if a != primary)))
        with self._locked():
            members = self._read(self.path)
            owners = {owned: other.address for other in members.values() for owned in other.addresses}
            if primary in members:
                raise AccountError(f"{primary} is already a member (remove it first to change it)")
            for owned in member.addresses:
                if owned in owners:
                    raise AccountError(f"{owned} already belongs to {owners[owned]}")
            members[primary] = member
            self._save(members)

    def set_password(self, address: str, password: str) -> None:
        """Replace a member's password and save."""
        self._check_password(password)
        password_hash = self._hasher.hash(password)
        with self._locked():
            members = self._read(self.path)
            key = address.strip().lower()
            if key not in members:
                raise AccountError(f"{address} is not a member")
            old = members[key]
            members[key] = Member(old.address, password_hash, old.aliases)
            self._save(members)

    def remove(self, address: str) -> None:
        """Remove a member (by primary address) and save. Raises AccountError if unknown."""
        with self._locked():
            members = self._read(self.path)
            key = address.strip().lower()
            if key not in members:
                raise AccountError(f"{address} is not a member")
            del members[key]
            self._save(members)

    def reload_if_changed(self) -> None:
        """Re-read the users file if it changed on disk; a broken file keeps the last good members."""
        stamp = users_stat(self.path)
        if stamp == self._stamp:
            return
        try:
            members = self._read(self.path)
        except ConfigError as exc:
            log_event(logger, "accounts.reload_failed", logging.ERROR, error=str(exc))
            self._stamp = stamp
            return
        self._members = members
        self._stamp = stamp
        log_event(logger, "accounts.reloaded", members=len(members))

    @staticmethod
    def _check_password(password: str) -> None:
        if len(password) < MIN_PASSWORD_LENGTH:
            raise AccountError(f"the password must have at least {MIN_PASSWORD_LENGTH} characters")

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with locked(self.path.with_name(f".{self.path.name}.lock")):
            yield

    def _save(self, members: dict[str, Member]) -> None:
        atomic_write(self.path, users_file_text(members).encode("utf-8"))
        self._members = members
        self._stamp = users_stat(self.path)
