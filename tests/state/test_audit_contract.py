"""The audit port's contract, on every backend; then what only the shared (PostgreSQL) chain adds."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from gateway.state.audit import DecisionRecord, FindingRecord
from gateway.state.audit_format import GENESIS, entry_hash
from gateway.state.opening import State
from gateway.state.postgresql.audit import PostgresqlAudit
from gateway.state.postgresql.database import Database
from tests.postgresql import ScratchDatabase

REPO = Path(__file__).resolve().parents[2]


def _decision(queue_id: str, case: str | None = None) -> DecisionRecord:
    findings = (
        FindingRecord(rule="protected", code="PROTECTED_NAME", kind="identity", action="reject", case=case),
    )
    return DecisionRecord(
        queue_id=queue_id,
        member="maya.member@example.org",
        verdict="reject" if case else "deliver",
        reply="550 5.7.1" if case else "250",
        policy_version="p1",
        findings=findings if case else (),
        message_id="<m1@example.org>",
        recipients=("ops@example.net",),
        message=b"Subject: x\r\n\r\nbody\r\n",
    )


def test_appended_entries_chain_and_verify(state: State) -> None:
    with state.audit.open() as writer:
        first = writer.append("start", {"detail": 1})
        second = writer.record_decision(_decision("Q1"))
    assert (first.seq, second.seq) == (1, 2)
    assert first.fields["prev"] == GENESIS
    assert second.fields["prev"] == first.hash
    assert second.hash == entry_hash(second.fields)
    entries = list(state.audit.entries())
    assert [entry.seq for entry in entries] == [1, 2]
    assert entries[1].fields["queue_id"] == "Q1"
    result = state.audit.verify()
    assert result.ok, result.problems
    assert (result.entries, result.last_seq, result.last_hash) == (2, 2, second.hash)


def test_identities_are_stored_only_as_digests(state: State) -> None:
    with state.audit.open() as writer:
        writer.record_decision(_decision("Q1"))
    stored = json.dumps([entry.fields for entry in state.audit.entries()])
    assert "ops@example.net" not in stored
    assert "m1@example.org" not in stored
    assert "body" not in stored


def test_an_action_left_for_later_is_in_the_trail_once_after_a_drain(state: State) -> None:
    state.audit.append_later("case", {"action": "add", "case": "lake"})
    with state.audit.open() as writer:
        state.audit.drain_later(writer)
        state.audit.drain_later(writer)  # a second round finds nothing left
    found = [entry for entry in state.audit.entries() if entry.fields.get("event") == "case"]
    assert len(found) == 1
    assert found[0].fields["case"] == "lake"
    assert state.audit.waiting() == []
    assert state.audit.verify().ok


def test_record_appends_when_no_gateway_holds_the_trail(state: State) -> None:
    state.audit.record("case", {"action": "rename", "case": "lake"})
    assert [entry.fields["action"] for entry in state.audit.entries()] == ["rename"]


def test_forgetting_a_case_removes_its_salts_and_keeps_the_chain(state: State) -> None:
    with state.audit.open() as writer:
        writer.record_decision(_decision("Q1", case="lake"))
        writer.record_decision(_decision("Q2"))
        writer.append("review", {"release_queue_id": "Q3"})
    assert state.audit.entries_about("lake", ["Q3"]) == [1, 3]
    assert state.audit.forget("lake", ["Q3"]) == 2
    salts = state.audit.salts()
    assert salts[1] is None and salts[3] is None
    assert salts[2] is not None
    assert state.audit.verify().ok


def test_an_empty_trail_verifies(state: State) -> None:
    result = state.audit.verify()
    assert result.ok
    assert (result.entries, result.last_seq) == (0, 0)


# -- the shared chain (PostgreSQL only) ---------------------------------------------------------------


def test_two_writers_open_at_once_share_one_chain(pg_db: Database) -> None:
    audit = PostgresqlAudit(lambda: pg_db)
    with audit.open() as first, audit.open(deferred=True) as second:
        for number in range(10):
            (first if number % 2 else second).append("step", {"n": number})
    assert [entry.seq for entry in audit.entries()] == list(range(1, 11))
    assert audit.verify().ok
    assert audit.head()[0] == 10


_WRITER = textwrap.dedent(
    """
    import sys
    from gateway.state.postgresql.audit import PostgresqlAudit
    from gateway.state.postgresql.database import Database

    dsn, password, name, count = sys.argv[1:5]
    with Database.connect(dsn, password=password) as database:
        database.ping()
        with PostgresqlAudit(lambda: database).open() as writer:
            print("ready", flush=True)
            sys.stdin.readline()  # every writer starts appending at the same moment
            for number in range(int(count)):
                writer.append("step", {"writer": name, "n": number})
    """
)


def test_processes_appending_interleaved_never_fork_the_chain(pg_database: ScratchDatabase) -> None:
    count = 100
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", _WRITER, pg_database.dsn, pg_database.password, name, str(count)],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for name in ("a", "b", "c")
    ]
    for writer in writers:
        assert writer.stdout is not None and writer.stdout.readline() == "ready\n"
    for writer in writers:
        assert writer.stdin is not None
        writer.stdin.write("go\n")
        writer.stdin.close()
    assert [writer.wait(timeout=120) for writer in writers] == [0, 0, 0]
    for writer in writers:
        assert writer.stdout is not None
        writer.stdout.close()
    with pg_database.connect() as database:
        audit = PostgresqlAudit(lambda: database)
        entries = list(audit.entries())
        result = audit.verify()
    assert result.ok, result.problems
    assert [entry.seq for entry in entries] == list(range(1, 3 * count + 1))
    by_writer = {name: [e.fields["n"] for e in entries if e.fields["writer"] == name] for name in "abc"}
    assert by_writer == {name: list(range(count)) for name in "abc"}
    # interleaved: the writers took turns on the chain, not one whole run after another
    turns = sum(
        1
        for before, after in itertools.pairwise(entries)
        if before.fields["writer"] != after.fields["writer"]
    )
    assert turns > 2


def test_an_edited_row_is_detected(pg_db: Database) -> None:
    audit = PostgresqlAudit(lambda: pg_db)
    with audit.open() as writer:
        for number in range(5):
            writer.record_decision(_decision(f"Q{number}"))
    with pg_db.connection() as connection:
        connection.execute(
            'UPDATE audit_entries SET line = replace(line, \'"verdict":"deliver"\', \'"verdict":"reject"\')'
            " WHERE seq = 3"
        )
    result = audit.verify()
    assert not result.ok
    assert any("entry 3" in problem and "edited" in problem for problem in result.problems)


def test_an_edited_and_rehashed_row_is_detected_by_the_next_entry_and_the_checkpoint(pg_db: Database) -> None:
    audit = PostgresqlAudit(lambda: pg_db)
    with audit.open() as writer:
        for number in range(4):
            writer.append("step", {"n": number})
    with pg_db.connection() as connection:
        row = connection.execute("SELECT line FROM audit_entries WHERE seq = 2").fetchone()
        assert row is not None
        fields = json.loads(row[0])
        fields["n"] = 99
        fields["hash"] = entry_hash(fields)
        connection.execute("UPDATE audit_entries SET line = %s WHERE seq = 2", (json.dumps(fields) + "\n",))
    problems = audit.verify().problems
    assert any("entry 3" in problem and "does not chain" in problem for problem in problems)
    assert any("entry 2" in problem and "checkpointed" in problem for problem in problems)


def test_a_deleted_row_is_detected(pg_db: Database) -> None:
    audit = PostgresqlAudit(lambda: pg_db)
    with audit.open() as writer:
        for number in range(4):
            writer.append("step", {"n": number})
    with pg_db.connection() as connection:
        connection.execute("DELETE FROM audit_entries WHERE seq = 2")
    assert any("missing" in problem for problem in audit.verify().problems)


def test_an_unreachable_database_is_an_audit_error(pg_database: ScratchDatabase) -> None:
    from gateway.errors import AuditError

    database = pg_database.connect(timeout=1)
    database.close()
    with pytest.raises(AuditError, match="cannot append"):
        PostgresqlAudit(lambda: database).open().append("step", {})
