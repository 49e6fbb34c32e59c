"""``state export``: move the stores of a PostgreSQL database back into a files-backed state folder.

The counterpart of ``state import``, for the same stores: the audit trail (line for line, with its
salts and checkpoint, so the chain and its head are the same), the thread ledger (and its mailing
lists), the fingerprints with their key check, the case registry's encrypted bytes, the accounts
(as a users file), the queue (ids, envelopes, exact bytes, states, per-recipient status), the
holds (records with their token hashes, both bytes) and the override store (tokens, overrides with
their justifications and links, "false positive" report keys). Messages PostgreSQL had set aside as
unreadable (``corrupt``) are counted and left in the database.

All or nothing: everything is read in one read-only snapshot (REPEATABLE READ) and written beside
its place under a temporary name; only when every store is written are they renamed into place,
and a failure removes whatever was written. Refused when any of the files already exists (the
folder must not hold a state), or while gateways run on the database (stop them first: their
new work would not come along). The database is left as it was.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from gateway.errors import ConfigError, StateError
from gateway.settings import GatewaySettings
from gateway.state.accounts import Member, users_file_text
from gateway.state.audit_format import LOG_NAME, SALTS_NAME, canonical_json
from gateway.state.delivery_status import decode_status
from gateway.state.files import atomic_write, make_private_directory
from gateway.state.holds import HoldRecord, HoldStore
from gateway.state.layout import StateLayout
from gateway.state.ledger import Ledger
from gateway.state.overrides import OverrideStore
from gateway.state.postgresql.database import Connection, Database
from gateway.state.postgresql.migrate import require_current
from gateway.state.registry import registry_path
from gateway.state.spool import QueueState, Spool, SpoolEnvelope

# A gateway seen this recently is taken to be running (its heartbeat is every 15 seconds).
RUNNING_WITHIN = "60 seconds"


@dataclass(frozen=True)
class Exported:
    """How much of each store was written."""

    audit_entries: int
    audit_head: str
    ledger_messages: int
    fingerprint_documents: int
    cases_registry: bool
    accounts: int
    queued_messages: int
    unreadable_messages: int  # set aside as corrupt in PostgreSQL: left there
    holds: int
    overrides: int


def export_state(settings: GatewaySettings) -> Exported:
    """Write the database's stores into ``state_dir`` (and the users file and registry paths)."""
    layout = StateLayout(settings.state_dir)
    targets = {
        "audit": layout.audit,
        "ledger": layout.ledger,
        "fingerprints": layout.fingerprints,
        "registry": registry_path(settings),
        "accounts": settings.auth.users_file,
        "queue": layout.spool,
        "holds": layout.holds,
        "overrides": layout.overrides,
    }
    present = [str(path) for path in targets.values() if path.exists()]
    if present:
        raise ConfigError(
            f"state export writes a new files state, but {', '.join(present)} already exist: "
            "export into a state folder that holds none of them (move them aside first)"
        )
    staged = {name: path.with_name(f".{path.name}.exporting") for name, path in targets.items()}
    with Database.from_settings(settings.state.postgresql) as database:
        require_current(database)
        try:
            for path in staged.values():
                _remove(path)  # left by an export that was killed
            with database.connection() as connection:
                connection.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                _require_stopped(connection, database.where)
                done = _write(connection, staged)
            for name, path in staged.items():
                if path.exists():
                    path.rename(targets[name])
        except BaseException:
            for name, path in staged.items():
                _remove(path)
                if str(targets[name]) not in present:
                    _remove(targets[name])
            raise
    return done


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _require_stopped(connection: Connection, where: str) -> None:
    row = connection.execute(
        f"SELECT count(*) FROM gateway_instances WHERE seen_at > now() - interval '{RUNNING_WITHIN}'"  # noqa: S608 - a constant
    ).fetchone()
    if row is not None and row[0]:
        raise ConfigError(
            f"{row[0]} gateway(s) run on {where} (conduct-gateway status lists them): stop them before "
            "exporting, or what they accept meanwhile would not come along"
        )


