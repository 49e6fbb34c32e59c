"""The audit port's "append later": CLI actions reach the trail whether or not a gateway holds it,
with the same content, in order; what the two earlier outboxes left on disk is still carried out."""

from __future__ import annotations

import json
import logging
import stat
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.settings import GatewaySettings
from gateway.state.audit_reading import read_entries, read_salts, verify
from gateway.state.opening import State, open_state

FIELDS = {"action": "close", "case": "home shelf", "by": "ada"}
NEW = {"action": "new", "case": "home shelf", "by": "ada"}
OLDEST = "00000000000000000001-aaaaaaaa"  # names sort by the time they were left


@pytest.fixture
def state(tmp_path: Path) -> State:
    return open_state(GatewaySettings(state_dir=tmp_path / "state"))


def entries(state: State) -> list[dict[str, object]]:
    return [dict(entry.fields) for entry in read_entries(state.layout.audit)]


def without_chain(entry: dict[str, object]) -> dict[str, object]:
    return {k: v for k, v in entry.items() if k not in {"seq", "time", "prev", "hash"}}


def test_opening_the_state_creates_nothing(tmp_path: Path) -> None:
    opened = open_state(GatewaySettings(state_dir=tmp_path / "state"))
    assert not (tmp_path / "state").exists()
    assert not any(
        store.exists() for store in (opened.queue, opened.holds, opened.ledger, opened.fingerprints)
    )


def test_without_a_gateway_an_action_is_appended_at_once(state: State) -> None:
    state.audit.record("case", FIELDS)
    [entry] = entries(state)
    assert (entry["event"], entry["action"], "recorded_later" in entry) == ("case", "close", False)
    assert state.audit.waiting() == []


def test_while_a_gateway_holds_the_trail_the_action_waits_and_is_appended_later(state: State) -> None:
    with state.audit.open() as gateway:
        state.audit.record("case", FIELDS)
        assert entries(state) == [] and len(state.audit.waiting()) == 1
        assert state.audit.drain_later(gateway) == 1
    [entry] = entries(state)
    assert without_chain(entry) == {"event": "case", **FIELDS, "recorded_later": True, "digests": {}}
    assert state.audit.waiting() == [] and verify(state.layout.audit).ok


def test_a_waiting_action_is_a_private_file(state: State) -> None:
    state.audit.append_later("case", FIELDS)
    [path] = state.layout.audit_later.iterdir()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(state.layout.audit_later.stat().st_mode) == 0o700


@settings(max_examples=20, deadline=None)
@given(
    actions=st.lists(
        st.dictionaries(st.sampled_from(["action", "case", "role", "count"]), st.text(max_size=8)),
        min_size=1,
        max_size=6,
    )
)
def test_waiting_actions_are_appended_oldest_first_with_their_content(
    tmp_path_factory: pytest.TempPathFactory, actions: list[dict[str, str]]
) -> None:
    state = open_state(GatewaySettings(state_dir=tmp_path_factory.mktemp("s") / "state"))
    for fields in actions:
        state.audit.append_later("case", fields)
    with state.audit.open() as gateway:
        assert state.audit.drain_later(gateway) == len(actions)
    assert [without_chain(e) for e in entries(state)] == [
        {"event": "case", **fields, "recorded_later": True, "digests": {}} for fields in actions
    ]


def _legacy(folder: Path, name: str, content: object) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.json").write_text(json.dumps(content), encoding="utf-8")


def test_entries_left_in_the_old_holds_outbox_are_appended_as_before(state: State) -> None:
    review = {"queue_id": "Q1", "review": "approve", "member": "ben@example.org", "via": "cli"}
    _legacy(state.layout.holds_outbox, OLDEST, review)
    _legacy(state.layout.holds_outbox, "00000000000000000002-bbbbbbbb", {**FIELDS, "_event": "case"})
    state.audit.append_later("case", NEW)  # newer
    with state.audit.open() as gateway:
        assert state.audit.drain_later(gateway) == 3
    assert [without_chain(e) for e in entries(state)] == [
        {"event": "review", **review, "recorded_later": True, "digests": {}},
        {"event": "case", **FIELDS, "recorded_later": True, "digests": {}},
        {
            "event": "case",
            "action": "new",
            "case": "home shelf",
            "by": "ada",
            "recorded_later": True,
            "digests": {},
        },
    ]
    assert not list(state.layout.holds_outbox.glob("*.json"))


def test_expunge_requests_left_in_the_old_folder_forget_their_salts(state: State) -> None:
    with state.audit.open() as trail:
        trail.append("decision", {"cases": ["home shelf"], "queue_id": "Q1"}, {"message_id": "m@example.org"})
        trail.append("decision", {"cases": [], "queue_id": "Q2"}, {"message_id": "n@example.org"})
    _legacy(
        state.layout.expunge_pending, "00000000000000000001-aaaaaaaa", {"case": "home shelf", "queue_ids": []}
    )
    with state.audit.open() as gateway:
        assert state.audit.drain_later(gateway) == 1
    salts = read_salts(state.layout.audit)
    assert salts[1] is None and salts[2] is not None
    assert not list(state.layout.expunge_pending.glob("*.json")) and verify(state.layout.audit).ok


def test_forgetting_while_a_gateway_holds_the_trail_is_left_for_it(state: State) -> None:
    with state.audit.open() as trail:
        trail.append("decision", {"cases": ["home shelf"], "queue_id": "Q1"}, {"message_id": "m@example.org"})
    with state.audit.open() as gateway:
        assert state.audit.forget("home shelf", ["Q9"]) is None
        assert read_salts(state.layout.audit)[1] is not None
        assert state.audit.drain_later(gateway) == 1
    assert read_salts(state.layout.audit)[1] is None
    assert state.audit.forget("home shelf", []) == 0  # nothing left to forget, done at once


def test_an_unreadable_waiting_file_is_kept_and_logged(
    state: State, caplog: pytest.LogCaptureFixture
) -> None:
    state.layout.audit_later.mkdir(parents=True)
    (state.layout.audit_later / "00000000000000000001-aaaaaaaa.json").write_text(
        "{not json", encoding="utf-8"
    )
    state.audit.append_later("case", FIELDS)
    with caplog.at_level(logging.ERROR), state.audit.open() as gateway:
        assert state.audit.drain_later(gateway) == 1
    assert "audit-outbox-unreadable" in caplog.text
    assert state.audit.waiting() == [f"{OLDEST}.json"]
