"""Reading the audit trail: its entries and salts, the entries about a case, and ``verify``, which
names every edited, reordered, deleted or cut entry. Works on any copy of the folder (a backup too).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from gateway.state.audit_format import GENESIS, LOG_NAME, SALTS_NAME, entry_hash
from gateway.state.audit_format import StoredEntry as StoredEntry  # read back by this module
from gateway.state.audit_format import digest_matches as digest_matches


def read_entries(directory: Path) -> Iterator[StoredEntry]:
    """Every readable entry in file order (unreadable lines are skipped; ``verify`` reports them)."""
    path = directory / LOG_NAME
    if not path.exists():
        return
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                fields = json.loads(raw)
            except ValueError:
                continue
            if isinstance(fields, dict):
                yield StoredEntry(line=number, fields=fields)


def read_salts(directory: Path) -> dict[int, bytes | None]:
    """seq -> salt (None once forgotten). Unreadable lines are skipped; ``verify`` reports them."""
    salts: dict[int, bytes | None] = {}
    path = directory / SALTS_NAME
    if not path.exists():
        return salts
    with path.open("rb") as handle:
        for raw in handle:
            try:
                record = json.loads(raw)
                salt = record["salt"]
                salts[int(record["seq"])] = bytes.fromhex(salt) if salt is not None else None
            except (ValueError, KeyError, TypeError):
                continue
    return salts


def entries_about(directory: Path, case: str, queue_ids: Iterable[str] = ()) -> list[int]:
    """The seqs of every entry that refers to ``case`` (in ``cases`` or a finding) or to one of
    ``queue_ids`` (as ``queue_id`` or ``release_queue_id``): what expunging a case forgets."""
    return select_about(read_entries(directory), case, queue_ids)


def select_about(entries: Iterable[StoredEntry], case: str, queue_ids: Iterable[str] = ()) -> list[int]:
    """``entries_about`` over entries from any backend."""
    wanted = set(queue_ids)
    found = []
    for entry in entries:
        fields = entry.fields
        cases = fields.get("cases")
        findings = fields.get("findings")
        if (
            (isinstance(cases, list) and case in cases)
            or (
                isinstance(findings, list)
                and any(isinstance(f, dict) and f.get("case") == case for f in findings)
            )
            or fields.get("queue_id") in wanted
            or fields.get("release_queue_id") in wanted
        ):
            found.append(entry.seq)
    return found


@dataclass(frozen=True)
class Verification:
    """What ``verify`` found: how many entries, and every problem (each names the entry)."""

    entries: int
    last_seq: int
    last_hash: str
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.problems


def _ranges(numbers: Iterable[int]) -> list[str]:
    out: list[str] = []
    ordered = sorted(numbers)
    start = previous = None
    for number in ordered:
        if start is None or previous is None:
            start = previous = number
        elif number == previous + 1:
            previous = number
        else:
            out.append(f"{start}" if start == previous else f"{start}-{previous}")
            start = previous = number
    if start is not None and previous is not None:
        out.append(f"{start}" if start == previous else f"{start}-{previous}")
    return out


def verify(directory: Path) -> Verification:
    """Check the chain and the checkpoint; name every edited, reordered, deleted or cut entry."""
    checkpoint = _read_checkpoint(directory)
    log_path = directory / LOG_NAME
    if not log_path.exists():
        return verify_lines((), checkpoint)
    with log_path.open("rb") as handle:
        return verify_lines(enumerate(handle, start=1), checkpoint)


def verify_lines(
    lines: Iterable[tuple[int, bytes]], checkpoint: tuple[list[tuple[int, str]], list[str]] | None
) -> Verification:
    """``verify`` over numbered lines (each ending in a newline) and the checkpoint's (seq, hash)
    pairs, wherever they are kept (a file, or rows of a database)."""
    problems: list[str] = []
    stored_hash: dict[int, str] = {}
    prev_of: dict[int, str] = {}
    line_of: dict[int, int] = {}
    order: list[int] = []
    count = 0
    for number, raw in lines:
        if not raw.endswith(b"\n"):
            problems.append(f"line {number}: incomplete last line (the file was cut mid-entry)")
            continue
        try:
            fields = json.loads(raw)
        except ValueError:
            problems.append(f"line {number}: not a readable entry (edited)")
            continue
        seq = fields.get("seq") if isinstance(fields, dict) else None
        if not isinstance(seq, int) or not isinstance(fields.get("hash"), str):
            problems.append(f"line {number}: entry without seq or hash (edited)")
            continue
        count += 1
        if seq in line_of:
            problems.append(
                f"entry {seq} (line {number}): appears twice (also line {line_of[seq]}): duplicated"
            )
            continue
        if entry_hash(fields) != fields["hash"]:
            problems.append(f"entry {seq} (line {number}): content does not match its hash (edited)")
        line_of[seq] = number
        stored_hash[seq] = fields["hash"]
        prev_of[seq] = str(fields.get("prev"))
        order.append(seq)
    highest = max(order, default=0)
    for position in range(1, len(order)):
        if order[position] < max(order[:position]):
            earlier = max(order[:position])
            problems.append(
                f"entry {order[position]} (line {line_of[order[position]]}): comes after entry {earlier}: "
                "entries were reordered"
            )
    missing = set(range(1, highest + 1)) - set(order)
    if missing:
        problems.append(f"entries {', '.join(_ranges(missing))}: missing (deleted)")
    for seq in sorted(order):
        expected_prev = GENESIS if seq == 1 else stored_hash.get(seq - 1)
        if expected_prev is not None and prev_of[seq] != expected_prev:
            problems.append(
                f"entry {seq} (line {line_of[seq]}): does not chain to entry {seq - 1} "
                f"(entry {seq - 1} was replaced or re-hashed)"
                if seq > 1
                else f"entry 1 (line {line_of[seq]}): does not start the chain (earlier entries were removed)"
            )
    problems.extend(_check_checkpoint(checkpoint, stored_hash, highest))
    last_hash = stored_hash.get(highest, GENESIS)
    return Verification(entries=count, last_seq=highest, last_hash=last_hash, problems=tuple(problems))


def _read_checkpoint(directory: Path) -> tuple[list[tuple[int, str]], list[str]] | None:
    """The (seq, hash) pairs of the salts file, and unreadable lines; None if there is no file.

    Read before the log: the gateway writes the log first, so a log read afterwards holds at least
    every checkpointed entry even while the gateway is appending.
    """
    path = directory / SALTS_NAME
    if not path.exists():
        return None
    pairs: list[tuple[int, str]] = []
    problems: list[str] = []
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                record = json.loads(raw)
                seq, digest = record["seq"], record["hash"]
            except (ValueError, KeyError, TypeError):
                seq, digest = None, None
            if not isinstance(seq, int) or not isinstance(digest, str):
                problems.append(f"{SALTS_NAME} line {number}: unreadable")
                continue
            pairs.append((seq, digest))
    return pairs, problems


def _check_checkpoint(
    checkpoint: tuple[list[tuple[int, str]], list[str]] | None, stored_hash: Mapping[int, str], highest: int
) -> list[str]:
    if checkpoint is None:
        return [f"{SALTS_NAME}: missing (the checkpoint and salts were deleted)"] if highest else []
    pairs, problems = checkpoint
    problems = list(problems)
    beyond: list[int] = []
    for seq, digest in pairs:
        if seq > highest:
            beyond.append(seq)
        elif seq in stored_hash and stored_hash[seq] != digest:
            problems.append(
                f"entry {seq}: differs from the hash checkpointed when it was written (edited and re-hashed)"
            )
    if beyond:
        problems.append(
            f"entries {', '.join(_ranges(beyond))}: missing at the end of the log, which stops at entry "
            f"{highest} (the log was truncated)"
        )
    return problems
