"""The holds port's contract, every backend: records, bytes, tokens by hash, the lock, first decision wins."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.review.tokens import new_token
from gateway.state.holds import Grant, HoldStore, ReviewError, token_hash
from gateway.state.holds_port import HoldsPort
from gateway.state.postgresql.database import Database
from gateway.state.postgresql.holds import PostgresHolds

from .test_holds import record


@pytest.fixture(params=["files", "postgresql"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    """Makes stores over one backend: each call is another instance (process) on the same state."""
    if request.param == "files":
        return lambda: HoldStore(tmp_path / "holds")
    database: Database = request.getfixturevalue("pg_db")
    return lambda: PostgresHolds(database.connection)


@pytest.fixture
def store(backend: Any) -> HoldsPort:
    return backend()  # type: ignore[no-any-return]


def test_a_hold_keeps_its_record_and_both_bytes_exactly(store: HoldsPort) -> None:
    store.create(record(), b"original \x00\xff bytes", b"release bytes\r\n")
    assert store.get("Q1") == record()
    assert store.original("Q1") == b"original \x00\xff bytes"
    assert store.release_content("Q1") == b"release bytes\r\n"


def test_a_token_finds_its_hold_in_any_case_and_its_hash_finds_nothing(store: HoldsPort) -> None:
    token = new_token()
    store.create(record(token=token), b"o", b"r")
    found = store.find_token(token.upper())
    assert found is not None and found[0].reference == "Q1" and found[1].holder == "ben@example.org"
    assert store.find_token(token_hash(token)) is None
    assert store.find_token(new_token()) is None


def test_a_token_added_later_finds_the_hold_and_a_discarded_hold_is_gone(store: HoldsPort) -> None:
    store.create(record(), b"o", b"r")
    later = new_token()
    grants = {**store.get("Q1").grants, token_hash(later): Grant(holder="cy@example.org", role="reviewer")}
    store.save(store.get("Q1").model_copy(update={"grants": grants}))
    found = store.find_token(later)
    assert found is not None and found[1].holder == "cy@example.org"
    store.discard("Q1")
    assert store.find_token(later) is None
    assert store.records() == []
    with pytest.raises(ReviewError, match="review list"):
        store.get("Q1")


@pytest.mark.parametrize("reference", ["../Q1", "", "Q1/x", "-Q1", "Q" * 129])
def test_a_reference_that_is_not_a_hold_reference_is_refused(store: HoldsPort, reference: str) -> None:
    with pytest.raises(ReviewError, match="not a hold reference"):
        store.get(reference)


def test_records_are_listed_oldest_first(store: HoldsPort) -> None:
    for reference in ("Q3", "Q1", "Q2"):
        store.create(record(reference, token=f"{reference}-{'t' * 30}"), b"o", b"r")
    assert [r.reference for r in store.records()] == ["Q1", "Q2", "Q3"]


def test_a_decision_saved_under_the_lock_is_what_the_next_reader_sees(backend: Any) -> None:
    first, second = backend(), backend()
    first.create(record(), b"o", b"r")
    with first.locked():
        held = first.get("Q1")
        first.save(held.model_copy(update={"status": "rejected"}))
    assert second.get("Q1").status == "rejected"


def approve_if_held(store: HoldsPort, start: threading.Barrier, won: list[str], name: str) -> None:
    """What the review desk does with a decision: read, check it is still held, write, in the lock."""
    start.wait()
    with store.locked():
        current = store.get("Q1")
        if current.status != "held":
            return
        store.save(current.model_copy(update={"status": "released", "release_queue_id": name}))
        won.append(name)


def test_concurrent_approvals_through_different_instances_release_the_hold_once(backend: Any) -> None:
    backend().create(record(), b"o", b"r")
    names = [f"instance-{n}" for n in range(6)]
    won: list[str] = []
    start = threading.Barrier(len(names))
    threads = [threading.Thread(target=approve_if_held, args=(backend(), start, won, name)) for name in names]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(won) == 1
    assert backend().get("Q1").release_queue_id == won[0]


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(deciders=st.integers(2, 5), held=st.booleans())
def test_however_many_decide_at_once_at_most_one_decision_is_recorded(
    backend: Any, deciders: int, held: bool
) -> None:
    store = backend()
    for old in store.records():
        store.discard(old.reference)
    store.create(record().model_copy(update={"status": "held" if held else "rejected"}), b"o", b"r")
    won: list[str] = []
    start = threading.Barrier(deciders)
    threads = [
        threading.Thread(target=approve_if_held, args=(backend(), start, won, f"d{n}"))
        for n in range(deciders)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(won) == (1 if held else 0)


def test_a_failure_inside_the_lock_leaves_the_hold_as_it_was(pg_db: Database) -> None:
    store = PostgresHolds(pg_db.connection)
    store.create(record(), b"o", b"r")
    with pytest.raises(RuntimeError), store.locked():
        store.save(store.get("Q1").model_copy(update={"status": "released"}))
        raise RuntimeError("the instance failed before its decision was complete")
    assert store.get("Q1").status == "held"


def test_an_unreachable_database_is_a_review_error_naming_the_database(pg_db: Database) -> None:
    store = PostgresHolds(pg_db.connection)
    pg_db.close()
    with pytest.raises(ReviewError, match=r"cannot be read or written: PostgreSQL at .* cannot be reached"):
        store.records()


def test_no_token_is_stored_in_clear(pg_db: Database) -> None:
    token = new_token()
    PostgresHolds(pg_db.connection).create(record(token=token), b"o", b"r")
    with pg_db.connection() as connection:
        rows = connection.execute(
            "SELECT record::text FROM holds UNION ALL SELECT token_hash FROM hold_tokens"
        )
        stored = " ".join(row[0] for row in rows)
    assert token not in stored and token.lower() not in stored
