"""Moving a files installation onto PostgreSQL (issue 16), end to end with the real Postfix upstream.

A gateway on files accepts mail while the upstream is down (queued), holds two messages and has one
of them rejected; it stops, ``state migrate`` and ``state import`` move its stores into PostgreSQL,
and two gateways on the database take over: the queued mail (the review notices too) is delivered
once, the pending hold is approved once through the other gateway, the decided one stays decided.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from tests.e2e.clients import Account
from tests.e2e.conftest import SharedGateways
from tests.e2e.gateway_process import GatewayProcess, deep_merge, gateway_settings
from tests.e2e.members import notices, reply_address, send
from tests.e2e.messages import unique_address
from tests.e2e.postfix import DeliveredMessage, PostfixInstance
from tests.e2e.shared_state import add_accounts, postgresql_state
from tests.e2e.test_high_availability_e2e import shared_policy
from tests.e2e.test_review_e2e import Committee
from tests.e2e.tls import TlsMaterial
from tests.postgresql import ScratchDatabase

pytestmark = pytest.mark.e2e


def request_about(postfix: PostfixInstance, reviewer: Account, subject: str) -> DeliveredMessage:
    """The review request ``reviewer`` got for the held message with this subject."""
    requests = notices(postfix, reviewer.address, "review-request", count=2)
    [request] = [r for r in requests if subject in r.header_values("Subject")[0]]
    return request


def test_a_files_installation_moved_by_state_import_is_served_by_two_gateways_on_postgresql(
    shared_gateways: SharedGateways,
    tmp_path: Path,
    tls_material: TlsMaterial,
    running_postfix: PostfixInstance,
    member: Account,
    pg_database: ScratchDatabase,
) -> None:
    committee = Committee()
    policy = shared_policy(tmp_path, committee, member)
    # The registry key the gateways will share on PostgreSQL, already the files gateway's.
    registry = postgresql_state(tmp_path / "shared", pg_database)["registry"]
    old = GatewayProcess(
        tmp_path / "files-gateway",
        deep_merge(gateway_settings(tls_material, running_postfix, policy), {"registry": registry}),
    )
    add_accounts(old, (member, committee.ada, committee.ben, committee.cleo))

    running_postfix.stop()  # everything accepted now stays queued
    old.start()
    queued = [unique_address("ha-moved") for _ in range(3)]
    for recipient in queued:
        accepted = send(old, tls_material, committee.ada, recipient, "Queued before the move.")
        assert accepted.ok, accepted.transcript
    for subject in ("First", "Second"):
        held = send(
            old, tls_material, committee.ada, committee.outsider, f"Jin Park, {subject}.", subject=subject
        )
        assert held.ok and "Held for review" in held.stdout, held.transcript
    assert old.terminate() == 0
    holds = json.loads(old.cli("review", "list", "--all", "--json").stdout)
    first, second = (hold["reference"] for hold in holds)  # oldest first
    rejected = old.cli("review", "reject", second, "--as", committee.ben.address, "--reason", "Not now")
    assert rejected.returncode == 0, rejected.stdout + rejected.stderr

    # The move, as the PostgreSQL page says: the same folder, the database named, migrate, import.
    shutil.copy(old.state_dir / "fingerprints.key", tmp_path / "shared" / "fingerprints.key")
    moved, other = shared_gateways(
        policy=policy, users=(committee.ada, committee.ben, committee.cleo), roots=[old.root], start=False
    )
    output = {}
    for step in ("migrate", "import", "check"):
        done = moved.cli("state", step)
        assert done.returncode == 0, f"state {step}: {done.stdout}{done.stderr}"
        output[step] = done.stdout
    assert "2 hold(s)" in output["import"], output["import"]
    moved.start()
    other.start()
    running_postfix.start()

    for recipient in queued:
        running_postfix.wait_for_recipient(recipient)
    first_request = request_about(running_postfix, committee.ben, "First")
    second_request = request_about(running_postfix, committee.cleo, "Second")
    approved = send(other, tls_material, committee.ben, reply_address(first_request), "Approve")
    assert approved.ok and "Approved: message" in approved.stdout, approved.transcript
    [delivered] = running_postfix.wait_for_recipient(committee.outsider)
    assert b"Jin Park, First." in delivered.body
    again = send(
        moved,
        tls_material,
        committee.cleo,
        reply_address(request_about(running_postfix, committee.cleo, "First")),
        "approve",
    )
    assert again.ok and "Already decided" in again.stdout and "Ben Ink" in again.stdout, again.transcript
    # The hold rejected on files stays rejected on PostgreSQL.
    late = send(moved, tls_material, committee.cleo, reply_address(second_request), "approve")
    assert late.ok and "Already decided" in late.stdout, late.transcript

    time.sleep(1)  # a second copy of anything would be on its way by now
    for recipient in queued:
        assert len(running_postfix.messages_to(recipient)) == 1
    assert len(running_postfix.messages_to(committee.outsider)) == 1
    listed = json.loads(other.cli("review", "list", "--all", "--json").stdout)
    assert {hold["reference"]: hold["status"] for hold in listed} == {first: "released", second: "rejected"}
    verified = other.cli("audit", "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr
