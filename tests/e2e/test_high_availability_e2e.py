"""Two gateways, one PostgreSQL, a real Postfix upstream (issue 16): what one decides, the other knows.

Each test starts two real ``conduct-gateway serve`` processes on one fresh database of the session's
private cluster (``shared_gateways``). A hold made on gateway A is decided by a reply through gateway
B, once; a reply through B to a thread started through A gets its banner from the shared ledger; the
one audit chain both write verifies with ``conduct-gateway audit verify``, and an edited row fails it.
Crashes, outages and the move from files are in ``test_high_availability_faults_e2e.py``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.e2e.clients import Account
from tests.e2e.conftest import SharedGateways
from tests.e2e.gateway_process import GatewayProcess
from tests.e2e.members import notices, reply_address, send
from tests.e2e.messages import token, unique_address
from tests.e2e.postfix import PostfixInstance
from tests.e2e.test_policy_e2e import CONDUCT, PolicyGateway, arrived, audit_entries, compose
from tests.e2e.test_review_e2e import Committee
from tests.e2e.tls import TlsMaterial
from tests.postgresql import ScratchDatabase

pytestmark = pytest.mark.e2e

BANNER_RULE = "  - rule: recipient-banner\n    action: rewrite\n"


def shared_policy(folder: Path, committee: Committee, member: Account) -> Path:
    """The review suite's committee (reporter-protection holds), with the banner rule and the suite's
    login as a member too."""
    text = committee.policy().replace("rules:\n", "rules:\n" + BANNER_RULE, 1)
    text = text.replace(
        "  members:\n", f"  members:\n    - name: Maya Member\n      addresses: [{member.address}]\n", 1
    )
    path = folder / "ha-policy.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def two_gateways(
    shared_gateways: SharedGateways, folder: Path, committee: Committee, member: Account
) -> tuple[GatewayProcess, GatewayProcess]:
    first, second = shared_gateways(
        policy=shared_policy(folder, committee, member),
        users=(committee.ada, committee.ben, committee.cleo),
    )
    return first, second


def decisions(gateway: GatewayProcess) -> list[dict[str, object]]:
    return [entry for entry in audit_entries(gateway) if entry.get("event") == "decision"]


def test_a_hold_made_on_one_gateway_is_approved_through_the_other_and_delivered_once(
    shared_gateways: SharedGateways,
    tmp_path: Path,
    tls_material: TlsMaterial,
    running_postfix: PostfixInstance,
    member: Account,
) -> None:
    committee = Committee()
    gateway_a, gateway_b = two_gateways(shared_gateways, tmp_path, committee, member)
    held = send(gateway_a, tls_material, committee.ada, committee.outsider, "Hello,\r\n\r\nJin Park told us.")
    assert held.ok, held.transcript
    assert "Held for review by a second committee member" in held.stdout
    [ben_request] = notices(running_postfix, committee.ben.address, "review-request")
    [cleo_request] = notices(running_postfix, committee.cleo.address, "review-request")

    approved = send(gateway_b, tls_material, committee.ben, reply_address(ben_request), "Approve")
    assert approved.ok, approved.transcript
    assert "Approved: message" in approved.stdout
    [delivered] = running_postfix.wait_for_recipient(committee.outsider)
    assert delivered.header_values("X-Conduct-Gateway-Approved-By") == [f"Ben Ink <{committee.ben.address}>"]

    # A second approval, through the gateway that made the hold: already decided, by Ben.
    late = send(gateway_a, tls_material, committee.cleo, reply_address(cleo_request), "approve")
    assert late.ok, late.transcript
    assert "Already decided" in late.stdout and "Ben Ink" in late.stdout
    again = send(gateway_a, tls_material, committee.ben, reply_address(ben_request), "approve")
    assert again.ok and "Already decided" in again.stdout, again.transcript
    notices(running_postfix, committee.cleo.address, "already-decided")
    time.sleep(1)  # a second release would be queued by now, and delivered by either gateway
    assert len(running_postfix.messages_to(committee.outsider)) == 1
    listed = gateway_b.cli("review", "list", "--all", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [hold["status"] for hold in json.loads(listed.stdout)] == ["released"]


def test_a_reply_through_the_other_gateway_gets_its_banner_from_the_shared_ledger(
    shared_gateways: SharedGateways,
    tmp_path: Path,
    tls_material: TlsMaterial,
    running_postfix: PostfixInstance,
    member: Account,
) -> None:
    gateway_a, gateway_b = (
        PolicyGateway(process, tls_material, member)
        for process in two_gateways(shared_gateways, tmp_path, Committee(), member)
    )
    first, reply = token(), token()
    bo, cleo = unique_address("ha-banner-bo"), unique_address("ha-banner-cleo")
    opened = gateway_a.send(compose(first, to=f"Bo Brandt <{bo}>"), [bo, CONDUCT])
    assert opened.final.startswith("250"), opened.run.transcript
    arrived(running_postfix, bo, first)

    answer = compose(
        reply,
        to=f"Bo Brandt <{bo}>, Cleo Rivers <{cleo}>",
        subject=f"Re: policy e2e {first}",
        headers=(f"In-Reply-To: <{first}@example.org>", f"References: <{first}@example.org>"),
        body="Looping in Cleo, who runs the venue.\r\n",
    )
    result = gateway_b.send(answer, [bo, cleo, CONDUCT])
    assert result.final.startswith("250"), result.run.transcript
    # B never saw the first message: only the shared ledger tells it Bo was on the thread already.
    assert "250-2.0.0 Changed: inserted [+ Cleo Rivers] at the top of the message" in result.replies
    delivered = arrived(running_postfix, cleo, reply)
    text = delivered.message.get_content()
    assert text.startswith("[+ Cleo Rivers]\n"), text
    assert "Bo Brandt" not in text.split("Looping in Cleo")[0]


def test_audit_verify_is_green_over_both_gateways_and_finds_an_edited_row(
    shared_gateways: SharedGateways,
    tmp_path: Path,
    tls_material: TlsMaterial,
    running_postfix: PostfixInstance,
    member: Account,
    pg_database: ScratchDatabase,
) -> None:
    gateway_a, gateway_b = (
        PolicyGateway(process, tls_material, member)
        for process in two_gateways(shared_gateways, tmp_path, Committee(), member)
    )
    sent = []
    for gateway in (gateway_a, gateway_b, gateway_a, gateway_b):
        marker, outsider = token(), unique_address("ha-audit")
        submission = gateway.send(compose(marker, to=f"<{outsider}>"), [outsider, CONDUCT])
        assert submission.final.startswith("250"), submission.run.transcript
        sent.append(submission.reference)
        arrived(running_postfix, outsider, marker)

    # Entries by both gateways, in one chain: every decision is there, and it verifies from either host.
    assert {entry.get("queue_id") for entry in decisions(gateway_b.process)} >= set(sent)
    for process in (gateway_a.process, gateway_b.process):
        verified = process.cli("audit", "verify")
        assert verified.returncode == 0, verified.stdout + verified.stderr

    with pg_database.connect() as database, database.connection() as connection:
        row = connection.execute(
            "SELECT seq, line FROM audit_entries WHERE line LIKE %s ORDER BY seq LIMIT 1", (f'%"{sent[1]}"%',)
        ).fetchone()
        assert row is not None
        seq, line = row
        assert '"250"' in line
        connection.execute(
            "UPDATE audit_entries SET line = %s WHERE seq = %s", (line.replace('"250"', '"550"'), seq)
        )
    broken = gateway_a.process.cli("audit", "verify")
    assert broken.returncode != 0, broken.stdout
    assert str(seq) in broken.stdout + broken.stderr
