"""The fingerprint store: fingerprints only on disk (0600), a secret key, live updates across processes."""

from __future__ import annotations

import sqlite3
import stat
import sys
from array import array
from pathlib import Path

import pytest

from gateway.policy.fingerprint import LEGACY_SCHEME, document_shingles
from gateway.policy.matcher import IdentityMatcher
from gateway.policy.mime import parse_message
from gateway.policy.model import IdentityKind, Mention, ProtectedIdentity
from gateway.state.fingerprints import (
    FingerprintError,
    FingerprintStore,
    fingerprints_path,
    key_path,
    message_document_id,
)

DISTINCTIVE = "the purple giraffe umbrella incident behind the marquee after the lightning talks"
REPORT = (
    f"I want to report what happened on Saturday: {DISTINCTIVE}. He shouted at me in front of "
    "everyone and then followed me to the registration desk, which made me leave the event early."
)


def test_learnt_text_is_found_and_survives_a_restart(tmp_path: Path) -> None:
    with FingerprintStore.open(tmp_path) as store:
        learnt = store.learn("home shelf", "doc-1", REPORT, person="quiet-heron", source="test")
        assert learnt.shingles == len(REPORT.split()) - 3
        (overlap,) = store.overlaps(f"Forwarding: {REPORT}")
        assert (overlap.case, overlap.person, overlap.fraction) == ("home shelf", "quiet-heron", 1.0)
    with FingerprintStore.open(tmp_path) as reopened:
        assert reopened.overlaps(REPORT)[0].document == "doc-1"
        assert reopened.cases() == {"home shelf": 1}


def test_nothing_of_the_text_is_stored_and_files_are_private(tmp_path: Path) -> None:
    with FingerprintStore.open(tmp_path) as store:
        store.learn("home shelf", "doc-1", REPORT)
    files = [path for path in tmp_path.rglob("*") if path.is_file()]
    assert fingerprints_path(tmp_path) in files and key_path(tmp_path) in files
    for path in files:
        data = path.read_bytes().lower()
        for needle in ("giraffe", "purple giraffe umbrella", "marquee", "registration desk"):
            assert needle.encode() not in data, (path, needle)
            assert needle.encode("utf-16-le") not in data, (path, needle)
    for path in (fingerprints_path(tmp_path), key_path(tmp_path)):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(key_path(tmp_path).read_bytes()) == 32


def test_each_installation_has_its_own_key(tmp_path: Path) -> None:
    with FingerprintStore.open(tmp_path / "a") as first, FingerprintStore.open(tmp_path / "b") as second:
        first.learn("c", "d", REPORT)
        second.learn("c", "d", REPORT)
    blob_a = fingerprints_path(tmp_path / "a").read_bytes()
    assert key_path(tmp_path / "a").read_bytes() != key_path(tmp_path / "b").read_bytes()
    # The same text gives different hashes under another key.
    with FingerprintStore.open(tmp_path / "b") as second:
        assert second.overlaps(REPORT)
    assert blob_a != fingerprints_path(tmp_path / "b").read_bytes()


def test_a_wrong_key_is_refused_with_a_clear_message(tmp_path: Path) -> None:
    with FingerprintStore.open(tmp_path) as store:
        store.learn("c", "d", REPORT)
    key_path(tmp_path).write_bytes(bytes(32))
    with pytest.raises(FingerprintError, match="is not the key"):
        FingerprintStore.open(tmp_path)
    key_path(tmp_path).write_bytes(b"short")
    with pytest.raises(FingerprintError, match="exactly 32 bytes"):
        FingerprintStore.open(tmp_path)


def test_another_process_learning_is_picked_up_without_a_restart(tmp_path: Path) -> None:
    with FingerprintStore.open(tmp_path) as gateway, FingerprintStore.open(tmp_path) as cli:
        assert gateway.overlaps(REPORT) == []
        cli.learn("home shelf", "doc-1", REPORT)
        assert [o.document for o in gateway.overlaps(REPORT)] == ["doc-1"]
        cli.learn(
            "home shelf", "doc-1", "completely different words that share nothing with the report at all"
        )
        assert gateway.overlaps(REPORT) == []
        cli.learn("home shelf", "doc-2", REPORT)
        cli.learn("other case", "doc-3", REPORT)
        assert cli.forget_case("home shelf") == 2
        assert [o.case for o in gateway.overlaps(REPORT)] == ["other case"]
        assert gateway.statistics().documents == 1


def test_short_texts_store_nothing(tmp_path: Path) -> None:
    with FingerprintStore.open(tmp_path) as store:
        assert store.learn("c", "d", "thank you so much").shingles == 0
        assert store.cases() == {}


def test_a_message_gets_the_same_id_however_it_arrives() -> None:
    one = parse_message(b"Message-ID: <abc@example.net>\r\nSubject: x\r\n\r\nbody\r\n")
    two = parse_message(b"Message-ID:  abc@example.net \r\nSubject: y\r\n\r\nother\r\n")
    assert message_document_id(one) == message_document_id(two)
    assert "abc" not in message_document_id(one)


