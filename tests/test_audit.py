"""The audit trail: hash chain, checkpoint, salted digests, durability and privacy."""

from __future__ import annotations

import itertools
import json
import logging
import os
import stat
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway.errors import AuditError
from gateway.state.audit import AuditTrail, DecisionRecord, FindingRecord
from gateway.state.audit_format import GENESIS, LOG_NAME, SALTS_NAME, canonical_json, entry_hash
from gateway.state.audit_reading import digest_matches, read_entries, read_salts, verify

SUBJECT = "Report about Jane Doe at the sprint"
BODY = "Jane told me in confidence that the incident happened twice."
MESSAGE = (
    f"From: Ada Quill <ada@example.org>\r\nTo: jane.doe@example.net\r\nSubject: {SUBJECT}\r\n"
    f"Message-ID: <jane.doe.42@example.net>\r\n\r\n{BODY}\r\n"
).encode()


class Clock:
    """A clock the test moves: one minute per reading."""

    def __init__(self) -> None:
        self.now = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        self.now += timedelta(minutes=1)
        return self.now


def decision(queue_id: str, **overrides: object) -> DecisionRecord:
    values: dict[str, object] = {
        "queue_id": queue_id,
        "member": "ada@example.org",
        "verdict": "reject",
        "reply": "550 5.7.1",
        "policy_version": "0123456789abcdef",
        "findings": (FindingRecord("reporter-protection", "PROTECTED_NAME", "name", "reject", "home shelf"),),
        "message_id": "<jane.doe.42@example.net>",
        "recipients": ("Jane.Doe@example.net", "conduct@example.org"),
        "message": MESSAGE,
    }
    values.update(overrides)
    return DecisionRecord(**values)  # type: ignore[arg-type]


@pytest.fixture
def directory(tmp_path: Path) -> Path:
    return tmp_path / "state" / "audit"


@pytest.fixture
def trail(directory: Path) -> Iterator[AuditTrail]:
    opened = AuditTrail.open(directory, clock=Clock())
    yield opened
    opened.close()


def fill(trail: AuditTrail, count: int) -> None:
    for number in range(1, count + 1):
        trail.record_decision(decision(f"Q{number}"))


def lines(directory: Path) -> list[bytes]:
    return (directory / LOG_NAME).read_bytes().splitlines(keepends=True)


def write_lines(directory: Path, content: list[bytes]) -> None:
    (directory / LOG_NAME).write_bytes(b"".join(content))


def test_entries_are_chained_and_files_private(trail: AuditTrail, directory: Path) -> None:
    fill(trail, 3)
    entries = list(read_entries(directory))
    assert [entry.seq for entry in entries] == [1, 2, 3]
    assert entries[0].fields["prev"] == GENESIS
    for earlier, later in itertools.pairwise(entries):
        assert later.fields["prev"] == earlier.fields["hash"] == entry_hash(earlier.fields)
    assert entries[0].fields["time"] == "2025-03-01T09:01:00.000Z"
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    for name in (LOG_NAME, SALTS_NAME):
        assert stat.S_IMODE((directory / name).stat().st_mode) == 0o600
    result = verify(directory)
    assert result.ok, result.problems
    assert (result.entries, result.last_seq) == (3, 3)


def test_a_line_is_the_hashed_canonical_json_with_its_hash_last(trail: AuditTrail, directory: Path) -> None:
    fill(trail, 2)
    for line in (directory / LOG_NAME).read_bytes().splitlines(keepends=True):
        fields = json.loads(line)
        hashed = canonical_json({key: value for key, value in fields.items() if key != "hash"})
        assert line == hashed[:-1] + b',"hash":"' + entry_hash(fields).encode() + b'"}\n'
        assert fields["hash"] == entry_hash(fields)


def test_decision_fields(trail: AuditTrail, directory: Path) -> None:
    trail.record_decision(
        decision("Q1", changes=("cc-added",), relayed=b"X-Conduct-Gateway: ...\r\n" + MESSAGE)
    )
    fields = next(read_entries(directory)).fields
    assert fields["event"] == "decision"
    assert fields["queue_id"] == "Q1"
    assert fields["member"] == "ada@example.org"
    assert fields["verdict"] == "reject"
    assert fields["reply"] == "550 5.7.1"
    assert fields["policy"] == "0123456789abcdef"
    assert fields["rules"] == ["reporter-protection"]
    assert fields["cases"] == ["home shelf"]
    assert fields["findings"] == [
        {
            "rule": "reporter-protection",
            "code": "PROTECTED_NAME",
            "kind": "name",
            "action": "reject",
            "case": "home shelf",
        }
    ]
    assert fields["changes"] == ["cc-added"]
    assert fields["recipient_count"] == 2
    assert set(fields["digests"]) == {"message_id", "recipients", "message", "relayed"}


