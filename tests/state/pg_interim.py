"""Interim: a fresh database per test on a cluster named by PGQ_DSN (until the pg foundation lands)."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

MIGRATION = Path(__file__).parents[2] / "gateway/state/postgresql/migrations/0002_queue_holds.sql"


@pytest.fixture
def pg_connect() -> Iterator[Any]:
    base = os.environ["PGQ_DSN"]
    name = f"t_{secrets.token_hex(6)}"
    with psycopg.connect(base, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    dsn = f"{base} dbname={name}"
    with psycopg.connect(dsn) as connection:
        connection.execute(MIGRATION.read_text())

    @contextlib.contextmanager
    def connect() -> Iterator[psycopg.Connection[Any]]:
        with psycopg.connect(dsn) as connection:
            yield connection

    yield connect
    with psycopg.connect(base, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE {name} WITH (FORCE)")
