"""Second-member review end to end: a real gateway process, swaks as every member, Postfix as upstream.

Held -> review requests arrive at Postfix for the other members -> a reviewer replies ``approve`` to
the address in their request -> the original reaches Postfix with the approver header. Also: the
sender cannot approve their own message, a restart keeps the hold, cancel and expiry.
"""

from __future__ import annotations

import secrets
import time
from pathlib import Path

import pytest

from tests.e2e.clients import Account, new_password
from tests.e2e.gateway_process import GatewayFactory, GatewayProcess
from tests.e2e.members import notices, reply_address, send
from tests.e2e.postfix import PostfixInstance
from tests.e2e.tls import TlsMaterial

pytestmark = pytest.mark.e2e


class Committee:
    """Three members with unique addresses (the session's Postfix Maildir is shared by all tests)."""

    def __init__(self) -> None:
        tag = secrets.token_hex(4)
        self.ada = Account(f"ada-{tag}@example.org", new_password())
        self.ben = Account(f"ben-{tag}@example.org", new_password())
        self.cleo = Account(f"cleo-{tag}@example.org", new_password())
        self.outsider = f"olive-{tag}@example.test"

    def policy(self) -> str:
        return f"""\
organisation:
  conduct_address: conduct@example.org
  members:
    - name: Ada Quill
      addresses: [{self.ada.address}]
    - name: Ben Ink
      addresses: [{self.ben.address}]
    - name: Cleo Nib
      addresses: [{self.cleo.address}]
rules:
  - rule: reporter-protection
    action: hold
cases:
  - code: home shelf
    reporters:
      - id: quiet heron
        names: [Jin Park]
"""


def start_gateway(
    factory: GatewayFactory, tmp_path: Path, committee: Committee, review: dict[str, str]
) -> GatewayProcess:
    policy = tmp_path / f"review-policy-{secrets.token_hex(3)}.yaml"
    policy.write_text(committee.policy(), encoding="utf-8")
    gateway = factory({"policy": {"path": str(policy)}, "review": review}, start=False)
    for account in (committee.ada, committee.ben, committee.cleo):
        gateway.add_user(account.address, account.password)
    gateway.start()
    return gateway


def test_held_message_is_reviewed_by_reply_and_delivered_with_the_approver(
    gateway_factory: GatewayFactory,
    tmp_path: Path,
    tls_material: TlsMaterial,
    running_postfix: PostfixInstance,
) -> None:
    committee = Committee()
    gateway = start_gateway(gateway_factory, tmp_path, committee, {})
    held = send(gateway, tls_material, committee.ada, committee.outsider, "Hello,\r\n\r\nJin Park told us.")
    assert held.ok, held.transcript
    assert "Held for review by a second committee member: PROTECTED_IDENTITY." in held.stdout
    assert "You will get an e-mail when it is approved or rejected." in held.stdout

    [ben_request] = notices(running_postfix, committee.ben.address, "review-request")
    [cleo_request] = notices(running_postfix, committee.cleo.address, "review-request")
    [ada_notice] = notices(running_postfix, committee.ada.address, "held")
    assert b"Jin Park told us." in ben_request.raw  # the original, attached for the committee
    assert ada_notice.header_values("Auto-Submitted") == ["auto-replied"]
    assert not running_postfix.messages_to(committee.outsider)

    # The sender cannot approve: not with their own notice's address, nor with a reviewer's.
    for address in (reply_address(ada_notice), reply_address(ben_request)):
        refused = send(gateway, tls_material, committee.ada, address, "approve")
        assert not refused.ok and "550 5.7.1" in refused.stdout and "cannot review it" in refused.stdout

    # A restart keeps the hold and its tokens.
    assert gateway.terminate() == 0
    gateway.start()

    approved = send(
        gateway, tls_material, committee.ben, reply_address(ben_request), "Approve\r\n\r\n> quoted"
    )
    assert approved.ok, approved.transcript
    assert "Approved: message" in approved.stdout
    [delivered] = running_postfix.wait_for_recipient(committee.outsider)
    assert delivered.header_values("X-Conduct-Gateway-Approved-By") == [f"Ben Ink <{committee.ben.address}>"]
    assert b"Jin Park told us." in delivered.body
    notices(running_postfix, committee.ada.address, "approved")

    late = send(gateway, tls_material, committee.cleo, reply_address(cleo_request), "reject too late")
    assert late.ok and "Already decided" in late.stdout and "Ben Ink" in late.stdout
    notices(running_postfix, committee.cleo.address, "already-decided")
    # The review replies themselves never reached the upstream.
    assert not [m for m in running_postfix.messages() if "review+" in m.delivered_to]
    time.sleep(0.5)
    assert len(running_postfix.messages_to(committee.outsider)) == 1


def test_cancel_and_expiry_send_nothing_to_the_recipients(
    gateway_factory: GatewayFactory,
    tmp_path: Path,
    tls_material: TlsMaterial,
    running_postfix: PostfixInstance,
) -> None:
    committee = Committee()
    gateway = start_gateway(gateway_factory, tmp_path, committee, {"expiry": "4s", "check_interval": "0.5s"})
    first = send(
        gateway, tls_material, committee.ada, committee.outsider, "Jin Park, first.", subject="First"
    )
    second = send(
        gateway, tls_material, committee.ada, committee.outsider, "Jin Park, second.", subject="Second"
    )
    assert first.ok and second.ok, first.transcript + second.transcript
    held = notices(running_postfix, committee.ada.address, "held", count=2)
    [first_notice] = [n for n in held if "First" in n.header_values("Subject")[0]]

    cancelled = send(gateway, tls_material, committee.ada, reply_address(first_notice), "cancel")
    assert cancelled.ok and "Cancelled: message" in cancelled.stdout
    notices(running_postfix, committee.ada.address, "cancelled")

    [expired] = notices(running_postfix, committee.ada.address, "expired")
    assert "Second" in expired.header_values("Subject")[0]
    listed = gateway.cli("review", "list", "--all")
    assert listed.returncode == 0 and "cancelled" in listed.stdout and "expired" in listed.stdout
    assert not running_postfix.messages_to(committee.outsider)
