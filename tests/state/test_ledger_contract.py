"""The thread ledger's contract, on every backend."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from gateway.policy.model import Address
from gateway.state.opening import State

MAYA = Address(name="Maya Member", address="maya.member@example.org")
OPS = Address(name="Ops", address="ops@example.net")
RIVER = Address(name="River Reporter", address="river@example.net")


def test_a_reply_finds_its_parent_by_in_reply_to_then_the_last_known_reference(state: State) -> None:
    with state.ledger.open() as ledger:
        assert ledger.record("<a@example.org>", from_=[MAYA], to=[OPS], case="lake")
        assert ledger.record("<b@example.org>", references=["<a@example.org>"], from_=[OPS], cc=[RIVER])
        facts = ledger.lookup_parent(["<unknown@example.org>", "b@example.org"], [])
        assert facts.parent_known
        assert facts.parent_participants == (OPS, RIVER)
        by_reference = ledger.lookup_parent([], ["<a@example.org>", "<b@example.org>", "<z@example.org>"])
        assert by_reference.parent_participants == (OPS, RIVER)
        assert ledger.lookup_parent(["<a@example.org>"], []).case == "lake"
        assert not ledger.lookup_parent(["<none@example.org>"], []).parent_known
        assert not ledger.lookup_parent([], []).parent_known
        assert ledger.count() == 2


def test_recording_again_replaces_participants_but_keeps_the_case(state: State) -> None:
    with state.ledger.open() as ledger:
        ledger.record("<a@example.org>", from_=[MAYA], case="lake")
        ledger.record(" <a@example.org> ", from_=[OPS], when=datetime(2025, 1, 2, tzinfo=UTC))
        facts = ledger.lookup_parent(["a@example.org"], [])
        assert facts.parent_participants == (OPS,)
        assert facts.case == "lake"
        assert ledger.count() == 1


def test_a_message_without_an_id_is_not_recorded(state: State) -> None:
    with state.ledger.open() as ledger:
        assert not ledger.record("  <>  ", from_=[MAYA])
        assert ledger.count() == 0


def test_forgetting_a_case_and_a_person(state: State) -> None:
    with state.ledger.open() as ledger:
        ledger.record("<a@example.org>", from_=[MAYA], case="lake")
        ledger.record("<b@example.org>", from_=[MAYA], case="lake")
        ledger.record("<c@example.org>", from_=[MAYA], to=[RIVER])
        ledger.record("<d@example.org>", from_=[MAYA], to=[OPS])
        assert ledger.forget_case("lake") == 2
        assert ledger.forget_participants(lambda name, address: "river" in address) == 1
        assert ledger.count() == 1
        assert ledger.lookup_parent(["<d@example.org>"], []).parent_known


def test_a_batch_is_one_unit(state: State) -> None:
    with state.ledger.open() as ledger:
        with ledger.batch():
            ledger.record("<a@example.org>", from_=[MAYA])
            ledger.record("<b@example.org>", from_=[MAYA])
        assert ledger.count() == 2
        with pytest.raises(RuntimeError), ledger.batch():
            ledger.record("<c@example.org>", from_=[MAYA])
            raise RuntimeError("abandon")
        assert ledger.count() == 2


def test_a_read_only_ledger_sees_what_the_writer_recorded(state: State) -> None:
    with state.ledger.open() as ledger:
        ledger.record("<a@example.org>", from_=[MAYA], case="lake")
    reader = state.ledger.open_read_only()
    assert reader is not None
    with reader:
        assert reader.lookup_parent(["<a@example.org>"], []).case == "lake"


def test_mailing_lists_learnt_from_the_journal_are_found_among_recipients(state: State) -> None:
    with state.ledger.open() as ledger:
        assert ledger.lists_among(["devs@lists.example.org"]) == frozenset()
        assert ledger.record_lists(["Devs@Lists.Example.org", "announce@example.net", " "]) == 2
        assert ledger.record_lists(["devs@lists.example.org"]) == 1  # seen again: still one list
        found = ledger.lists_among(
            ["DEVS@lists.example.org", "maya.member@example.org", "announce@example.net"]
        )
        assert found == frozenset({"devs@lists.example.org", "announce@example.net"})
        assert ledger.lists_among([]) == frozenset()
