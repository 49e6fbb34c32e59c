"""``Database``: a pool of PostgreSQL connections, each use one transaction, driver errors made ours.

psycopg 3 with its ``ConnectionPool`` (the synchronous API): every store method is a short
transaction, and the asynchronous ports run it in a thread (``run``), so the event loop never waits
on the network. A failure to reach the server, or a connection lost mid-transaction, becomes
``StateUnavailable`` (new mail gets 451 4.3.0 and the client retries); any other database error
escaping a transaction becomes ``StateError`` naming only its SQLSTATE, never the values involved
(an error's detail can quote a row, and a row can hold a digest of an identity).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import weakref
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeAlias, TypeVar

import psycopg
import psycopg_pool
from psycopg import conninfo

from gateway.errors import ConfigError, StateError, StateUnavailable
from gateway.settings import PostgresqlSettings

T = TypeVar("T")
Connection: TypeAlias = "psycopg.Connection[tuple[Any, ...]]"

APPLICATION_NAME = "conduct-gateway"


def describe(dsn: str) -> str:
    """Where a connection string points (user@host:port/dbname), for messages: never a secret."""
    try:
        parts = conninfo.conninfo_to_dict(dsn)
    except psycopg.Error:
        return "the configured database"
    host = str(parts.get("host") or parts.get("hostaddr") or "local socket")
    port = f":{parts['port']}" if parts.get("port") else ""
    user = f"{parts['user']}@" if parts.get("user") else ""
    return f"postgresql://{user}{host}{port}/{parts.get('dbname') or ''}"


def read_password(settings: PostgresqlSettings, environ: Mapping[str, str]) -> str | None:
    """The password from ``password_env``, else ``password_file``; None leaves it to libpq
    (``PGPASSWORD``, ``PGPASSFILE``, ``~/.pgpass``)."""
    if settings.password_env:
        value = environ.get(settings.password_env)
        if value is None:
            raise ConfigError(
                f"state.postgresql.password_env names {settings.password_env}, which is not set"
            )
        return value
    if settings.password_file is not None:
        try:
            return Path(settings.password_file).read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            raise ConfigError(
                f"state.postgresql.password_file: cannot read {settings.password_file}: {exc.strerror}"
            ) from None
    return None


def _configure(connection: Connection) -> None:
    """Each new connection: UTC, and a commit that is durable before it returns (never ``off``)."""
    with connection.cursor() as cursor:
        cursor.execute("SET TIME ZONE 'UTC'")
        row = cursor.execute("SHOW synchronous_commit").fetchone()
        # on, remote_write, remote_apply and local all wait for the local flush; only off does not.
        if row is not None and row[0] == "off":
            cursor.execute("SET synchronous_commit TO on")
    connection.commit()


class Database:
    """The pool one process uses. ``connection()`` gives a connection inside one transaction."""

    def __init__(self, pool: psycopg_pool.ConnectionPool[Connection], where: str, timeout: float) -> None:
        self._pool = pool
        self.where = where  # user@host:port/dbname, for messages
        self._timeout = timeout

    @classmethod
    def connect(
        cls, dsn: str, *, password: str | None = None, pool_size: int = 10, timeout: float = 10.0
    ) -> Database:
        """A pool for ``dsn`` (opened at once, connecting in the background: a server that is down
        now makes the first ``connection()`` fail with ``StateUnavailable``, not this call)."""
        kwargs: dict[str, Any] = {
            "application_name": APPLICATION_NAME,
            "connect_timeout": max(1, round(timeout)),
        }
        if password is not None:
            kwargs["password"] = password
        idle = _IdleCheck()
        pool: psycopg_pool.ConnectionPool[Connection] = psycopg_pool.ConnectionPool(
            dsn,
            kwargs=kwargs,
            min_size=1,
            max_size=pool_size,
            open=False,
            configure=_configure,
            check=idle.check,
            reset=idle.returned,
            timeout=timeout,
            # The pool retries a lost server with a doubling delay until this runs out (5 minutes by
            # default): after a long outage its next try could be minutes off, and every call until
            # then would fail although the server is back. Giving up after one timeout lets the
            # next call that waits start a fresh attempt at once.
            reconnect_timeout=timeout,
            name=APPLICATION_NAME,
        )
        pool.open(wait=False)
        return cls(pool, describe(dsn), timeout)

    @classmethod
    def from_settings(
        cls, settings: PostgresqlSettings, environ: Mapping[str, str] | None = None
    ) -> Database:
        """The pool ``state.postgresql`` describes, with the password from where it says."""
        password = read_password(settings, os.environ if environ is None else environ)
        return cls.connect(
            settings.dsn, password=password, pool_size=settings.pool_size, timeout=settings.connect_timeout
        )

    @contextlib.contextmanager
    def connection(self) -> Iterator[Connection]:
        """One transaction: committed when the block ends, rolled back if it raises.

        Inside the block the driver's errors are seen as they are (a caller may catch a unique
        violation); what escapes is ``StateUnavailable`` or ``StateError``.
        """
        try:
            with self._pool.connection(timeout=self._timeout) as connection:
                yield connection
        except (psycopg.OperationalError, psycopg.InterfaceError, psycopg_pool.PoolTimeout) as exc:
            if (getattr(exc, "sqlstate", None) or "").startswith(TRANSACTION_ROLLBACK):
                # A deadlock or serialization failure (an OperationalError to the driver): the server
                # is there and rolled this transaction back; another try may well succeed.
                raise StateUnavailable(
                    f"PostgreSQL at {self.where} rolled the operation back ({_reason(exc)}); try again"
                ) from exc
            # The other idle connections are likely dead too (a server restart, a failover): drop
            # them now, so the next transaction gets a fresh one instead of another failure.
            with contextlib.suppress(psycopg.Error, psycopg_pool.PoolClosed):
                self._pool.check()
            raise StateUnavailable(
                f"PostgreSQL at {self.where} cannot be reached or lost the connection "
                f"({_reason(exc)}); the operation was not confirmed"
            ) from exc
        except psycopg_pool.PoolClosed as exc:
            raise StateUnavailable(f"the connection pool to {self.where} is closed") from exc
        except psycopg.Error as exc:
            raise StateError(
                f"PostgreSQL at {self.where} refused an operation ({_reason(exc)}); it was rolled back"
            ) from exc

    async def run(self, work: Callable[[Connection], T]) -> T:
        """``work(connection)`` in one transaction, on a thread (for the asynchronous ports)."""
        return await asyncio.to_thread(self._run, work)

    def _run(self, work: Callable[[Connection], T]) -> T:
        with self.connection() as connection:
            return work(connection)

    def ping(self) -> None:
        """One round trip (``StateUnavailable`` when the server cannot be reached)."""
        with self.connection() as connection:
            connection.execute("SELECT 1")

    def statistics(self) -> dict[str, int]:
        """The pool's counters (connections open, in use, waiting requests...)."""
        return dict(self._pool.get_stats())

    def close(self) -> None:
        self._pool.close()

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


