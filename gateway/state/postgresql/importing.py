"""``state import``: move a files-backed installation's stores into an empty PostgreSQL database.

What moves, verbatim where the formats allow, in one transaction (all or nothing):

- the audit trail: every line of ``audit.jsonl`` as it is (same hashes, same chain head) with its
  salts and checkpoint, after ``verify`` has passed on the files (a tampered trail is not moved);
  then the actions left "for later" are appended to the chain;
- the thread ledger's rows and the mailing lists it learnt; the fingerprints' rows and key check
  (``fingerprints.key`` itself stays in the state folder: copy it to every gateway);
- the case registry's encrypted bytes (the key stays where it is: set it on every gateway);
- the accounts (the users file's lines);
- the override store: tokens (hashes only, so a token given before the move still works once),
  overrides with their justifications, and the "false positive" report keys.

The queue and the holds move too (``queue_import``). The files are
left as they were (but the actions waiting "for later", which move into the chain): the import
copies, so the old installation can be restarted if need be. Refused
while a gateway holds the files trail, and into a database that already holds any of these stores.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from psycopg.types.json import Jsonb

from gateway.errors import AuditError, ConfigError, StateError
from gateway.settings import GatewaySettings
from gateway.state.accounts import parse_users
from gateway.state.audit_format import LOCK_NAME, LOG_NAME, SALTS_NAME
from gateway.state.audit_later import FileAudit
from gateway.state.audit_reading import verify
from gateway.state.files import locked
from gateway.state.layout import StateLayout
from gateway.state.postgresql.audit import PostgresqlAuditWriter
from gateway.state.postgresql.database import Connection, Database
from gateway.state.postgresql.migrate import require_current
from gateway.state.postgresql.queue_import import copy_holds, copy_queue
from gateway.state.registry import registry_path

_TABLES = (
    "audit_entries",
    "ledger_messages",
    "fingerprint_documents",
    "case_registry",
    "accounts",
    "queue_messages",
    "holds",
    "overrides",
    "override_tokens",
)


@dataclass(frozen=True)
class Imported:
    """How much of each store was moved."""

    audit_entries: int
    audit_head: str
    later_entries: int
    ledger_messages: int
    fingerprint_documents: int
    cases_registry: bool
    accounts: int
    queued_messages: int
    unreadable_messages: int  # set aside as corrupt in the files queue: left in its folder
    holds: int
    overrides: int = 0


def import_files(settings: GatewaySettings) -> Imported:
    """Copy the files stores under ``state_dir`` into the configured (migrated, empty) database."""
    layout = StateLayout(settings.state_dir)
    with contextlib.ExitStack() as stack:
        if layout.audit.is_dir():
            try:
                stack.enter_context(locked(layout.audit / LOCK_NAME, blocking=False))
            except BlockingIOError:
                raise ConfigError(
                    f"{layout.audit}: a gateway holds this audit trail; stop it before importing"
                ) from None
        database = stack.enter_context(Database.from_settings(settings.state.postgresql))
        require_current(database)
        imported = _copy(settings, layout, database)
        return replace(imported, later_entries=_drain_later(layout, database))


def _copy(settings: GatewaySettings, layout: StateLayout, database: Database) -> Imported:
    result = verify(layout.audit)
    if not result.ok:
        raise AuditError(
            f"{layout.audit}: audit verify fails ({len(result.problems)} problems, first: "
            f"{result.problems[0]}); the trail is not moved. Run: conduct-gateway audit verify"
        )
    try:
        with database.connection() as connection:
            _require_empty(connection, database.where)
            entries = _copy_audit(connection, layout.audit)
            ledger = _copy_rows(connection, layout.ledger, _LEDGER)
            _copy_lists(connection, layout.ledger)
            documents = _copy_rows(connection, layout.fingerprints, _FINGERPRINTS)
            registry = _copy_registry(connection, registry_path(settings))
            accounts = _copy_accounts(connection, settings.auth.users_file)
            queue = copy_queue(connection, layout.spool)
            holds = copy_holds(connection, layout.holds)
            overrides = _copy_overrides(connection, layout.overrides)
    except StateError as exc:
        raise StateError(f"nothing was imported: {exc}") from exc
    return Imported(
        entries,
        result.last_hash,
        0,
        ledger,
        documents,
        registry,
        accounts,
        queue.messages,
        queue.left_unreadable,
        holds,
        overrides,
    )


def _require_empty(connection: Connection, where: str) -> None:
    busy = []
    for table in _TABLES:
        row = connection.execute(f"SELECT EXISTS (SELECT 1 FROM {table})").fetchone()  # noqa: S608 - fixed names
        if row is not None and row[0]:
            busy.append(table)
    if busy:
        raise ConfigError(
            f"{where} already holds {', '.join(busy)}: import only into a new, migrated database"
        )


def _copy_audit(connection: Connection, directory: Path) -> int:
    log_path, salts_path = directory / LOG_NAME, directory / SALTS_NAME
    if not log_path.exists():
        return 0
    last: tuple[int, str] | None = None
    count = 0
    with log_path.open("rb") as handle, connection.cursor() as cursor:
        for raw in handle:
            fields = json.loads(raw)
            cursor.execute(
                "INSERT INTO audit_entries (seq, line) VALUES (%s, %s)", (fields["seq"], raw.decode("ascii"))
            )
            last = (fields["seq"], fields["hash"])
            count += 1
    if salts_path.exists():
        with salts_path.open("rb") as handle, connection.cursor() as cursor:
            for raw in handle:
                record = json.loads(raw)
                salt = bytes.fromhex(record["salt"]) if record.get("salt") is not None else None
                cursor.execute(
                    "INSERT INTO audit_salts (seq, hash, salt) VALUES (%s, %s, %s)",
                    (record["seq"], record["hash"], salt),
                )
    if last is not None:
        connection.execute("UPDATE audit_head SET seq = %s, hash = %s", last)
    return count


@dataclass(frozen=True)
class _Rows:
    select: str
    insert: str
    convert: Any


def _ledger_row(row: tuple[Any, ...]) -> tuple[Any, ...]:
    message_id, in_reply_to, refs, participants, case_name, recorded_at = row
    return (
        message_id,
        Jsonb(json.loads(in_reply_to)),
        Jsonb(json.loads(refs)),
        Jsonb(json.loads(participants)),
        case_name,
        datetime.fromisoformat(recorded_at),
    )


def _fingerprint_row(row: tuple[Any, ...]) -> tuple[Any, ...]:
    case_name, document, person, source, learnt_at, shingles, scheme, mentions = row
    return (
        case_name,
        document,
        person,
        source,
        datetime.fromisoformat(learnt_at),
        shingles,
        scheme,
        Jsonb(json.loads(mentions)),
    )


_LEDGER = _Rows(
    "SELECT message_id, in_reply_to, refs, participants, case_name, recorded_at FROM messages",
    "INSERT INTO ledger_messages (message_id, in_reply_to, refs, participants, case_name, recorded_at)"
    " VALUES (%s, %s, %s, %s, %s, %s)",
    _ledger_row,
)
_FINGERPRINTS = _Rows(
    "SELECT case_name, document, person, source, learnt_at, shingles, scheme, mentions"
    " FROM documents ORDER BY id",
    "INSERT INTO fingerprint_documents (case_name, document, person, source, learnt_at, shingles, scheme,"
    " mentions) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
    _fingerprint_row,
)


def _copy_rows(connection: Connection, path: Path, rows: _Rows) -> int:
    if not path.exists():
        return 0
    source = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        found = source.execute(rows.select).fetchall()
        meta = source.execute("SELECT name, value FROM meta").fetchall() if rows is _FINGERPRINTS else []
    except sqlite3.Error as exc:
        raise ConfigError(f"{path}: cannot be read for the import: {exc}") from None
    finally:
        source.close()
    with connection.cursor() as cursor:
        cursor.executemany(rows.insert, [rows.convert(row) for row in found])
        for name, value in meta:  # the key check (and epoch): the same key file must come along
            cursor.execute("INSERT INTO fingerprint_meta (name, value) VALUES (%s, %s)", (name, value))
    return len(found)


def _copy_lists(connection: Connection, path: Path) -> int:
    """The mailing lists the ledger learnt (none in a ledger older than the reply-all net)."""
    if not path.exists():
        return 0
    source = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        found = source.execute("SELECT address, seen_at FROM mailing_lists").fetchall()
    except sqlite3.OperationalError:
        return 0  # no such table yet
    finally:
        source.close()
    with connection.cursor() as cursor:
        cursor.executemany(
            "INSERT INTO ledger_mailing_lists (address, seen_at) VALUES (%s, %s)",
            [(address, datetime.fromisoformat(seen_at)) for address, seen_at in found],
        )
    return len(found)


def _moment(unix: float) -> datetime:
    return datetime.fromtimestamp(unix, UTC)


_OVERRIDES_LINKED = "SELECT reference, sender, rules, at, justification, queue_id, case_name FROM overrides"
_OVERRIDES_UNLINKED = "SELECT reference, sender, rules, at, justification, NULL, NULL FROM overrides"
_REPORTS = "SELECT digest, reference, at FROM reports"


def _copy_overrides(connection: Connection, path: Path) -> int:
    """The SQLite override store's rows (its Unix times as ``timestamptz``); how many overrides."""
    if not path.exists():
        return 0
    source = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        tokens = source.execute(
            "SELECT digest, sender, rules, expires, message, reference FROM tokens"
        ).fetchall()
        # A store written before the links to message and case (version 1) has neither column.
        columns = {row[1] for row in source.execute("PRAGMA table_info(overrides)")}
        overrides = source.execute(
            _OVERRIDES_LINKED if {"queue_id", "case_name"} <= columns else _OVERRIDES_UNLINKED
        ).fetchall()
        has_reports = source.execute("SELECT 1 FROM sqlite_master WHERE name = 'reports'").fetchone()
        reports = source.execute(_REPORTS).fetchall() if has_reports else []
    except sqlite3.Error as exc:
        raise ConfigError(f"{path}: cannot be read for the import: {exc}") from None
    finally:
        source.close()
    with connection.cursor() as cursor:
        cursor.executemany(
            "INSERT INTO override_tokens (digest, sender, rules, expires_at, message, reference)"
            " VALUES (%s, %s, %s, %s, %s, %s)",
            [(d, s, r, _moment(e), m, ref) for d, s, r, e, m, ref in tokens],
        )
        cursor.executemany(
            "INSERT INTO overrides (reference, sender, rules, made_at, justification, queue_id, case_name)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s)",
            [(ref, s, r, _moment(at), j, q, c) for ref, s, r, at, j, q, c in overrides],
        )
        cursor.executemany(
            "INSERT INTO false_positive_reports (digest, reference, reported_at) VALUES (%s, %s, %s)",
            [(d, ref, _moment(at)) for d, ref, at in reports],
        )
    return len(overrides)


def _copy_registry(connection: Connection, path: Path) -> bool:
    if not path.exists():
        return False
    connection.execute("INSERT INTO case_registry (version, data) VALUES (1, %s)", (path.read_bytes(),))
    return True


def _copy_accounts(connection: Connection, users_file: Path) -> int:
    try:
        text = users_file.read_text(encoding="utf-8")
    except FileNotFoundError:
        return 0
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{users_file}: cannot read the users file: {exc}") from None
    members = parse_users(text, users_file)
    with connection.cursor() as cursor:
        cursor.executemany(
            "INSERT INTO accounts (address, password_hash, aliases) VALUES (%s, %s, %s)",
            [(m.address, m.password_hash, list(m.aliases)) for m in members.values()],
        )
    connection.execute("UPDATE accounts_version SET version = version + 1")
    return len(members)


def _drain_later(layout: StateLayout, database: Database) -> int:
    """Actions left for the files gateway to append: appended to the shared chain now."""
    later = FileAudit(
        layout.audit,
        later=layout.audit_later,
        holds_outbox=layout.holds_outbox,
        expunge_pending=layout.expunge_pending,
    )
    with PostgresqlAuditWriter(database) as writer:
        return later.drain_later(writer)
