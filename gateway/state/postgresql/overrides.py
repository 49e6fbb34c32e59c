"""Override tokens, overrides and "false positive" report keys in PostgreSQL, shared by every gateway.

The same port and rules as the SQLite store (``gateway.state.overrides``): a token given with a
refusal by one gateway is redeemed through any other, once. Redeeming is one transaction that locks
the token's row (``FOR UPDATE``: two gateways redeeming it at the same moment are serialised, the
second sees it used) and takes a transaction-scoped advisory lock on the sender, so the quota is
counted over every gateway's overrides without two redemptions of two tokens slipping past it
together. Times are ``timestamptz`` (readable by an admin in ``psql``); the port speaks Unix time.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any

from gateway.errors import OverrideError, StateError
from gateway.state.overrides import (
    TOKEN_LIFETIME,
    OverrideRecord,
    Redeemed,
    Redemption,
    refusal,
    token_digest,
)
from gateway.state.postgresql.database import Connection, Database

# pg_advisory_xact_lock(key1, key2)'s first key for "one sender's overrides" ("ovrd").
_SENDER_LOCK = 0x6F767264
_SELECT = "SELECT reference, sender, rules, made_at, justification, queue_id, case_name FROM overrides"
_INSERT = (
    "INSERT INTO overrides (reference, sender, rules, made_at, justification, queue_id, case_name)"
    " VALUES (%s, %s, %s, %s, %s, %s, %s)"
)


def _moment(unix: float) -> datetime:
    return datetime.fromtimestamp(unix, UTC)


def _record(row: tuple[Any, ...]) -> OverrideRecord:
    reference, sender, rules, made_at, justification, queue_id, case = row
    return OverrideRecord(
        reference, sender, tuple(rules.split()), made_at.timestamp(), justification, queue_id, case
    )


class PostgresqlOverrides:
    """The ``OverridesPort`` of the PostgreSQL backend."""

    def __init__(self, database: Database) -> None:
        self._database = database

    def _run(self, work: Callable[[Connection], Any]) -> Any:
        try:
            with self._database.connection() as connection:
                return work(connection)
        except StateError as exc:
            raise OverrideError(f"cannot use the override store: {exc}") from exc

    def issue(self, token: str, sender: str, rules: tuple[str, ...], now: float) -> None:
        """Remember ``token`` for ``sender`` and ``rules`` (a repeated token replaces the old row)."""
        self._run(
            lambda db: db.execute(
                "INSERT INTO override_tokens (digest, sender, rules, expires_at) VALUES (%s, %s, %s, %s)"
                " ON CONFLICT (digest) DO UPDATE SET sender = excluded.sender, rules = excluded.rules,"
                " expires_at = excluded.expires_at, message = NULL, reference = NULL",
                (token_digest(token), sender.lower(), " ".join(rules), _moment(now + TOKEN_LIFETIME)),
            )
        )

    def redeem(
        self,
        token: str,
        *,
        sender: str,
        message: str,
        rules: tuple[str, ...],
        justification: str,
        quotas: Mapping[str, tuple[int, float]],
        now: float,
        queue_id: str | None = None,
        case: str | None = None,
    ) -> Redemption:
        """As the SQLite store's ``redeem``, serialised per token and per sender across gateways."""
        sender = sender.lower()

        def work(db: Connection) -> Redemption:
            db.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (_SENDER_LOCK, sender))
            row = db.execute(
                "SELECT rules, expires_at, message, reference FROM override_tokens"
                " WHERE digest = %s AND sender = %s FOR UPDATE",
                (token_digest(token), sender),
            ).fetchone()

            def made_since(seconds: float) -> list[str]:
                found = db.execute(
                    "SELECT rules FROM overrides WHERE sender = %s AND made_at >= %s",
                    (sender, _moment(now) - timedelta(seconds=seconds)),
                ).fetchall()
                return [str(made_rules) for (made_rules,) in found]

            token_row = None if row is None or row[1] < _moment(now) else (row[0], row[2], row[3])
            refused = refusal(token_row, message=message, rules=rules, quotas=quotas, made_since=made_since)
            if refused is not None:
                return refused
            reference = "ovr-" + secrets.token_hex(6)
            db.execute(
                _INSERT,
                (reference, sender, " ".join(rules), _moment(now), justification, queue_id, case),
            )
            db.execute(
                "UPDATE override_tokens SET message = %s, reference = %s WHERE digest = %s",
                (message, reference, token_digest(token)),
            )
            return Redemption(Redeemed.ACCEPTED, reference)

        result: Redemption = self._run(work)
        return result

    def find(self, reference: str) -> OverrideRecord | None:
        row = self._run(lambda db: db.execute(_SELECT + " WHERE reference = %s", (reference,)).fetchone())
        return None if row is None else _record(row)

    def since(self, when: float) -> list[OverrideRecord]:
        rows = self._run(
            lambda db: db.execute(
                _SELECT + " WHERE made_at >= %s ORDER BY made_at", (_moment(when),)
            ).fetchall()
        )
        return [_record(row) for row in rows]

    def prune(self, *, now: float, retention: float) -> int:
        """Expired tokens go; overrides and report keys older than ``retention`` seconds too."""
        cutoff = _moment(now - retention)

        def work(db: Connection) -> int:
            db.execute("DELETE FROM override_tokens WHERE expires_at < %s", (_moment(now),))
            db.execute("DELETE FROM false_positive_reports WHERE reported_at < %s", (cutoff,))
            return db.execute("DELETE FROM overrides WHERE made_at < %s", (cutoff,)).rowcount

        pruned: int = self._run(work)
        return pruned

    def forget(self, case: str, queue_ids: Iterable[str], names: Callable[[str], bool]) -> int:
        """``case expunge``: the overrides of ``case``, of ``queue_ids``, or naming its people."""
        wanted = set(queue_ids)

        def work(db: Connection) -> int:
            rows = db.execute(
                "SELECT reference, queue_id, case_name, justification FROM overrides FOR UPDATE"
            ).fetchall()
            doomed = [
                reference
                for reference, queue_id, case_name, justification in rows
                if case_name == case or queue_id in wanted or names(justification)
            ]
            if doomed:
                db.execute("DELETE FROM overrides WHERE reference = ANY(%s)", (doomed,))
                db.execute("DELETE FROM override_tokens WHERE reference = ANY(%s)", (doomed,))
            return len(doomed)

        forgotten: int = self._run(work)
        return forgotten

    def note_report(self, key: str, reference: str, now: float) -> bool:
        """True the first time ``key`` is seen by any gateway, False for a repeat."""
        row = self._run(
            lambda db: db.execute(
                "INSERT INTO false_positive_reports (digest, reference, reported_at) VALUES (%s, %s, %s)"
                " ON CONFLICT (digest) DO NOTHING RETURNING digest",
                (key, reference, _moment(now)),
            ).fetchone()
        )
        return row is not None

    def close(self) -> None:
        """The pool is the process's, shared with the other stores: nothing to close here."""

    def __enter__(self) -> PostgresqlOverrides:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
