"""The holds folder: private files, token hashes only, readable records, and no import of the layers above."""

from __future__ import annotations

import logging
import stat
from pathlib import Path

import pytest

from gateway.policy.reviewers import Reviewer
from gateway.review.tokens import new_token
from gateway.state.holds import Grant, HoldRecord, HoldStore, ReviewError, decided_at, token_hash


def record(reference: str = "Q1", token: str = "t" * 40) -> HoldRecord:
    return HoldRecord(
        reference=reference,
        created_at=1000.0,
        expires_at=2000.0,
        sender="ada@example.org",
        sender_account="ada@example.org",
        sender_name="Ada Quill",
        rcpt_tos=("olive@example.net",),
        release_rcpt_tos=("olive@example.net", "conduct@example.org"),
        grants={token_hash(token): Grant(holder="ben@example.org", role="reviewer")},
    )


def test_a_hold_is_three_private_files_in_a_private_folder(tmp_path: Path) -> None:
    store = HoldStore.in_state_dir(tmp_path)
    store.create(record(), b"original bytes", b"release bytes")
    assert stat.S_IMODE(store.root.stat().st_mode) == 0o700
    names = sorted(path.name for path in store.root.iterdir() if path.is_file() and path.name != ".lock")
    assert names == ["Q1.json", "Q1.original", "Q1.release"]
    assert all(stat.S_IMODE((store.root / name).stat().st_mode) == 0o600 for name in names)
    assert store.get("Q1") == record()
    assert (store.original("Q1"), store.release_content("Q1")) == (b"original bytes", b"release bytes")


def test_a_token_is_found_by_itself_and_never_stored(tmp_path: Path) -> None:
    token = new_token()
    store = HoldStore(tmp_path / "holds")
    store.create(record(token=token), b"o", b"r")
    found = store.find_token(token.upper())
    assert found is not None and found[0].reference == "Q1" and found[1].holder == "ben@example.org"
    assert store.find_token(token_hash(token)) is None  # the stored hash is not a token
    assert token.encode() not in (store.root / "Q1.json").read_bytes()


@pytest.mark.parametrize("reference", ["../Q1", "", "Q1/x", "-Q1", "Q" * 129])
def test_a_reference_that_is_not_a_hold_reference_is_refused(tmp_path: Path, reference: str) -> None:
    with pytest.raises(ReviewError, match="not a hold reference"):
        HoldStore(tmp_path / "holds").get(reference)


def test_an_unknown_reference_points_to_the_list(tmp_path: Path) -> None:
    with pytest.raises(ReviewError, match="review list"):
        HoldStore(tmp_path / "holds").get("Q9")


def test_an_unreadable_record_is_skipped_and_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = HoldStore(tmp_path / "holds")
    store.create(record("Q1"), b"o", b"r")
    store.create(record("Q2"), b"o", b"r")
    (store.root / "Q1.json").write_bytes(b'{"format": 1}')
    with caplog.at_level(logging.ERROR):
        assert [r.reference for r in store.records()] == ["Q2"]
    assert "hold-unreadable" in caplog.text


def test_discard_removes_every_file_of_the_hold(tmp_path: Path) -> None:
    store = HoldStore(tmp_path / "holds")
    store.create(record(), b"o", b"r")
    store.discard("Q1")
    assert not list(store.root.glob("Q1.*"))
    assert store.records() == []


def test_a_hold_without_decisions_was_decided_when_it_was_made() -> None:
    assert decided_at(record()) == 1000.0


def test_the_record_format_on_disk_is_unchanged(tmp_path: Path) -> None:
    store = HoldStore(tmp_path / "holds")
    store.create(
        record().model_copy(update={"reviewers": (Reviewer(name="Ben Ink", address="ben@example.org"),)}),
        b"o",
        b"r",
    )
    written = (store.root / "Q1.json").read_text(encoding="utf-8")
    assert '"reviewers": [\n  {\n   "name": "Ben Ink",\n   "address": "ben@example.org"\n  }\n ]' in written
    assert store.get("Q1").reviewers[0].address == "ben@example.org"
