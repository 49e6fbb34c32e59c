"""A private PostgreSQL cluster for the tests, from the distribution's packages (initdb + pg_ctl).

One cluster per session, in a temporary folder, on a free loopback port, with password (SCRAM)
authentication over TCP: the system's cluster, if any, is never used. initdb refuses to run as
root, so as root the cluster runs as the ``postgres`` system user, in a folder it owns. Each test
gets a fresh database: ``pg_database`` is a copy of a template with every migration applied
(CREATE DATABASE ... TEMPLATE), ``pg_empty_database`` has none.

Binaries are found with ``pg_config --bindir``, else in /usr/lib/postgresql/*/bin. Without them the
tests that need PostgreSQL are skipped saying why, or fail where CI requires the machine to run
them (``machine_cannot``); ``scripts/test`` installs the ``postgresql`` package.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from gateway.state.postgresql.database import Database
from gateway.state.postgresql.migrate import migrate
from tests.ports import restartable_port

SUPERUSER = "conduct_test"
TEMPLATE = "conduct_template"
SERVICE_USER = "postgres"  # the distribution's system user, for running the cluster as root


def find_bindir() -> Path | None:
    """Where initdb and pg_ctl are: ``pg_config --bindir``, else the newest /usr/lib/postgresql/*/bin."""
    candidates: list[Path] = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        result = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
        if result.returncode == 0:
            candidates.append(Path(result.stdout.strip()))
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: p.parent.name, reverse=True)
    candidates.extend(versions)
    for folder in candidates:
        if (folder / "initdb").is_file() and (folder / "pg_ctl").is_file():
            return folder
    return None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class ClusterError(RuntimeError):
    """The private cluster could not be made or started (carries its log)."""


class PostgresCluster:
    """A private cluster: ``start()``, ``stop()`` (the data stays, for outage tests), ``close()``."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="conduct-postgresql-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.port = restartable_port()  # the outage tests stop and start it on the same port
        self.host = "127.0.0.1"
        self.password = secrets.token_urlsafe(18)
        self._as_service_user = os.geteuid() == 0
        self._counter = itertools.count(1)
        self.running = False

    def _run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        extra: dict[str, Any] = {}
        if self._as_service_user:
            entry = pwd.getpwnam(SERVICE_USER)
            extra = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "HOME": str(self.root)}
        return subprocess.run(
            args,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env=env,
            cwd=self.root,
            **extra,
        )

    def _failure(self, what: str, result: subprocess.CompletedProcess[str]) -> ClusterError:
        log = self.log.read_text(errors="replace")[-4000:] if self.log.exists() else ""
        return ClusterError(f"{what} (exit {result.returncode}):\n{result.stdout}\n{result.stderr}\n{log}")

    def initialise(self) -> None:
        if self._as_service_user:
            try:
                entry = pwd.getpwnam(SERVICE_USER)
            except KeyError:
                raise ClusterError(
                    f"running as root, and there is no {SERVICE_USER!r} user to run PostgreSQL as"
                ) from None
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        self.root.chmod(0o700)
        password_file = self.root / "superuser-password"
        password_file.write_text(self.password + "\n")
        if self._as_service_user:
            entry = pwd.getpwnam(SERVICE_USER)
            os.chown(password_file, entry.pw_uid, entry.pw_gid)
        result = self._run(
            str(self.bindir / "initdb"),
            "-D", str(self.data),
            "-U", SUPERUSER,
            f"--pwfile={password_file}",
            "--auth-host=scram-sha-256",
            "--auth-local=scram-sha-256",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
        )  # fmt: skip
        password_file.unlink()
        if result.returncode != 0:
            raise self._failure("initdb failed", result)
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.root}'",
            "max_connections": "200",
            # The tests check the gateway's logic, not the disk: a private cluster need not fsync.
            "fsync": "off",
            "full_page_writes": "off",
            "shared_buffers": "32MB",
            "log_min_messages": "warning",
        }
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.writelines(f"{key} = {value}\n" for key, value in settings.items())

    def start(self) -> None:
        result = self._run(
            str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "start"
        )
        if result.returncode != 0:
            raise self._failure("pg_ctl start failed", result)
        self.running = True

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``immediate``: as after a crash); its data stays for ``start()``."""
        result = self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")
        if result.returncode != 0:
            raise self._failure("pg_ctl stop failed", result)
        self.running = False

    def close(self) -> None:
        if self.running:
            with contextlib.suppress(ClusterError, subprocess.TimeoutExpired):
                self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    def dsn(self, dbname: str = "postgres") -> str:
        """The connection string without the password (as a gateway's settings hold it)."""
        return f"host={self.host} port={self.port} user={SUPERUSER} dbname={dbname}"

    def admin(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self.dsn(), password=self.password, autocommit=True)

    def create_database(self, template: str | None = None) -> str:
        name = f"test_{os.getpid()}_{next(self._counter)}"
        with self.admin() as connection:
            query = f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else "")
            connection.execute(query.encode())
        return name

    def drop_database(self, name: str) -> None:
        with self.admin() as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'.encode())


@dataclass(frozen=True)
class ScratchDatabase:
    """One test's database: its connection string (no password) and the password beside it."""

    cluster: PostgresCluster
    name: str

    @property
    def dsn(self) -> str:
        return self.cluster.dsn(self.name)

    @property
    def password(self) -> str:
        return self.cluster.password

    def connect(self, **options: Any) -> Database:
        return Database.connect(self.dsn, password=self.password, **options)


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PostgresCluster]:
    """The session's private PostgreSQL (skipped with a reason, or failed in CI, when it cannot run)."""
    from tests.conftest import machine_cannot

    bindir = find_bindir()
    if bindir is None:
        machine_cannot("PostgreSQL's initdb and pg_ctl are not installed (apt-get install postgresql)")
    cluster = PostgresCluster(bindir)
    try:
        cluster.initialise()
        cluster.start()
    except (ClusterError, OSError, subprocess.TimeoutExpired) as exc:
        cluster.close()
        pytest.fail(f"the private PostgreSQL cluster did not start:\n{exc}")
    try:
        with cluster.admin() as connection:
            connection.execute(f'CREATE DATABASE "{TEMPLATE}"'.encode())
        with Database.connect(cluster.dsn(TEMPLATE), password=cluster.password) as database:
            migrate(database)
        yield cluster
    finally:
        cluster.close()


@pytest.fixture
def pg_database(pg_cluster: PostgresCluster) -> Iterator[ScratchDatabase]:
    """A fresh database with every migration applied, dropped after the test."""
    name = pg_cluster.create_database(template=TEMPLATE)
    yield ScratchDatabase(pg_cluster, name)
    pg_cluster.drop_database(name)


@pytest.fixture
def pg_empty_database(pg_cluster: PostgresCluster) -> Iterator[ScratchDatabase]:
    """A fresh database with no schema at all (for the migration tests)."""
    name = pg_cluster.create_database()
    yield ScratchDatabase(pg_cluster, name)
    pg_cluster.drop_database(name)


@pytest.fixture
def pg_db(pg_database: ScratchDatabase) -> Iterator[Database]:
    """A connected ``Database`` on a fresh migrated database."""
    with pg_database.connect() as database:
        yield database