def _write(connection: Connection, staged: dict[str, Path]) -> Exported:
    make_private_directory(staged["audit"].parent)
    for path in staged.values():
        path.parent.mkdir(parents=True, exist_ok=True)
    entries, head = _audit(connection, staged["audit"])
    ledger = _ledger(connection, staged["ledger"])
    documents = _fingerprints(connection, staged["fingerprints"])
    registry = _registry(connection, staged["registry"])
    accounts = _accounts(connection, staged["accounts"])
    queued, unreadable = asyncio.run(_queue(connection, staged["queue"]))
    holds = _holds(connection, staged["holds"])
    overrides = _overrides(connection, staged["overrides"])
    return Exported(
        entries, head, ledger, documents, registry, accounts, queued, unreadable, holds, overrides
    )


def _audit(connection: Connection, folder: Path) -> tuple[int, str]:
    make_private_directory(folder)
    lines = connection.execute("SELECT line FROM audit_entries ORDER BY seq").fetchall()
    salts = connection.execute("SELECT seq, hash, salt FROM audit_salts ORDER BY seq").fetchall()
    head = connection.execute("SELECT hash FROM audit_head").fetchone()
    atomic_write(folder / LOG_NAME, "".join(line for (line,) in lines).encode("ascii"))
    records = (
        canonical_json({"seq": seq, "hash": digest, "salt": bytes(salt).hex() if salt is not None else None})
        + b"\n"
        for seq, digest, salt in salts
    )
    atomic_write(folder / SALTS_NAME, b"".join(records))
    return len(lines), str(head[0]) if head else ""


@contextlib.contextmanager
def _sqlite(path: Path) -> Iterator[sqlite3.Connection]:
    target = sqlite3.connect(path, isolation_level=None)
    try:
        target.execute("BEGIN")
        yield target
        target.execute("COMMIT")
    except sqlite3.Error as exc:
        raise StateError(f"{path}: cannot be written for the export: {exc}") from None
    finally:
        target.close()


def _ledger(connection: Connection, path: Path) -> int:
    Ledger.open(path).close()  # the schema, 0600
    rows = connection.execute(
        "SELECT message_id, in_reply_to::text, refs::text, participants::text, case_name, recorded_at"
        " FROM ledger_messages ORDER BY message_id"
    ).fetchall()
    lists = connection.execute("SELECT address, seen_at FROM ledger_mailing_lists").fetchall()
    with _sqlite(path) as target:
        target.executemany(
            "INSERT INTO messages (message_id, in_reply_to, refs, participants, case_name, recorded_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            [(*row[:5], row[5].isoformat()) for row in rows],
        )
        target.executemany(
            "INSERT INTO mailing_lists (address, seen_at) VALUES (?, ?)",
            [(address, seen_at.isoformat()) for address, seen_at in lists],
        )
    return len(rows)


def _fingerprints(connection: Connection, path: Path) -> int:
    from gateway.state.fingerprints import FINGERPRINT_SCHEMA, SCHEMA_VERSION

    rows = connection.execute(
        "SELECT case_name, document, person, source, learnt_at, shingles, scheme, mentions::text"
        " FROM fingerprint_documents ORDER BY id"
    ).fetchall()
    meta = connection.execute("SELECT name, value FROM fingerprint_meta").fetchall()
    atomic_write(path, b"")  # 0600 from its first byte
    schema = sqlite3.connect(path)
    try:
        schema.executescript(f"{FINGERPRINT_SCHEMA}\nPRAGMA user_version = {SCHEMA_VERSION};")
    finally:
        schema.close()
    with _sqlite(path) as target:
        target.executemany(
            "INSERT INTO documents (case_name, document, person, source, learnt_at, shingles, scheme,"
            " mentions) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [(*row[:4], row[4].isoformat(), bytes(row[5]), *row[6:]) for row in rows],
        )
        target.executemany("INSERT INTO meta (name, value) VALUES (?, ?)", meta)
    return len(rows)