def test_one_messages_lookups_share_one_check_and_the_next_message_checks_again(tmp_path: Path) -> None:
    with FingerprintStore.open(tmp_path) as gateway, FingerprintStore.open(tmp_path) as cli:
        first = gateway.for_message()
        assert first.overlaps(REPORT) == []
        # Learnt while the first message is being looked up: that message was received before it.
        cli.learn("home shelf", "doc-1", REPORT)
        assert first.overlaps(REPORT) == []
        # The next message checks again, so it is protected.
        assert [o.document for o in gateway.for_message().overlaps(REPORT)] == ["doc-1"]
        cli.learn("other case", "doc-2", REPORT)
        assert {o.document for o in gateway.for_message().overlaps(REPORT)} == {"doc-1", "doc-2"}
        assert {o.document for o in gateway.overlaps(REPORT)} == {"doc-1", "doc-2"}


def test_own_writes_are_seen_at_once_even_by_a_checked_view(tmp_path: Path) -> None:
    with FingerprintStore.open(tmp_path) as store:
        view = store.for_message()
        assert view.overlaps(REPORT) == []
        store.learn("home shelf", "doc-1", REPORT)
        assert [o.document for o in view.overlaps(REPORT)] == ["doc-1"]


def test_a_version_1_store_is_upgraded_and_its_fingerprints_still_match(tmp_path: Path) -> None:
    with FingerprintStore.open(tmp_path) as store:
        store.learn(
            "home shelf", "doc-new", "an unrelated text that is long enough to be fingerprinted at all"
        )
    key = key_path(tmp_path).read_bytes()
    legacy = document_shingles([REPORT], key, LEGACY_SCHEME)
    connection = sqlite3.connect(fingerprints_path(tmp_path))
    with connection:  # as version 1 wrote it: no scheme, no mentions
        connection.execute("DROP TABLE documents")
        connection.execute(
            "CREATE TABLE documents (id INTEGER PRIMARY KEY AUTOINCREMENT, case_name TEXT NOT NULL,"
            " document TEXT NOT NULL, person TEXT, source TEXT NOT NULL, learnt_at TEXT NOT NULL,"
            " shingles BLOB NOT NULL, UNIQUE (case_name, document))"
        )
        connection.execute(
            "INSERT INTO documents (case_name, document, person, source, learnt_at, shingles)"
            " VALUES ('home shelf', 'doc-old', 'quiet-heron', 'test', '2025-01-01T00:00:00+00:00', ?)",
            (array("Q", legacy).tobytes() if sys.byteorder == "big" else _big_endian(legacy),),
        )
        connection.execute("PRAGMA user_version = 1")
    connection.close()
    with FingerprintStore.open(tmp_path) as store:
        (overlap,) = store.overlaps(f"Forwarding: {REPORT}")
        assert overlap.document == "doc-old" and overlap.longest_run == len(REPORT.split())
        assert store.named_by("home shelf", "quiet-heron") == frozenset()
        store.learn("home shelf", "doc-old", REPORT, person="quiet-heron")  # learnt again: new scheme
        (overlap,) = store.overlaps(REPORT.replace("Saturday", "Sunday"))
        assert overlap.document == "doc-old"


def _big_endian(values: tuple[int, ...]) -> bytes:
    packed = array("Q", values)
    packed.byteswap()
    return packed.tobytes()


def test_whom_a_message_names_is_stored_as_ids_only(tmp_path: Path) -> None:
    finder = IdentityMatcher.build(
        [
            ProtectedIdentity("home shelf", "amber-finch", IdentityKind.NAME, "Maya Lind"),
            ProtectedIdentity("home shelf", "amber-finch", IdentityKind.ADDRESS, "maya@witness.test"),
            ProtectedIdentity("home shelf", "slate-owl", IdentityKind.NAME, "Sam Okonkwo"),
        ]
    )
    report = parse_message(
        b"From: Robin <robin@example.net>\r\nTo: conduct@example.org\r\nSubject: what happened\r\n"
        b"Message-ID: <r1@example.net>\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
        + REPORT.encode()
        + b" Maya Lind saw it all.\r\n\r\nOn Monday, Sam Okonkwo <sam@example.org> wrote:\r\n> hello\r\n"
    )
    with FingerprintStore.open(tmp_path) as store:
        store.learn_message("home shelf", report, person="quiet-heron", source="test", finder=finder)
        assert store.named_by("home shelf", "quiet-heron") == {
            Mention("home shelf", "amber-finch", IdentityKind.NAME)
        }
    with FingerprintStore.open(tmp_path) as reopened:
        assert reopened.for_message().named_by("home shelf", "quiet-heron") == {
            Mention("home shelf", "amber-finch", IdentityKind.NAME)
        }
    stored = fingerprints_path(tmp_path).read_bytes()
    assert b"Maya" not in stored and b"Lind" not in stored