def test_no_body_subject_identity_or_plain_recipient_on_disk(trail: AuditTrail, directory: Path) -> None:
    fill(trail, 2)
    on_disk = b"".join(path.read_bytes() for path in directory.iterdir()).lower()
    for secret in (SUBJECT, BODY, "jane", "doe", "example.net", "confidence", "conduct@example.org"):
        assert secret.lower().encode() not in on_disk, secret


def test_digests_link_only_with_the_salt(trail: AuditTrail, directory: Path) -> None:
    fill(trail, 2)
    salts = read_salts(directory)
    first = next(read_entries(directory))
    assert digest_matches(first, salts[1], "message_id", "jane.doe.42@example.net")
    assert digest_matches(first, salts[1], "recipients", "jane.doe@example.net")
    assert not digest_matches(first, salts[1], "recipients", "someone@example.net")
    # Same values, different entries: the digests differ, so entries cannot be linked to each other.
    second = list(read_entries(directory))[1]
    assert first.fields["digests"]["message_id"] != second.fields["digests"]["message_id"]


def test_forgetting_salts_keeps_verify_green_and_unlinks(trail: AuditTrail, directory: Path) -> None:
    fill(trail, 3)
    assert trail.forget_salts([2]) == 1
    salts = read_salts(directory)
    assert salts[2] is None and salts[1] is not None
    entry = list(read_entries(directory))[1]
    assert not digest_matches(entry, salts[2], "message_id", "jane.doe.42@example.net")
    trail.record_decision(decision("Q4"))  # appending still works after the salts file was rewritten
    result = verify(directory)
    assert result.ok, result.problems
    assert result.last_seq == 4


def test_reopening_continues_the_chain(directory: Path) -> None:
    with AuditTrail.open(directory) as first:
        fill(first, 2)
    with AuditTrail.open(directory) as second:
        assert second.last_seq == 2
        fill(second, 1)
    result = verify(directory)
    assert result.ok and result.last_seq == 3


def test_a_second_writer_is_refused(trail: AuditTrail, directory: Path) -> None:
    with pytest.raises(AuditError, match="in use by another gateway process"):
        AuditTrail.open(directory)


def test_torn_tail_from_a_crash_is_cut_on_open(directory: Path) -> None:
    with AuditTrail.open(directory) as trail:
        fill(trail, 2)
    with (directory / LOG_NAME).open("ab") as handle:
        handle.write(b'{"seq":3,"time":"2025-')  # a write the crash interrupted: never acknowledged
    assert not verify(directory).ok
    with AuditTrail.open(directory) as trail:
        assert trail.last_seq == 2
        fill(trail, 1)
    assert verify(directory).ok


