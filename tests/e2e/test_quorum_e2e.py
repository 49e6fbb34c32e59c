"""Quorum end to end: a severe case needs two members' approvals; a conflicted member is refused.

A real gateway process, swaks as every member, the session's Postfix as upstream.
"""

from __future__ import annotations

import re
import secrets
import time
from pathlib import Path

import pytest

from tests.e2e.clients import Account, new_password
from tests.e2e.gateway_process import GatewayFactory
from tests.e2e.members import notices, reply_address, send
from tests.e2e.postfix import PostfixInstance
from tests.e2e.tls import TlsMaterial

pytestmark = pytest.mark.e2e


def test_a_severe_case_is_released_at_the_second_approval_only(
    gateway_factory: GatewayFactory,
    tmp_path: Path,
    tls_material: TlsMaterial,
    running_postfix: PostfixInstance,
) -> None:
    tag = secrets.token_hex(4)
    ada, ben, cleo, dan = (
        Account(f"{name}-{tag}@example.org", new_password()) for name in ("ada", "ben", "cleo", "dan")
    )
    outsider = f"olive-{tag}@example.test"
    policy = tmp_path / f"quorum-policy-{tag}.yaml"
    policy.write_text(
        f"""\
organisation:
  conduct_address: conduct@example.org
  members:
    - name: Ada Quill
      addresses: [{ada.address}]
    - name: Ben Ink
      addresses: [{ben.address}]
    - name: Cleo Nib
      addresses: [{cleo.address}]
    - name: Dan Reed
      addresses: [{dan.address}]
rules:
  - rule: reporter-protection
    action: hold
cases:
  - code: home shelf
    severity: severe
    conflicts: [{dan.address}]
    reporters:
      - id: quiet heron
        names: [Jin Park]
""",
        encoding="utf-8",
    )
    gateway = gateway_factory({"policy": {"path": str(policy)}}, start=False)
    for account in (ada, ben, cleo, dan):
        gateway.add_user(account.address, account.password)
    gateway.start()

    held = send(gateway, tls_material, ada, outsider, "Hello,\r\n\r\nJin Park told us.")
    assert held.ok, held.transcript
    [ben_request] = notices(running_postfix, ben.address, "review-request")
    [cleo_request] = notices(running_postfix, cleo.address, "review-request")
    [ada_notice] = notices(running_postfix, ada.address, "held")
    assert b"Approvals needed: 2" in ada_notice.raw
    assert not running_postfix.messages_to(dan.address)  # conflicted: never asked
    match = re.search(rb"Reference: (\S+)", ben_request.raw)
    assert match is not None
    reference = match.group(1).decode()

    # The conflicted member cannot approve: not with the CLI, nor with another member's reply address.
    refused = gateway.cli("review", "approve", reference, "--as", dan.address)
    assert refused.returncode != 0 and "not among the eligible reviewers" in refused.stderr, refused.stderr
    by_mail = send(gateway, tls_material, dan, reply_address(ben_request), "approve")
    assert not by_mail.ok and "550 5.7.1" in by_mail.stdout

    first = send(gateway, tls_material, ben, reply_address(ben_request), "approve")
    assert first.ok and "1 of 2 approvals needed" in first.stdout, first.transcript
    [progress] = notices(running_postfix, ada.address, "approval-recorded")
    assert b"1 of 2 approvals" in b" ".join(progress.raw.split())
    time.sleep(0.5)
    assert not running_postfix.messages_to(outsider)  # one approval does not release

    again = send(gateway, tls_material, ben, reply_address(cleo_request), "approve")
    assert not again.ok  # Cleo's address is not Ben's: one member, one approval

    second = send(gateway, tls_material, cleo, reply_address(cleo_request), "approve")
    assert second.ok and "Approved: message" in second.stdout, second.transcript
    [delivered] = running_postfix.wait_for_recipient(outsider)
    assert delivered.header_values("X-Conduct-Gateway-Approved-By") == [
        f"Ben Ink <{ben.address}>, Cleo Nib <{cleo.address}>"
    ]
    notices(running_postfix, ada.address, "approved")
    shown = gateway.cli("review", "show", reference)
    assert shown.returncode == 0 and "2 of 2 needed" in shown.stdout