def _registry(connection: Connection, path: Path) -> bool:
    row = connection.execute("SELECT data FROM case_registry").fetchone()
    if row is None:
        return False
    make_private_directory(path.parent)
    atomic_write(path, bytes(row[0]))
    return True


def _accounts(connection: Connection, path: Path) -> int:
    version = connection.execute("SELECT version FROM accounts_version").fetchone()
    rows = connection.execute("SELECT address, password_hash, aliases FROM accounts").fetchall()
    if not rows and (version is None or int(version[0]) == 0):
        return 0  # accounts never used: no users file, as before the first `user add`
    members = {
        address: Member(address, password_hash, tuple(aliases)) for address, password_hash, aliases in rows
    }
    atomic_write(path, users_file_text(members).encode("utf-8"))
    return len(members)


async def _queue(connection: Connection, folder: Path) -> tuple[int, int]:
    rows = connection.execute(
        "SELECT queue_id, mail_from, rcpt_tos, authenticated_as, received_at, client_address, state,"
        " content, status::text FROM queue_messages ORDER BY queue_id"
    ).fetchall()
    if not rows:
        return 0, 0
    spool = Spool(folder)
    moved = unreadable = 0
    for row in rows:
        queue_id, mail_from, rcpt_tos, authenticated_as, received_at, client_address = row[:6]
        state, content, status = QueueState(row[6]), bytes(row[7]), row[8]
        if state is QueueState.CORRUPT:
            unreadable += 1
            continue
        envelope = SpoolEnvelope(
            queue_id, mail_from, tuple(rcpt_tos), authenticated_as, float(received_at), client_address
        )
        await spool.commit(envelope, content)
        if status is not None:
            await spool.write_status(queue_id, decode_status(status.encode("utf-8"), queue_id))
        if state is not QueueState.INCOMING:
            await spool.move(queue_id, QueueState.INCOMING, state)
        moved += 1
    return moved, unreadable


def _holds(connection: Connection, folder: Path) -> int:
    rows = connection.execute(
        "SELECT record::text, original, release FROM holds ORDER BY reference"
    ).fetchall()
    if not rows:
        return 0
    store = HoldStore(folder)
    for record, original, release in rows:
        store.create(HoldRecord.model_validate_json(record), bytes(original), bytes(release))
    return len(rows)


def _overrides(connection: Connection, path: Path) -> int:
    """The override store as the files backend keeps it (its times as Unix seconds); how many overrides."""
    tokens = connection.execute(
        "SELECT digest, sender, rules, extract(epoch FROM expires_at), message, reference"
        " FROM override_tokens"
    ).fetchall()
    overrides = connection.execute(
        "SELECT reference, sender, rules, extract(epoch FROM made_at), justification, queue_id, case_name"
        " FROM overrides"
    ).fetchall()
    reports = connection.execute(
        "SELECT digest, reference, extract(epoch FROM reported_at) FROM false_positive_reports"
    ).fetchall()
    if not (tokens or overrides or reports):
        return 0
    OverrideStore.open(path).close()  # the schema, 0600
    with _sqlite(path) as target:
        target.executemany(
            "INSERT INTO tokens (digest, sender, rules, expires, message, reference)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            [(d, s, r, float(e), m, ref) for d, s, r, e, m, ref in tokens],
        )
        target.executemany(
            "INSERT INTO overrides (reference, sender, rules, at, justification, queue_id, case_name)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            [(ref, s, r, float(at), j, q, c) for ref, s, r, at, j, q, c in overrides],
        )
        target.executemany(
            "INSERT INTO reports (digest, reference, at) VALUES (?, ?, ?)",
            [(d, ref, float(at)) for d, ref, at in reports],
        )
    return len(overrides)
