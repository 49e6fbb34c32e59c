"""The case registry: the committee's identity key, kept apart from the policy and encrypted at rest.

The cases (code names, people with their names, aliases, addresses and usernames, consent, and what
else the policy's ``Case`` model holds) live in one file, by default ``<state_dir>/registry/cases.registry``
(folder 0700, file 0600). The file is ``MAGIC || nonce || AES-256-GCM(JSON)``: authenticated
encryption, so a wrong key and a file altered by even one bit are both told apart from a good file
and refused with a clear error; the JSON is padded to a multiple of ``PAD_TO`` bytes so the file size
says little about how many people it holds. Writes are atomic (temporary file, fsync, rename,
directory fsync) and serialised by an advisory lock, so concurrent ``case`` commands never lose an
edit and the running gateway never reads a torn file.

The key (32 random bytes, written as base64) comes from, in order:

1. the environment variable named by ``registry.key_env`` (default ``CONDUCT_REGISTRY_KEY``), if set;
2. ``registry.key_file``, if configured (it must exist: a missing secret is a configuration error);
3. otherwise ``<registry folder>/registry.key``, created (0600) on the first write. That keeps the
   first start working with no set-up, but a key next to the data it protects protects nothing
   against someone who copies the whole state folder: production keeps the key elsewhere.

A new key is never made while a registry exists: the registry would become unreadable.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
import logging
import os
import secrets
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pydantic import ValidationError

from gateway.errors import ConfigError, RegistryUnreadable
from gateway.logs import log_event
from gateway.policy.config import Case
from gateway.policy.loader import RegistryCases
from gateway.settings import GatewaySettings, RegistrySettings
from gateway.state.files import atomic_write, create_new, locked, private_directory
from gateway.state.layout import StateLayout
from gateway.yamlsource import format_loc

log = logging.getLogger("gateway.state.registry")

DEFAULT_KEY_NAME = "registry.key"
MAGIC = b"conduct-gateway case registry v1\n"
FORMAT = 1
KEY_BYTES = 32
NONCE_BYTES = 12
PAD_TO = 4096


@dataclass(frozen=True)
class RegistryKey:
    """The key, and where it came from (for messages: never the key itself)."""

    secret: bytes
    source: str
    in_state_dir: bool = False  # the generated default key, kept next to the registry


@dataclass(frozen=True)
class RegistrySnapshot:
    """One version of the registry file: its cases and the stamp the policy reload compares."""

    cases: tuple[Case, ...]
    mtime_ns: int
    size: int
    inode: int  # every write is a new file: also tells apart two writes within one clock tick
    sha256: str  # of the encrypted file: changes with every write, reveals nothing

    def for_policy(self, path: Path) -> RegistryCases:
        return RegistryCases(cases=self.cases, digest=self.sha256, origin=f"case registry {path}")


def parse_key(text: str, source: str) -> bytes:
    """A key as written by ``generate_key``: 32 bytes in base64 (standard or URL-safe)."""
    value = text.strip()
    try:
        if "-" in value or "_" in value:
            secret = base64.urlsafe_b64decode(value.encode("ascii"))
        else:
            secret = base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        secret = b""
    if len(secret) != KEY_BYTES:
        raise ConfigError(
            f"{source}: not a case registry key (expected {KEY_BYTES} random bytes in base64, 44 "
            "characters, as made by `conduct-gateway case new-key FILE` or `openssl rand -base64 32`)"
        )
    return secret


def generate_key() -> str:
    """A new random key, as text for a key file or an environment variable."""
    return base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode("ascii")


def write_key_file(path: Path) -> None:
    """Create ``path`` (0600) holding a new key; refuses to overwrite an existing file."""
    try:
        private_directory(path.parent)
        create_new(path, (generate_key() + "\n").encode("ascii"))
    except FileExistsError:
        raise ConfigError(f"{path}: a file already exists; a key is never overwritten") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot create the key file: {exc.strerror}") from None


class CaseRegistry:
    """The encrypted case file. Reading needs the key only when the file exists."""

    def __init__(
        self,
        path: Path,
        settings: RegistrySettings,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.path = path
        self.settings = settings
        self._environ = os.environ if environ is None else environ
        self.default_key_file = path.parent / DEFAULT_KEY_NAME

    @classmethod
    def from_settings(
        cls, settings: GatewaySettings, environ: Mapping[str, str] | None = None
    ) -> CaseRegistry:
        return cls(registry_path(settings), settings.registry, environ)

    # -- the key -------------------------------------------------------------------------------

    def key(self, *, create: bool = False) -> RegistryKey:
        """The configured key; with ``create``, the default key file is made when nothing else is set."""
        name = self.settings.key_env
        if name and name in self._environ:
            source = f"environment variable {name}"
            return RegistryKey(parse_key(self._environ[name], source), source)
        if self.settings.key_file is not None:
            return RegistryKey(
                self._read_key_file(self.settings.key_file), f"key file {self.settings.key_file}"
            )
        path = self.default_key_file
        if not path.exists():
            if not create or self.path.exists():
                hint = f"set the environment variable {name}" if name else "set registry.key_env"
                raise ConfigError(
                    f"{self.path}: no key for the case registry: {hint} or registry.key_file "
                    f"(the default key file {path} does not exist)"
                )
            write_key_file(path)
            log_event(log, "registry-key-created", logging.WARNING, file=path, advice=KEY_ADVICE)
        return RegistryKey(self._read_key_file(path), f"key file {path}", in_state_dir=True)

    @staticmethod
    def key_from_file(path: Path) -> RegistryKey:
        """A key read from ``path`` (a file ``case new-key`` wrote)."""
        return RegistryKey(CaseRegistry._read_key_file(path), f"key file {path}")

    @staticmethod
    def _read_key_file(path: Path) -> bytes:
        try:
            text = path.read_text(encoding="ascii")
        except FileNotFoundError:
            raise ConfigError(f"{path}: the case registry's key file does not exist") from None
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not a key"
            raise ConfigError(f"{path}: cannot read the case registry's key file: {reason}") from None
        return parse_key(text, f"key file {path}")

    def key_warning(self) -> str | None:
        """A warning for the operator when the key lies next to the registry it protects."""
        try:
            key = self.key()
        except ConfigError:
            return None
        return KEY_ADVICE if key.in_state_dir and self.path.exists() else None

    # -- reading -------------------------------------------------------------------------------

    def stat(self) -> tuple[int, int, int] | None:
        """(mtime_ns, size, inode) of the file, or None when there is no registry yet."""
        try:
            info = self.path.stat()
        except FileNotFoundError:
            return None
        return info.st_mtime_ns, info.st_size, info.st_ino

    def digest(self) -> str | None:
        """SHA-256 of the encrypted file, or None when there is no registry yet."""
        try:
            return hashlib.sha256(self.path.read_bytes()).hexdigest()
        except FileNotFoundError:
            return None

    def read(self) -> RegistrySnapshot | None:
        """Decrypt and validate the registry; None when there is none. ConfigError names the file."""
        try:
            with self.path.open("rb") as handle:
                data = handle.read()
                info = os.fstat(handle.fileno())
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise RegistryUnreadable(f"{self.path}: cannot read the case registry: {exc.strerror}") from None
        cases = self._decode(data, self.key())
        digest = hashlib.sha256(data).hexdigest()
        return RegistrySnapshot(cases, info.st_mtime_ns, info.st_size, info.st_ino, digest)

    def cases(self) -> tuple[Case, ...]:
        snapshot = self.read()
        return snapshot.cases if snapshot is not None else ()

    def _decode(self, data: bytes, key: RegistryKey) -> tuple[Case, ...]:
        if not data.startswith(MAGIC) or len(data) < len(MAGIC) + NONCE_BYTES + 16:
            raise RegistryUnreadable(f"{self.path}: not a conduct-gateway case registry (or it is damaged)")
        nonce = data[len(MAGIC) : len(MAGIC) + NONCE_BYTES]
        try:
            plain = AESGCM(key.secret).decrypt(nonce, data[len(MAGIC) + NONCE_BYTES :], MAGIC)
        except InvalidTag:
            raise RegistryUnreadable(
                f"{self.path}: the case registry cannot be decrypted with the {key.source}: either the "
                "key is not the one it was written with, or the file was altered or damaged. Restore "
                "the file (and its key) from a backup; never edit it by hand."
            ) from None
        try:
            document = json.loads(plain)
            if not isinstance(document, dict) or document.get("format") != FORMAT:
                raise ValueError("unknown format")
            raw_cases = document["cases"]
            if not isinstance(raw_cases, list):
                raise ValueError("cases is not a list")
        except (ValueError, KeyError, UnicodeDecodeError):
            raise RegistryUnreadable(
                f"{self.path}: the case registry's content is not in a known format"
            ) from None
        cases = []
        for index, item in enumerate(raw_cases):
            try:
                cases.append(Case.model_validate(item))
            except ValidationError as exc:
                # include_input=False: the values are identities and must not reach a log.
                problems = "; ".join(
                    f"key {format_loc(tuple(error['loc'])) or '(case)'}: {error['msg']}"
                    for error in exc.errors(include_url=False, include_input=False)
                )
                raise RegistryUnreadable(f"{self.path}: case number {index + 1}: {problems}") from None
        return tuple(cases)

    # -- writing -------------------------------------------------------------------------------

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Serialise read-modify-write cycles of the registry between processes."""
        private_directory(self.path.parent)
        with locked(self.path.parent / f".{self.path.name}.lock"):
            yield

    def update(self, change: Callable[[tuple[Case, ...]], Sequence[Case]]) -> tuple[Case, ...]:
        """Read, apply ``change`` and write back atomically, under the lock; returns the new cases."""
        with self.locked():
            key = self.key(create=True)
            current = self.read()
            cases = tuple(change(current.cases if current is not None else ()))
            self._write(cases, key)
            return cases

    def rekey(self, new_key: RegistryKey) -> int:
        """Re-encrypt the registry with ``new_key`` (read with the configured key, atomically, under
        the lock); returns how many cases it holds. ConfigError if there is no registry yet."""
        with self.locked():
            current = self.read()
            if current is None:
                raise ConfigError(f"{self.path}: there is no case registry yet: nothing to re-encrypt")
            self._write(current.cases, new_key)
            return len(current.cases)

    def write(self, cases: Sequence[Case]) -> None:
        """Replace the registry's content (atomically, under the lock)."""
        self.update(lambda _current: cases)

    def _write(self, cases: Sequence[Case], key: RegistryKey) -> None:
        data = encrypt_cases(cases, key)
        try:
            private_directory(self.path.parent)
            atomic_write(self.path, data)
        except OSError as exc:
            raise ConfigError(f"{self.path}: cannot write the case registry: {exc.strerror}") from None


def encrypt_cases(cases: Sequence[Case], key: RegistryKey) -> bytes:
    """The registry's bytes for ``cases``: ``MAGIC || nonce || AES-256-GCM(padded JSON)``."""
    document: dict[str, Any] = {
        "format": FORMAT,
        "cases": [case.model_dump(mode="json") for case in cases],
    }
    plain = json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    plain += b" " * (-len(plain) % PAD_TO)  # JSON ignores trailing blanks
    nonce = secrets.token_bytes(NONCE_BYTES)
    return MAGIC + nonce + AESGCM(key.secret).encrypt(nonce, plain, MAGIC)


KEY_ADVICE = (
    "the case registry's key is kept in the state folder, next to the registry it protects; anyone who "
    "copies the state folder can read every case. In production keep the key elsewhere: set "
    "registry.key_env or registry.key_file (see docs/guides/case-registry.md)"
)


def registry_path(settings: GatewaySettings) -> Path:
    """Where the registry file is: ``registry.path``, or ``<state_dir>/registry/cases.registry``."""
    if settings.registry.path is not None:
        return settings.registry.path
    return StateLayout(settings.state_dir).registry
