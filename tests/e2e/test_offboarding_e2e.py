"""Offboarding end to end: after `user remove`, mail naming a reporter to any address of the removed
member is refused by the running gateway, with no second edit and no restart.

A real gateway process, swaks as the sending member, the session's Postfix as upstream.
"""

from __future__ import annotations

import secrets
import time
from pathlib import Path

import pytest

from tests.e2e.clients import Account, new_password
from tests.e2e.gateway_process import GatewayFactory
from tests.e2e.members import send
from tests.e2e.postfix import PostfixInstance
from tests.e2e.tls import TlsMaterial

pytestmark = pytest.mark.e2e


def test_user_remove_makes_the_member_s_other_address_an_outsider(
    gateway_factory: GatewayFactory,
    tmp_path: Path,
    tls_material: TlsMaterial,
    running_postfix: PostfixInstance,
) -> None:
    tag = secrets.token_hex(4)
    ada, ben = (Account(f"{name}-{tag}@example.org", new_password()) for name in ("ada", "ben"))
    ben_home = f"ben-{tag}@example.test"  # Ben's other address: in the policy, not an account
    policy = tmp_path / f"offboarding-policy-{tag}.yaml"
    policy.write_text(
        f"""\
organisation:
  conduct_address: conduct@example.org
  members:
    - name: Ada Quill
      addresses: [{ada.address}]
    - name: Ben Ink
      addresses: [{ben.address}, {ben_home}]
rules:
  - rule: reporter-protection
    action: reject
cases:
  - code: home shelf
    reporters:
      - id: quiet-heron
        names: [Jin Park]
""",
        encoding="utf-8",
    )
    gateway = gateway_factory({"policy": {"path": str(policy)}}, start=False)
    for account in (ada, ben):
        gateway.add_user(account.address, account.password)
    gateway.start()

    inside = send(gateway, tls_material, ada, ben_home, "Hello Ben,\r\n\r\nJin Park reported it.")
    assert inside.ok, inside.transcript
    running_postfix.wait_for_recipient(ben_home)

    removed = gateway.cli("user", "remove", ben.address)
    assert removed.returncode == 0, removed.stderr
    deadline = time.monotonic() + 30
    while "event=policy-reloaded" not in gateway.current_log():  # the gateway polls every 2 seconds
        assert time.monotonic() < deadline, gateway.current_log()[-3000:]
        time.sleep(0.2)

    refused = send(gateway, tls_material, ada, ben_home, "Hello Ben,\r\n\r\nJin Park reported it again.")
    assert not refused.ok and "550" in refused.stdout, refused.transcript
    assert "event=committee-differs-from-accounts" in gateway.current_log()