TRANSACTION_ROLLBACK = "40"
"""SQLSTATE class of a transaction the server rolled back (deadlock, serialization failure)."""

IDLE_CHECK_AFTER = 1.0
"""Seconds a pooled connection may sit unused before it is checked (one round trip) when handed out."""


class _IdleCheck:
    """The pool's ``check``: a connection unused for a while gets a round trip before it is handed out.

    The server may have closed it meanwhile (a restart, a failover, an idle timeout); the driver
    only finds out when it is used, and a transaction that fails that way answers 451. Connections
    in steady use are handed out without the round trip (a failure then is a real outage).
    """

    def __init__(self) -> None:
        self._returned: weakref.WeakKeyDictionary[Connection, float] = weakref.WeakKeyDictionary()

    def check(self, connection: Connection) -> None:
        returned = self._returned.pop(connection, None)
        if returned is None or time.monotonic() - returned >= IDLE_CHECK_AFTER:
            psycopg_pool.ConnectionPool.check_connection(connection)  # raises: the pool drops it

    def returned(self, connection: Connection) -> None:
        self._returned[connection] = time.monotonic()


def _reason(exc: BaseException) -> str:
    """The error's class and SQLSTATE, never its detail (which may quote values)."""
    state = getattr(exc, "sqlstate", None)
    name = type(exc).__name__
    return f"{name}, SQLSTATE {state}" if state else name
