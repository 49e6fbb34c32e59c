"""`conduct-gateway state import`: a files installation moved into PostgreSQL, all or nothing."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from argon2 import PasswordHasher
from click.testing import CliRunner

from gateway.cli import main
from gateway.policy.config import Case
from gateway.policy.model import Address
from gateway.settings import GatewaySettings
from gateway.state.accounts import Accounts
from gateway.state.opening import State, open_state
from gateway.state.overrides import Redeemed
from gateway.state.postgresql.accounts import PostgresqlAccounts
from gateway.state.postgresql.opening import close_shared_databases, shared_database
from tests.postgresql import ScratchDatabase

from .conftest import backend_settings
from .test_postgresql_queue_import import files_queue

REPORT = (
    "I want to report what happened on Saturday: the purple giraffe umbrella incident behind the "
    "marquee after the lightning talks, which made me leave the event early."
)
FAST = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)


def _write_yaml(settings: GatewaySettings, folder: Path) -> Path:
    postgresql = settings.state.postgresql
    config = folder / "gateway.yaml"
    config.write_text(
        f"state_dir: {settings.state_dir}\n"
        f"auth:\n  users_file: {settings.auth.users_file}\n"
        f"registry:\n  key_env: null\n  key_file: {settings.registry.key_file}\n"
        "state:\n  backend: postgresql\n  postgresql:\n"
        f'    dsn: "{postgresql.dsn}"\n    password_file: {postgresql.password_file}\n'
    )
    return config


def _fill(files: State, settings: GatewaySettings) -> str:
    with files.audit.open() as writer:
        writer.append("start", {"n": 1})
        writer.append("decision", {"queue_id": "Q1", "cases": ["lake"]}, {"recipients": ["ops@example.net"]})
        last = writer.append("step", {"n": 3})
    files.audit.append_later("case", {"action": "add", "case": "lake"})  # waiting for a gateway
    with files.ledger.open() as ledger:
        ledger.record("<a@example.org>", from_=[Address("Maya", "maya@example.org")], case="lake")
    with files.fingerprints.open() as fingerprints:
        fingerprints.learn("lake", "doc-1", REPORT, person="quiet-heron")
    files.cases.write([Case(code="lake")])
    Accounts.load(settings.auth.users_file, FAST).add("maya@example.org", "correct horse battery")
    asyncio.run(files_queue(settings.state_dir / "spool"))  # four messages, and one unreadable
    with files.overrides.open() as overrides:
        overrides.issue("MOVED222", "maya@example.org", ("conduct-cc",), time.time())  # not used yet
        overrides.issue("USED2222", "maya@example.org", ("conduct-cc",), time.time())
        overrides.redeem(
            "USED2222",
            sender="maya@example.org",
            message="<used@example.org>",
            rules=("conduct-cc",),
            justification="the committee asked for it",
            quotas={"conduct-cc": (5, 86400.0)},
            now=time.time(),
            queue_id="Q7",
            case="lake",
        )
    return last.hash


@pytest.fixture
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> GatewaySettings:
    return backend_settings(request, tmp_path, "postgresql")


def test_a_files_installation_moves_into_postgresql(
    settings: GatewaySettings, tmp_path: Path, pg_database: ScratchDatabase
) -> None:
    files_settings = settings.model_copy(
        update={"state": settings.state.model_copy(update={"backend": "files"})}
    )
    head = _fill(open_state(files_settings), files_settings)
    result = CliRunner().invoke(main, ["state", "import", "--config", str(_write_yaml(settings, tmp_path))])
    assert result.exit_code == 0, result.output
    assert "3 audit entries" in result.output
    assert "1 waiting action(s) appended" in result.output
    assert "4 queued message(s), 0 hold(s), 1 override(s)" in result.output
    assert "1 message(s) the files queue had set aside as unreadable were not moved" in result.output

    shared = open_state(settings)
    verification = shared.audit.verify()
    assert verification.ok, verification.problems
    assert verification.entries == 4  # the three entries, then the one that was waiting
    entries = list(shared.audit.entries())
    assert entries[2].fields["hash"] == head  # the same chain, continued
    assert entries[3].fields["recorded_later"] is True
    assert shared.audit.salts()[2] is not None
    assert shared.audit.entries_about("lake") == [2]
    with shared.ledger.open() as ledger:
        assert ledger.lookup_parent(["<a@example.org>"], []).case == "lake"
    with shared.fingerprints.open() as fingerprints:
        assert [o.document for o in fingerprints.overlaps(REPORT)] == ["doc-1"]
    assert [case.code for case in shared.cases.cases()] == ["lake"]
    assert len(shared.queue.open().entries()) == 4
    accounts = PostgresqlAccounts(shared_database(settings.state.postgresql), FAST)
    assert accounts.verify("maya@example.org", "correct horse battery") == "maya@example.org"
    with shared.overrides.open() as overrides:
        [moved] = overrides.since(0)
        assert moved.justification == "the committee asked for it"
        assert (moved.queue_id, moved.case) == ("Q7", "lake")
        # A token given before the move is still redeemed once, now through the shared store.
        used = overrides.redeem(
            "MOVED222",
            sender="maya@example.org",
            message="<after@example.org>",
            rules=("conduct-cc",),
            justification="the committee asked for it again",
            quotas={"conduct-cc": (5, 86400.0)},
            now=time.time(),
        )
        assert used.outcome is Redeemed.ACCEPTED and not used.repeated
    close_shared_databases()

    again = CliRunner().invoke(main, ["state", "import", "--config", str(_write_yaml(settings, tmp_path))])
    assert again.exit_code == 2
    assert "already holds audit_entries" in again.output


def test_a_tampered_files_trail_is_not_moved(
    settings: GatewaySettings, tmp_path: Path, pg_database: ScratchDatabase
) -> None:
    files_settings = settings.model_copy(
        update={"state": settings.state.model_copy(update={"backend": "files"})}
    )
    files = open_state(files_settings)
    _fill(files, files_settings)
    log = files.layout.audit / "audit.jsonl"
    log.write_text(log.read_text().replace('"n":3', '"n":4'))
    result = CliRunner().invoke(main, ["state", "import", "--config", str(_write_yaml(settings, tmp_path))])
    assert result.exit_code == 2
    assert "audit verify fails" in result.output
    with pg_database.connect() as database, database.connection() as connection:
        assert connection.execute("SELECT count(*) FROM ledger_messages").fetchone() == (0,)


def test_import_is_refused_while_a_gateway_holds_the_files_trail(
    settings: GatewaySettings, tmp_path: Path, pg_database: ScratchDatabase
) -> None:
    files_settings = settings.model_copy(
        update={"state": settings.state.model_copy(update={"backend": "files"})}
    )
    files = open_state(files_settings)
    with files.audit.open() as writer:
        writer.append("start", {})
        result = CliRunner().invoke(
            main, ["state", "import", "--config", str(_write_yaml(settings, tmp_path))]
        )
    assert result.exit_code == 2
    assert "stop it before importing" in result.output
