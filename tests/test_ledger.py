"""The thread ledger: recording messages and finding a reply's parent."""

from __future__ import annotations

import sqlite3
import stat
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateway.errors import LedgerError
from gateway.policy.mime import parse_message
from gateway.policy.model import Address, ThreadFacts
from gateway.state.ledger import Ledger, ledger_path, normalise_message_id

ADA = Address("Ada Quill", "ada@example.org")
BEN = Address("Ben Ink", "ben@example.org")
CONDUCT = Address("", "conduct@example.org")
OUTSIDER = Address("Olive Out", "olive@example.net")


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    with Ledger.open(ledger_path(tmp_path / "state")) as opened:
        yield opened


def test_file_is_private_and_in_wal_mode(tmp_path: Path) -> None:
    path = ledger_path(tmp_path / "state")
    with Ledger.open(path) as ledger:
        ledger.record("<a@x>", from_=[ADA], to=[BEN])
        for file in path.parent.iterdir():
            assert stat.S_IMODE(file.stat().st_mode) == 0o600, file
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("<abc@host>", "abc@host", id="brackets"),
        pytest.param(" <abc@\r\n host> ", "abc@host", id="folded"),
        pytest.param("abc@host", "abc@host", id="bare"),
        pytest.param("<>", None, id="empty"),
    ],
)
def test_message_ids_are_normalised(value: str, expected: str | None) -> None:
    assert normalise_message_id(value) == expected


def test_lookup_by_in_reply_to(ledger: Ledger) -> None:
    ledger.record("<parent@x>", from_=[ADA], to=[BEN], cc=[CONDUCT], case="home shelf")
    facts = ledger.lookup_parent(["<parent@x>"], [])
    assert facts == ThreadFacts(parent_known=True, parent_participants=(ADA, BEN, CONDUCT), case="home shelf")


def test_in_reply_to_wins_over_references(ledger: Ledger) -> None:
    ledger.record("<root@x>", from_=[ADA], to=[OUTSIDER])
    ledger.record("<parent@x>", from_=[BEN], to=[ADA])
    facts = ledger.lookup_parent(["<parent@x>"], ["<root@x>"])
    assert facts.parent_participants == (BEN, ADA)


def test_references_fallback_takes_the_last_known_id(ledger: Ledger) -> None:
    ledger.record("<root@x>", from_=[ADA], to=[OUTSIDER])
    ledger.record("<middle@x>", from_=[BEN], to=[ADA])
    facts = ledger.lookup_parent(["<unknown@x>"], ["<root@x>", "<middle@x>", "<never-seen@x>"])
    assert facts.parent_known
    assert facts.parent_participants == (BEN, ADA)


def test_unknown_parent_and_no_parent(ledger: Ledger) -> None:
    ledger.record("<root@x>", from_=[ADA], to=[BEN])
    assert ledger.lookup_parent(["<other@x>"], ["<another@x>"]) == ThreadFacts()
    assert ledger.lookup_parent([], []) == ThreadFacts()


def test_recording_again_keeps_a_known_case(ledger: Ledger) -> None:
    ledger.record("<m@x>", from_=[ADA], to=[BEN], case="home shelf")
    ledger.record("<m@x>", from_=[ADA], to=[BEN, OUTSIDER])  # e.g. a journal copy, case unknown
    facts = ledger.lookup_parent(["m@x"], [])
    assert facts.case == "home shelf"
    assert facts.parent_participants == (ADA, BEN, OUTSIDER)


def test_message_without_id_is_not_recorded(ledger: Ledger) -> None:
    assert ledger.record("  ", from_=[ADA]) is False
    assert ledger.count() == 0


def test_forget_case(ledger: Ledger) -> None:
    ledger.record("<a@x>", from_=[ADA], case="home shelf")
    ledger.record("<b@x>", from_=[ADA], case="stunned bulb")
    assert ledger.forget_case("home shelf") == 1
    assert ledger.lookup_parent(["a@x"], []) == ThreadFacts()
    assert ledger.lookup_parent(["b@x"], []).parent_known


