"""The audit trail's format: an append-only, hash-chained JSON-lines record of every decision.

Layout, in ``<state_dir>/audit/`` (folder 0700, files 0600):

``audit.jsonl``
    One JSON object per line. Every entry has ``seq`` (1, 2, 3, ...), ``time`` (UTC), ``prev`` (the
    previous entry's hash; 64 zeros for the first) and ``hash``: the SHA-256 of the canonical JSON
    (sorted keys, no spaces, ASCII) of every other field. The line is that canonical JSON with
    ``hash`` added as its last key. Editing, deleting or reordering an entry breaks the chain at
    that entry, which ``verify`` names.
``salts.jsonl``
    One line per entry: ``{"seq", "hash", "salt"}``. Identifying values (Message-ID, recipients,
    message digests) are stored in the entry only as HMAC-SHA-256 digests keyed with that entry's
    own random salt, under ``digests``. The chain covers the digests, never the plain values, so
    deleting a salt (``forget_salts``: expunging) makes that entry's digests unlinkable while
    ``verify`` still passes. The ``seq``/``hash`` pairs double as a checkpoint: a log that ends
    before the last checkpointed entry was cut at the tail.

Never written here: bodies, subjects, matched identities, finding locations (an attachment name can
be an identity), or any plain recipient address. Appends are fsynced before ``append`` returns, so an
entry is on disk before the SMTP reply that it records goes out.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeAlias

LOG_NAME = "audit.jsonl"
SALTS_NAME = "salts.jsonl"
LOCK_NAME = ".lock"
GENESIS = "0" * 64
SALT_BYTES = 16
DIGEST_HEX_CHARS = 32  # 128 bits of HMAC-SHA-256: unforgeable and unguessable without the salt
EXPUNGED = "expunged"

JsonValue: TypeAlias = "str | int | bool | list[JsonValue] | dict[str, JsonValue] | None"
Digestible: TypeAlias = "str | bytes | Sequence[str]"


def utc_now() -> datetime:
    return datetime.now(UTC)


def format_time(moment: datetime) -> str:
    """UTC, millisecond precision, ``Z`` suffix: sortable as text."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_time(text: str) -> datetime:
    """Inverse of ``format_time`` (also accepts any ISO 8601 time with an offset)."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


# Made once: json.dumps with any option builds a new encoder per call, a cost paid twice per entry.
_CANONICAL_ENCODER = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
)


def canonical_json(value: Mapping[str, Any]) -> bytes:
    """The bytes an entry's hash is computed over: sorted keys, no whitespace, ASCII only."""
    return _CANONICAL_ENCODER.encode(value).encode("ascii")


def entry_hash(entry: Mapping[str, Any]) -> str:
    """SHA-256 over the canonical JSON of every field except ``hash`` itself."""
    body = {key: value for key, value in entry.items() if key != "hash"}
    return hashlib.sha256(canonical_json(body)).hexdigest()


def salted_digest(salt: bytes, value: str | bytes) -> str:
    """HMAC-SHA-256 of ``value`` keyed with an entry's salt (text as UTF-8)."""
    data = value.encode("utf-8") if isinstance(value, str) else value
    return hmac.new(salt, data, hashlib.sha256).hexdigest()[:DIGEST_HEX_CHARS]


def normalise_address(address: str) -> str:
    """Recipients are digested lower-cased, so ``audit show --recipient`` ignores case."""
    return address.strip().strip("<>").lower()


def normalise_message_id(value: str) -> str:
    """Message-IDs are digested without angle brackets and folding whitespace."""
    return "".join(value.split()).strip("<>")


@dataclass(frozen=True)
class StoredEntry:
    """An entry read back from the log, with its line number."""

    line: int
    fields: Mapping[str, Any]

    @property
    def seq(self) -> int:
        value = self.fields.get("seq")
        return value if isinstance(value, int) else -1

    @property
    def time(self) -> datetime | None:
        value = self.fields.get("time")
        if not isinstance(value, str):
            return None
        try:
            return parse_time(value)
        except ValueError:
            return None


def digest_matches(entry: StoredEntry, salt: bytes | None, name: str, value: str) -> bool:
    """Does the entry's digest ``name`` (or one of a list of them) correspond to ``value``?"""
    if salt is None:
        return False
    digests = entry.fields.get("digests")
    if not isinstance(digests, dict):
        return False
    stored = digests.get(name)
    wanted = salted_digest(salt, value)
    if isinstance(stored, list):
        return wanted in stored
    return stored == wanted