def test_failed_append_leaves_nothing_behind(
    trail: AuditTrail, directory: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fill(trail, 1)
    size = (directory / LOG_NAME).stat().st_size

    def broken(fd: int) -> None:
        raise OSError(28, "No space left on device")

    original = os.fdatasync
    monkeypatch.setattr(os, "fdatasync", broken)
    with pytest.raises(AuditError, match="No space left"):
        trail.record_decision(decision("Q2"))
    monkeypatch.setattr(os, "fdatasync", original)
    assert (directory / LOG_NAME).stat().st_size == size
    trail.record_decision(decision("Q3"))
    result = verify(directory)
    assert result.ok and result.last_seq == 2


def test_unreadable_last_entry_stops_the_writer(directory: Path) -> None:
    with AuditTrail.open(directory) as trail:
        fill(trail, 1)
    (directory / LOG_NAME).write_bytes(b"garbage\n")
    with pytest.raises(AuditError, match="last entry cannot be read"):
        AuditTrail.open(directory)


# -- tampering ------------------------------------------------------------------------------------


def test_edited_entry_is_named(trail: AuditTrail, directory: Path) -> None:
    fill(trail, 4)
    content = lines(directory)
    content[2] = content[2].replace(b'"verdict":"reject"', b'"verdict":"deliver"')
    write_lines(directory, content)
    result = verify(directory)
    assert not result.ok
    assert any(
        p.startswith("entry 3 (line 3): content does not match its hash (edited)") for p in result.problems
    )


def test_edited_and_rehashed_entry_is_named(trail: AuditTrail, directory: Path) -> None:
    fill(trail, 4)
    content = lines(directory)
    fields = json.loads(content[1])
    fields["member"] = "mallory@example.org"
    fields["hash"] = entry_hash(fields)
    content[1] = json.dumps(fields).encode() + b"\n"
    write_lines(directory, content)
    result = verify(directory)
    assert not result.ok
    assert any("entry 3 (line 3): does not chain to entry 2" in p for p in result.problems)
    assert any(p.startswith("entry 2: differs from the hash checkpointed") for p in result.problems)


def test_deleted_entry_is_named(trail: AuditTrail, directory: Path) -> None:
    fill(trail, 5)
    content = lines(directory)
    del content[2]
    write_lines(directory, content)
    result = verify(directory)
    assert not result.ok
    assert "entries 3: missing (deleted)" in result.problems


def test_reordered_entries_are_named(trail: AuditTrail, directory: Path) -> None:
    fill(trail, 5)
    content = lines(directory)
    content[1], content[2] = content[2], content[1]
    write_lines(directory, content)
    result = verify(directory)
    assert not result.ok
    assert any("entry 2 (line 3): comes after entry 3: entries were reordered" in p for p in result.problems)


def test_truncated_tail_is_named(trail: AuditTrail, directory: Path) -> None:
    fill(trail, 5)
    write_lines(directory, lines(directory)[:3])
    result = verify(directory)
    assert not result.ok
    assert any(
        p.startswith("entries 4-5: missing at the end of the log, which stops at entry 3")
        for p in result.problems
    )


def test_emptied_log_is_detected(trail: AuditTrail, directory: Path) -> None:
    fill(trail, 2)
    write_lines(directory, [])
    result = verify(directory)
    assert not result.ok
    assert any(p.startswith("entries 1-2: missing at the end") for p in result.problems)


def test_deleted_first_entry_is_named(trail: AuditTrail, directory: Path) -> None:
    fill(trail, 3)
    write_lines(directory, lines(directory)[1:])
    result = verify(directory)
    assert "entries 1: missing (deleted)" in result.problems


def test_empty_trail_verifies(directory: Path) -> None:
    with AuditTrail.open(directory):
        pass
    result = verify(directory)
    assert result.ok and result.entries == 0


def test_reopening_a_cut_log_is_reported_and_the_cut_stays_visible(
    directory: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with AuditTrail.open(directory) as trail:
        fill(trail, 4)
    write_lines(directory, lines(directory)[:2])
    with caplog.at_level(logging.ERROR, logger="gateway"), AuditTrail.open(directory) as trail:
        fill(trail, 1)  # the gateway keeps recording decisions...
    assert "event=audit-tail-missing log_last_seq=2 checkpoint_seq=4" in caplog.text
    result = verify(directory)  # ...and verify still shows that entries were cut
    assert any(p.startswith("entry 3: differs from the hash checkpointed") for p in result.problems)
    assert any(p.startswith("entries 4: missing at the end of the log") for p in result.problems)


def test_deferred_mode_flushes_many_entries_with_one_sync_per_file(
    trail: AuditTrail, directory: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The running gateway batches: appends write at once, ``flush()`` makes them all durable."""
    synced: list[int] = []
    original = os.fdatasync

    def counting(fd: int) -> None:
        synced.append(fd)
        original(fd)

    monkeypatch.setattr(os, "fdatasync", counting)
    trail.deferred = True
    fill(trail, 5)
    assert synced == []  # nothing blocks on the disk while appending
    assert len(lines(directory)) == 5  # but every entry is already written, in order

    trail.flush()
    assert len(synced) == 2  # the log and the salts file, once each for all five entries
    trail.flush()
    assert len(synced) == 2  # nothing new: nothing to do
    trail.record_decision(decision("Q6"))
    trail.close()  # closing flushes what is left
    assert len(synced) == 4
    assert verify(directory).ok and verify(directory).last_seq == 6


def test_a_failed_flush_is_an_error_and_is_retried(
    trail: AuditTrail, monkeypatch: pytest.MonkeyPatch
) -> None:
    trail.deferred = True
    fill(trail, 1)
    original = os.fdatasync

    def broken(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fdatasync", broken)
    with pytest.raises(AuditError, match="cannot flush"):
        trail.flush()
    synced: list[int] = []
    monkeypatch.setattr(os, "fdatasync", lambda fd: synced.append(fd) or original(fd))
    trail.flush()
    assert len(synced) == 2  # the entries that failed to flush are flushed by the next call