def test_holds_no_subject_or_body(tmp_path: Path) -> None:
    path = ledger_path(tmp_path)
    with Ledger.open(path) as ledger:
        ledger.record("<a@x>", from_=[ADA], to=[BEN], when=datetime(2025, 3, 1, tzinfo=UTC))
    with sqlite3.connect(path) as raw:
        columns = {row[1] for row in raw.execute("PRAGMA table_info(messages)")}
    assert columns == {"message_id", "in_reply_to", "refs", "participants", "case_name", "recorded_at"}


def test_read_only_ledger_never_writes(tmp_path: Path) -> None:
    path = ledger_path(tmp_path)
    assert Ledger.open_read_only(path) is None
    assert not path.exists()  # looking did not create it
    with Ledger.open(path) as ledger:
        ledger.record("<a@x>", from_=[ADA], to=[BEN])
    reader = Ledger.open_read_only(path)
    assert reader is not None
    with reader:
        assert reader.lookup_parent(["a@x"], []).parent_known
        with pytest.raises(sqlite3.OperationalError):
            reader.record("<b@x>", from_=[ADA])


def test_unreadable_ledger_is_a_clear_error(tmp_path: Path) -> None:
    path = ledger_path(tmp_path)
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(LedgerError, match="cannot read the thread ledger"):
        Ledger.open_read_only(path)
    with pytest.raises(LedgerError, match="cannot open the thread ledger"):
        Ledger.open(path)


def test_lookup_of_a_parsed_message(ledger: Ledger) -> None:
    ledger.record("<root@example.org>", from_=[ADA], to=[OUTSIDER])
    ledger.record("<parent@example.org>", from_=[BEN], to=[ADA], cc=[CONDUCT], case="home shelf")
    reply = (
        b"From: Ada Quill <ada@example.org>\r\nTo: Ben Ink <ben@example.org>\r\nSubject: Re: x\r\n"
        b"In-Reply-To: <parent@example.org>\r\nReferences: <root@example.org>\r\n <parent@example.org>\r\n"
        b"Message-ID: <reply@example.org>\r\n\r\nHello.\r\n"
    )
    facts = ledger.lookup(parse_message(reply))
    assert facts == ThreadFacts(parent_known=True, parent_participants=(BEN, ADA, CONDUCT), case="home shelf")
    references_only = reply.replace(b"In-Reply-To: <parent@example.org>\r\n", b"").replace(
        b" <parent@example.org>\r\n", b" <lost@example.org>\r\n"
    )
    assert ledger.lookup(parse_message(references_only)).parent_participants == (ADA, OUTSIDER)
    unknown = reply.replace(b"parent@", b"other@").replace(b"root@", b"other2@")
    assert ledger.lookup(parse_message(unknown)) == ThreadFacts()


def test_record_message_from_a_parsed_message(ledger: Ledger) -> None:
    raw = (
        b"From: Ada Quill <ada@example.org>\r\nTo: Olive Out <olive@example.net>\r\n"
        b"Cc: conduct@example.org\r\nSubject: x\r\nMessage-ID: <new@example.org>\r\n\r\nHello.\r\n"
    )
    assert ledger.record_message(parse_message(raw), case="home shelf")
    facts = ledger.lookup_parent(["<new@example.org>"], [])
    assert facts.parent_participants == (ADA, OUTSIDER, CONDUCT)
    assert facts.case == "home shelf"


def test_a_batch_commits_its_records_together_and_a_failed_batch_records_none(tmp_path: Path) -> None:
    with Ledger.open(tmp_path / "ledger.sqlite3") as ledger:
        with ledger.batch():
            assert ledger.record("<a@example.org>", from_=(Address("Ada", "ada@example.org"),))
            assert ledger.record("<b@example.org>", from_=(Address("Ada", "ada@example.org"),))
        assert ledger.lookup_parent(("<a@example.org>",), ()).parent_known
        assert ledger.lookup_parent(("<b@example.org>",), ()).parent_known
        with pytest.raises(RuntimeError), ledger.batch():
            ledger.record("<c@example.org>", from_=(Address("Ada", "ada@example.org"),))
            raise RuntimeError("the batch fails")
        assert not ledger.lookup_parent(("<c@example.org>",), ()).parent_known
