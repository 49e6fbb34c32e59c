"""The fingerprint store: fingerprints only on disk (0600), a secret key, live updates across processes."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from gateway.fingerprints import (
    FingerprintError,
    FingerprintStore,
    fingerprints_path,
    key_path,
    message_document_id,
)
from gateway.policy.mime import parse_message

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
