"""The `state` section: which backend keeps the shared stores, and how to reach PostgreSQL."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, field_validator, model_validator

from gateway.settings_base import ENV_PREFIX, Seconds, Section

LEASE_MIN_SECONDS = 2.0
LEASE_MAX_SECONDS = 3600.0

# Keys of a libpq connection string that would put a secret in the settings file.
_DSN_SECRETS = ("password", "passfile")


def _check_dsn(value: str) -> str:
    """A libpq connection string or URI without a password: the password comes from elsewhere."""
    from psycopg import conninfo  # imported here: only PostgreSQL deployments pay for it

    if not value.strip():
        return value
    try:
        parts = conninfo.conninfo_to_dict(value)
    except Exception as exc:  # psycopg.ProgrammingError: the string cannot be parsed
        raise ValueError(f"not a PostgreSQL connection string or URI: {exc}") from None
    secrets = [key for key in _DSN_SECRETS if parts.get(key)]
    if secrets:
        raise ValueError(
            f"the connection string holds {' and '.join(secrets)}: keep the password out of the settings "
            "(use password_env or password_file, or libpq's PGPASSWORD or ~/.pgpass)"
        )
    return value


class PostgresqlSettings(Section):
    """The PostgreSQL database several gateways share (used when `state.backend` is `postgresql`).

    The password never goes in this file: it comes from `password_env`, else `password_file`, else
    libpq's own sources (the `PGPASSWORD` variable, the `PGPASSFILE` file or `~/.pgpass`).
    """

    dsn: Annotated[str, AfterValidator(_check_dsn)] = Field(
        "",
        description=(
            "libpq connection string or URI without the password, e.g. `host=db.example.org "
            "dbname=conduct user=gateway sslmode=verify-full` or `postgresql://gateway@db.example.org/conduct`."
        ),
    )
    password_env: str | None = Field(
        None,
        description=(
            "Name of the environment variable holding the password (not CONDUCT_GATEWAY_*: that prefix "
            "is for settings)."
        ),
    )
    password_file: Path | None = Field(
        None, description="File holding the password (one line), used when `password_env` is not set."
    )
    pool_size: Annotated[int, Field(ge=1, le=100)] = Field(
        10, description="Connections each gateway process keeps open at most."
    )
    connect_timeout: Seconds = Field(
        10.0,
        description=(
            "Wait this long for a connection (new or from the pool); then the operation fails as "
            "PostgreSQL unavailable (new mail gets 451 4.3.0 and is retried by the client)."
        ),
    )
    lease_seconds: Seconds = Field(
        60.0,
        description=(
            "How long a gateway's claim on a message it is delivering outlives the gateway (renewed "
            "every quarter of it while the gateway runs): the messages of a gateway that died are "
            "taken over by the others after this long. Shorter: faster take-over; longer: fewer "
            "duplicates when a gateway cannot reach PostgreSQL for a while. Between 2 seconds and 1 "
            "hour, and at least twice `connect_timeout`."
        ),
    )

    @field_validator("lease_seconds")
    @classmethod
    def _lease_bounds(cls, seconds: float) -> float:
        # Below 2 s the heartbeat (every quarter lease) would renew claims faster than a busy
        # database commits; above an hour a dead gateway's mail would wait longer than retries do.
        if not LEASE_MIN_SECONDS <= seconds <= LEASE_MAX_SECONDS:
            raise ValueError(
                f"lease_seconds must be between {LEASE_MIN_SECONDS:g} and {LEASE_MAX_SECONDS:g} seconds"
            )
        return seconds

    @model_validator(mode="after")
    def _lease_outlasts_a_timeout(self) -> PostgresqlSettings:
        # A renewal that waits a whole connect_timeout must still land before the lease runs out.
        if self.lease_seconds < 2 * self.connect_timeout:
            raise ValueError(
                f"lease_seconds ({self.lease_seconds:g}s) must be at least twice connect_timeout "
                f"({self.connect_timeout:g}s): a renewal that waits for a connection would lose its claims"
            )
        return self

    @field_validator("password_env")
    @classmethod
    def _not_a_setting(cls, name: str | None) -> str | None:
        if name is not None and name.upper().startswith(ENV_PREFIX):
            raise ValueError(f"{ENV_PREFIX}* variables are read as settings: name another variable")
        return name


class StateSettings(Section):
    """Where the shared stores live: local files (one gateway) or PostgreSQL (several gateways).

    `state_dir` is used by both backends (TLS material, locks, the local Maildir).
    """

    backend: Literal["files", "postgresql"] = Field(
        "files",
        description=(
            "`files`: the queue, holds, audit trail, ledger, fingerprints, cases and accounts in "
            "`state_dir` (one gateway). `postgresql`: in the database `postgresql.dsn` names, shared by "
            "every gateway that names it."
        ),
    )
    postgresql: PostgresqlSettings = PostgresqlSettings()

    @model_validator(mode="after")
    def _dsn_when_postgresql(self) -> StateSettings:
        if self.backend == "postgresql" and not self.postgresql.dsn.strip():
            raise ValueError(
                "state.backend is postgresql but state.postgresql.dsn is empty: name the database "
                "(e.g. host=db.example.org dbname=conduct user=gateway)"
            )
        return self
