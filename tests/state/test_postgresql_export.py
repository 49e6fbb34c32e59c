"""`conduct-gateway state export`: PostgreSQL back to files, all or nothing; files -> import -> export."""

from __future__ import annotations

import contextlib
import shutil
import sqlite3
import time
from pathlib import Path

import pytest
from argon2 import PasswordHasher
from click.testing import CliRunner

from gateway.cli import main
from gateway.review.tokens import new_token
from gateway.settings import GatewaySettings
from gateway.state.accounts import Accounts
from gateway.state.holds import HoldStore
from gateway.state.opening import open_state
from gateway.state.postgresql.opening import close_shared_databases, shared_database
from tests.postgresql import ScratchDatabase

from .conftest import backend_settings
from .test_holds import record
from .test_postgresql_import import REPORT, _fill

FAST = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)


def _yaml(settings: GatewaySettings, path: Path) -> Path:
    postgresql = settings.state.postgresql
    path.write_text(
        f"state_dir: {settings.state_dir}\n"
        f"auth:\n  users_file: {settings.auth.users_file}\n"
        f"registry:\n  key_env: null\n  key_file: {settings.registry.key_file}\n"
        "state:\n  backend: postgresql\n  postgresql:\n"
        f'    dsn: "{postgresql.dsn}"\n    password_file: {postgresql.password_file}\n'
    )
    return path


def _as_files(settings: GatewaySettings) -> GatewaySettings:
    return settings.model_copy(update={"state": settings.state.model_copy(update={"backend": "files"})})


def _elsewhere(settings: GatewaySettings, folder: Path) -> GatewaySettings:
    """The same database, exported into another state folder and users file."""
    return settings.model_copy(
        update={
            "state_dir": folder / "state",
            "auth": settings.auth.model_copy(update={"users_file": folder / "users.passwd"}),
        }
    )


def _rows(path: Path, query: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(path) as connection:
        return sorted(connection.execute(query).fetchall())


@pytest.fixture
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> GatewaySettings:
    return backend_settings(request, tmp_path, "postgresql")


def test_files_import_export_gives_the_same_stores_back(
    settings: GatewaySettings, tmp_path: Path, pg_database: ScratchDatabase
) -> None:
    original = _as_files(settings)
    files = open_state(original)
    _fill(files, original)
    with files.ledger.open() as ledger:
        ledger.record_lists(["Org-Team@lists.example.org"])
    token = new_token()
    HoldStore(files.layout.holds).create(record("Q1", token=token), b"original \x00 bytes", b"release")
    moment = time.time()
    with contextlib.closing(files.overrides.open()) as overrides:
        overrides.issue("used-token", "maya@example.org", ("strict-cc",), moment)
        overrides.issue("spare-token", "maya@example.org", ("strict-cc",), moment)
        made = overrides.redeem(
            "used-token",
            sender="maya@example.org",
            message="<m1@example.org>",
            rules=("strict-cc",),
            justification="the list asked for it",
            quotas={"strict-cc": (5, 86400.0)},
            now=moment,
            queue_id="Q1",
            case="lake",
        )
        assert made.reference is not None
        assert overrides.note_report("report-key", "ref-1", moment)
    imported = CliRunner().invoke(
        main, ["state", "import", "--config", str(_yaml(settings, tmp_path / "a.yaml"))]
    )
    assert imported.exit_code == 0, imported.output
    close_shared_databases()

    target = _elsewhere(settings, tmp_path / "exported")
    result = CliRunner().invoke(
        main, ["state", "export", "--config", str(_yaml(target, tmp_path / "b.yaml"))]
    )
    assert result.exit_code == 0, result.output
    assert "4 audit entries" in result.output and "4 queued message(s), 1 hold(s)" in result.output
    assert "1 account(s)" in result.output and "2 override(s)" in result.output

    back = open_state(_as_files(target))
    shared = open_state(settings)
    # The audit trail: the same chain (the waiting action was appended by the import), the same head.
    verification = back.audit.verify()
    assert verification.ok, verification.problems
    assert verification.last_hash == shared.audit.verify().last_hash
    before = (files.layout.audit / "audit.jsonl").read_bytes().splitlines()
    after = (back.layout.audit / "audit.jsonl").read_bytes().splitlines()
    assert after[:3] == before and len(after) == 4
    assert back.audit.salts() == shared.audit.salts()
    assert back.audit.entries_about("lake") == [2]
    # The queue: every message with its state, status and bytes.
    original_queue, exported_queue = files.queue.open(), back.queue.open()
    readable = [e.queue_id for e in original_queue.entries() if e.envelope is not None]
    assert sorted(e.queue_id for e in exported_queue.entries()) == sorted(readable)
    for queue_id in readable:
        was, now = original_queue.load(queue_id), exported_queue.load(queue_id)
        assert (now.envelope, now.content, now.state, now.status) == (
            was.envelope,
            was.content,
            was.state,
            was.status,
        )
    # The holds, with their bytes and a pending reply's token.
    holds = back.holds.open()
    assert holds.records() == files.holds.open().records()
    assert holds.original("Q1") == b"original \x00 bytes"
    found = holds.find_token(token)
    assert found is not None and found[0].reference == "Q1"
    # The ledger and the fingerprints, row for row (the key file travels by hand, as documented).
    query = "SELECT message_id, case_name, recorded_at FROM messages"
    assert _rows(back.layout.ledger, query) == _rows(files.layout.ledger, query)
    with back.ledger.open() as ledger:
        assert ledger.lookup_parent(["<a@example.org>"], []).case == "lake"
        assert ledger.lists_among(["org-team@lists.example.org", "x@example.org"]) == {
            "org-team@lists.example.org"
        }
    query = "SELECT address, seen_at FROM mailing_lists"
    assert _rows(back.layout.ledger, query) == _rows(files.layout.ledger, query)
    query = "SELECT case_name, document, person, source, learnt_at, shingles, scheme FROM documents"
    assert _rows(back.layout.fingerprints, query) == _rows(files.layout.fingerprints, query)
    assert _rows(back.layout.fingerprints, "SELECT * FROM meta") == _rows(
        files.layout.fingerprints, "SELECT * FROM meta"
    )
    shutil.copy(files.layout.fingerprint_key, back.layout.fingerprint_key)
    with back.fingerprints.open() as fingerprints:
        assert [o.document for o in fingerprints.overlaps(REPORT)] == ["doc-1"]
    # The case registry (the same encrypted bytes) and the accounts.
    assert [case.code for case in back.cases.cases()] == ["lake"]
    assert back.cases.path.read_bytes() == files.cases.path.read_bytes()
    users = Accounts.load(target.auth.users_file, FAST)
    assert users.verify("maya@example.org", "correct horse battery") == "maya@example.org"
    assert target.auth.users_file.read_text() == original.auth.users_file.read_text()
    # The override store: the override with its justification and links, the spare token still
    # redeemable once, the report key still known.
    with contextlib.closing(back.overrides.open()) as overrides:
        found = overrides.find(made.reference)
        assert found is not None and (found.justification, found.queue_id, found.case) == (
            "the list asked for it",
            "Q1",
            "lake",
        )
        assert not overrides.note_report("report-key", "ref-1", moment)
        spare = overrides.redeem(
            "spare-token",
            sender="maya@example.org",
            message="<m2@example.org>",
            rules=("strict-cc",),
            justification="again",
            quotas={"strict-cc": (5, 86400.0)},
            now=moment + 1,
        )
        assert spare.reference is not None
    close_shared_databases()


def test_export_is_refused_over_an_existing_state_and_writes_nothing(
    settings: GatewaySettings, tmp_path: Path, pg_database: ScratchDatabase
) -> None:
    shared = open_state(settings)
    shared.accounts.open().add("maya@example.org", "correct horse battery")
    target = _elsewhere(settings, tmp_path / "exported")
    (target.state_dir / "spool").mkdir(parents=True)  # a state is already here
    result = CliRunner().invoke(
        main, ["state", "export", "--config", str(_yaml(target, tmp_path / "b.yaml"))]
    )
    assert result.exit_code == 2
    assert "already exist" in result.output
    assert not target.auth.users_file.exists()
    assert sorted(p.name for p in target.state_dir.iterdir()) == ["spool"]
    close_shared_databases()


def test_export_is_refused_while_a_gateway_runs_on_the_database(
    settings: GatewaySettings, tmp_path: Path, pg_database: ScratchDatabase
) -> None:
    with shared_database(settings.state.postgresql).connection() as connection:
        connection.execute(
            "INSERT INTO gateway_instances (instance, hostname, version, started_at, seen_at)"
            " VALUES ('a1b2c3', 'gw-a', '0', now(), now())"
        )
    target = _elsewhere(settings, tmp_path / "exported")
    result = CliRunner().invoke(
        main, ["state", "export", "--config", str(_yaml(target, tmp_path / "b.yaml"))]
    )
    assert result.exit_code == 2
    assert "stop them before exporting" in result.output
    assert not target.state_dir.exists() or not any(target.state_dir.iterdir())
    close_shared_databases()
