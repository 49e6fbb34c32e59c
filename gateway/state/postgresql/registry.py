"""The case registry in PostgreSQL: the files backend's encrypted bytes, kept in one row.

The row holds exactly what the registry file would (``MAGIC || nonce || AES-256-GCM(JSON)``): the
database never sees a case, a name or an address in clear, and a wrong key or an altered row is
refused as a damaged file is. The key never goes to the database: every gateway reads it from
``registry.key_env`` or ``registry.key_file``, and all of them must have the same one. The default
key file next to the state (the files backend's first-start convenience) is refused here: a key
made on one host would leave the others unable to read the registry.

Read-modify-write cycles (``update``, ``rekey``) lock the row's transaction with an advisory lock,
so concurrent ``case`` commands on different hosts never lose an edit. ``stat`` gives the row's
version (a counter moved by every write) where the files backend gives the file's mtime and inode.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from gateway.errors import ConfigError, RegistryUnreadable, StateError
from gateway.policy.config import Case
from gateway.settings import GatewaySettings
from gateway.state.postgresql.database import Connection, Database
from gateway.state.registry import CaseRegistry, RegistryKey, RegistrySnapshot, encrypt_cases

# pg_advisory_xact_lock key serialising registry edits ("cgregist").
REGISTRY_LOCK = 0x6367726567697374
WHERE = Path("PostgreSQL table case_registry")


class PostgresqlCaseRegistry(CaseRegistry):
    """The ``CasesPort`` of the PostgreSQL backend (the key handling of ``CaseRegistry``)."""

    def __init__(
        self,
        settings: GatewaySettings,
        database: Callable[[], Database],
        environ: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(WHERE, settings.registry, environ)
        self._database = database

    def key(self, *, create: bool = False) -> RegistryKey:
        name = self.settings.key_env
        if (name and name in self._environ) or self.settings.key_file is not None:
            return super().key()
        raise ConfigError(
            "no key for the case registry: with state.backend postgresql every gateway needs the same "
            f"key, from {'the environment variable ' + name if name else 'registry.key_env'} or "
            "registry.key_file (make one with: conduct-gateway case new-key FILE)"
        )

    def key_warning(self) -> str | None:
        return None  # the key is never kept beside the data here

    def _row(self, connection: Connection) -> tuple[int, bytes] | None:
        row = connection.execute("SELECT version, data FROM case_registry").fetchone()
        return (int(row[0]), bytes(row[1])) if row is not None else None

    def _fetch(self) -> tuple[int, bytes] | None:
        try:
            with self._database().connection() as connection:
                return self._row(connection)
        except StateError as exc:
            raise RegistryUnreadable(f"the case registry cannot be read: {exc}") from exc

    def stat(self) -> tuple[int, int, int] | None:
        found = self._fetch()
        return (found[0], len(found[1]), found[0]) if found is not None else None

    def digest(self) -> str | None:
        found = self._fetch()
        return hashlib.sha256(found[1]).hexdigest() if found is not None else None

    def read(self) -> RegistrySnapshot | None:
        found = self._fetch()
        if found is None:
            return None
        version, data = found
        cases = self._decode(data, self.key())
        return RegistrySnapshot(cases, version, len(data), version, hashlib.sha256(data).hexdigest())

    def _replace(
        self, change: Callable[[tuple[Case, ...] | None], Sequence[Case]], key: Callable[[], RegistryKey]
    ) -> tuple[Case, ...]:
        """Under the lock: read (None: no registry yet), change, encrypt with ``key()``, write."""
        try:
            with self._database().connection() as connection:
                connection.execute("SELECT pg_advisory_xact_lock(%s)", (REGISTRY_LOCK,))
                found = self._row(connection)
                current = self._decode(found[1], self.key()) if found is not None else None
                cases = tuple(change(current))
                connection.execute(
                    "INSERT INTO case_registry (version, data) VALUES (1, %s)"
                    " ON CONFLICT (only_row) DO UPDATE"
                    " SET version = case_registry.version + 1, data = excluded.data, written_at = now()",
                    (encrypt_cases(cases, key()),),
                )
                return cases
        except StateError as exc:
            raise ConfigError(f"the case registry cannot be written: {exc}") from exc

    def update(self, change: Callable[[tuple[Case, ...]], Sequence[Case]]) -> tuple[Case, ...]:
        return self._replace(lambda current: change(current or ()), self.key)

    def rekey(self, new_key: RegistryKey) -> int:
        def same(current: tuple[Case, ...] | None) -> Sequence[Case]:
            if current is None:
                raise ConfigError("there is no case registry yet: nothing to re-encrypt")
            return current

        return len(self._replace(same, lambda: new_key))

    def write(self, cases: Sequence[Case]) -> None:
        self._replace(lambda _current: cases, self.key)
