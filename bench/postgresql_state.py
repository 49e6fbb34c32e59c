"""The benchmark's PostgreSQL: the tests' private cluster, made durable, with one database per target.

``bench/relay.py --state postgresql`` runs gateways with ``state.backend: postgresql`` on this
cluster. It is the cluster ``tests/postgresql.py`` starts for the test suite (``initdb`` + ``pg_ctl`` on
a free loopback port in a temporary folder, SCRAM passwords, run as the ``postgres`` user under
root), with one difference: the tests turn ``fsync`` off because they check logic, not disks, while a
benchmark compared with the fsynced files spool must pay for PostgreSQL's flushes too. So ``fsync``
and ``full_page_writes`` are set back on (``synchronous_commit`` is on by default, and the gateway
keeps it on) and ``shared_buffers`` gets PostgreSQL's default of 128 MB, then the server restarts.

Each target gets a fresh database, migrated by the gateway's own ``conduct-gateway state migrate``
(relay.py runs it), so one target's queue and audit chain never slow down the next.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

from gateway.state.fingerprints import KEY_BYTES
from gateway.state.registry import generate_key
from tests.postgresql import ClusterError, PostgresCluster, find_bindir

# Server settings for a fair comparison with the files backend (see the module docstring).
DURABLE = {"fsync": "on", "full_page_writes": "on", "synchronous_commit": "on", "shared_buffers": "128MB"}


class BenchCluster:
    """The private cluster: ``database(folder)`` gives a gateway's ``state`` and ``registry`` settings."""

    def __init__(self) -> None:
        bindir = find_bindir()
        if bindir is None:
            raise SystemExit(
                "bench/relay.py --state postgresql needs PostgreSQL's initdb and pg_ctl "
                "(apt-get install postgresql; `bash scripts/test` installs it)"
            )
        self.cluster = PostgresCluster(bindir)
        try:
            self.cluster.initialise()
            self.cluster.start()
            with self.cluster.admin() as connection:
                for name, value in DURABLE.items():
                    connection.execute(f"ALTER SYSTEM SET {name} = '{value}'".encode())
            # shared_buffers only changes at a restart; the others would take a reload.
            self.cluster.stop()
            self.cluster.start()
            with self.cluster.admin() as connection:
                row = connection.execute("SHOW server_version").fetchone()
                fsync = connection.execute("SHOW fsync").fetchone()
        except (ClusterError, OSError) as exc:
            self.cluster.close()
            raise SystemExit(
                f"bench/relay.py: the private PostgreSQL cluster did not start:\n{exc}"
            ) from None
        assert row is not None and fsync == ("on",)
        self.version = str(row[0]).split()[0]

    def postmaster_pid(self) -> int:
        """The server's root process: every backend, the WAL writer and the checkpointer are its children."""
        return int((self.cluster.data / "postmaster.pid").read_text().split()[0])

    def database(self, folder: Path) -> dict[str, Any]:
        """A fresh empty database for one target; the settings that point a gateway at it.

        The password goes to a file (0600) beside the target's gateways, as a deployment keeps it
        out of the settings; the case registry gets a key file every instance shares (PostgreSQL
        refuses the default key made beside one gateway's state).
        """
        folder.mkdir(parents=True, exist_ok=True)
        name = self.cluster.create_database()
        password_file = folder / "pg-password"
        registry_key = folder / "registry.key"
        for path, text in ((password_file, self.cluster.password), (registry_key, generate_key())):
            path.touch(mode=0o600)
            path.write_text(text + "\n")
        return {
            "state": {
                "backend": "postgresql",
                "postgresql": {"dsn": self.cluster.dsn(name), "password_file": str(password_file)},
            },
            "registry": {"key_env": None, "key_file": str(registry_key)},
        }

    def close(self) -> None:
        self.cluster.close()


def share_fingerprint_key(state_dirs: list[Path]) -> None:
    """Put one ``fingerprints.key`` in every instance's state folder (the gateways refuse differing keys)."""
    key = secrets.token_bytes(KEY_BYTES)
    for state_dir in state_dirs:
        state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = state_dir / "fingerprints.key"
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as file:
            file.write(key)
