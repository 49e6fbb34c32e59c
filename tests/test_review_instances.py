"""Review with two gateways on one PostgreSQL: a reply reaches either one, the first decision wins, once."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.decision.policy_screener import PolicyScreener
from gateway.decision.screening import Accept
from gateway.replies import Reply
from gateway.settings import GatewaySettings, PolicySettings, ReviewSettings, ServerSettings
from gateway.state.layout import StateLayout
from gateway.state.opening import open_state
from gateway.state.postgresql.opening import close_shared_databases
from gateway.state_settings import PostgresqlSettings, StateSettings
from tests.postgresql import ScratchDatabase
from tests.test_review import POLICY, decide, hold, reply, reply_to


def instance_settings(folder: Path, database: ScratchDatabase) -> GatewaySettings:
    folder.mkdir()
    policy = folder / "policy.yaml"
    policy.write_text(POLICY, encoding="utf-8")
    secret = folder / "pg-password"
    secret.write_text(database.password)
    secret.chmod(0o600)
    return GatewaySettings(
        state_dir=folder / "state",
        policy=PolicySettings(path=policy),
        server=ServerSettings(hostname="gateway.example.test"),
        review=ReviewSettings(notices_per_hour=50),
        state=StateSettings(
            backend="postgresql", postgresql=PostgresqlSettings(dsn=database.dsn, password_file=secret)
        ),
    )


@pytest.fixture
def gateways(tmp_path: Path, pg_database: ScratchDatabase) -> Iterator[tuple[PolicyScreener, PolicyScreener]]:
    """Two gateways (each its own state folder and audit trail) sharing one database."""
    a, b = instance_settings(tmp_path / "a", pg_database), instance_settings(tmp_path / "b", pg_database)
    try:
        with PolicyScreener.from_settings(a) as first:
            # Gateways sharing a database share the fingerprints key, as the operations guide says.
            key = StateLayout(b.state_dir).fingerprint_key
            key.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(StateLayout(a.state_dir).fingerprint_key, key)
            with PolicyScreener.from_settings(b) as second:
                yield first, second
    finally:
        close_shared_databases()  # the pools open_state made for this test's database


def released(result: Accept | Reply) -> bool:
    return isinstance(result, Accept) and any(m.mail_from == "ada@example.org" for m in result.extra)


def test_a_hold_made_on_one_gateway_is_approved_through_the_other_and_a_second_approval_is_refused(
    gateways: tuple[PolicyScreener, PolicyScreener], tmp_path: Path, pg_database: ScratchDatabase
) -> None:
    first, second = gateways
    _, by = hold(first)
    approval = decide(second, reply(reply_to(by["ben@example.org:review-request"]), "Approve."))
    assert isinstance(approval, Accept) and released(approval)
    assert approval.reply_lines == ("Approved: message Q1 released for delivery. Thank you for reviewing.",)
    late = decide(
        first,
        reply(reply_to(by["cleo@example.org:review-request"]), "approve", sender="cleo@example.org"),
    )
    assert isinstance(late, Accept) and not released(late)
    assert late.reply_lines[0].startswith("Already decided: message Q1 was approved and sent by Ben Ink.")
    again = decide(first, reply(reply_to(by["ben@example.org:review-request"]), "approve", queue_id="R2"))
    assert isinstance(again, Accept) and not released(again)
    assert again.reply_lines[0].startswith("Already decided")
    record = open_state(instance_settings(tmp_path / "c", pg_database)).holds.open().get("Q1")
    assert record.status == "released" and len(record.approvals) == 1


def test_approvals_arriving_at_both_gateways_at_once_release_the_message_once(
    gateways: tuple[PolicyScreener, PolicyScreener],
) -> None:
    first, second = gateways
    _, by = hold(first)
    replies = {
        "ben": (first, reply(reply_to(by["ben@example.org:review-request"]), "approve")),
        "cleo": (
            second,
            reply(reply_to(by["cleo@example.org:review-request"]), "approve", sender="cleo@example.org"),
        ),
    }
    results: dict[str, Accept | Reply] = {}
    start = threading.Barrier(len(replies))

    def deliver(name: str) -> None:
        gateway, submission = replies[name]
        start.wait()
        results[name] = decide(gateway, submission)

    threads = [threading.Thread(target=deliver, args=(name,)) for name in replies]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(released(result) for result in results.values()) == [False, True]
    [late] = [result for result in results.values() if not released(result)]
    assert isinstance(late, Accept) and late.reply_lines[0].startswith("Already decided")
