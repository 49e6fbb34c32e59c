"""Delivery to a real Postfix: outages, refusals, TLS modes, certificate checks and a clean SIGTERM."""

from __future__ import annotations

import time

import pytest

from tests.e2e.clients import Account, swaks
from tests.e2e.gateway_process import GatewayFactory, GatewayProcess
from tests.e2e.messages import assert_arrived_unchanged, token, tricky_message, unique_address
from tests.e2e.postfix import REFUSAL_TEXT, REFUSED_PREFIX, PostfixInstance
from tests.e2e.tls import TlsMaterial

pytestmark = pytest.mark.e2e


def submit(gateway: GatewayProcess, tls: TlsMaterial, member: Account, recipients: list[str]) -> bytes:
    sent = tricky_message(member.address, recipients[0], token())
    run = swaks(
        gateway.endpoint("submission"),
        mail_from=member.address,
        recipients=recipients,
        message=sent,
        account=member,
        ca_file=tls.ca_file,
    )
    assert run.ok, run.transcript
    return sent


def spooled(gateway: GatewayProcess, state: str) -> int:
    folder = gateway.state_dir / "spool" / state
    return sum(1 for path in folder.rglob("*") if path.is_file()) if folder.is_dir() else 0


def wait_until(condition: object, timeout: float, what: str) -> None:
    assert callable(condition)
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting until {what}")
        time.sleep(0.05)


def test_upstream_down_for_a_while_then_up_delivers_everything(
    gateway_factory: GatewayFactory,
    running_postfix: PostfixInstance,
    tls_material: TlsMaterial,
    member: Account,
) -> None:
    gateway = gateway_factory()
    recipients = [unique_address(f"outage{index}") for index in range(3)]
    running_postfix.stop()
    try:
        sent = {address: submit(gateway, tls_material, member, [address]) for address in recipients}
        # Accepted and tried: the attempts failed, so the messages wait in deferred/ for a retry.
        wait_until(lambda: spooled(gateway, "deferred") == len(recipients), 20, "all three are deferred")
    finally:
        running_postfix.start()
    for address, content in sent.items():
        [delivered] = running_postfix.wait_for_recipient(address, timeout=30)
        assert_arrived_unchanged(delivered, content)


def test_partial_refusal_delivers_the_rest_and_tells_the_sender(
    gateway_factory: GatewayFactory, postfix: PostfixInstance, tls_material: TlsMaterial, member: Account
) -> None:
    # The sender's own mailbox must be unique to this test, so it gets its own member account.
    sender = Account(unique_address("dsn-sender", "example.org"), member.password)
    gateway = gateway_factory(start=False)
    gateway.add_user(sender.address, sender.password)
    gateway.start()
    accepted = unique_address("kept")
    refused = unique_address(f"{REFUSED_PREFIX}gone")
    sent = submit(gateway, tls_material, sender, [accepted, refused])

    [delivered] = postfix.wait_for_recipient(accepted)
    assert_arrived_unchanged(delivered, sent)
    [report] = postfix.wait_for_recipient(sender.address)
    dsn = report.message
    assert dsn.get_content_type() == "multipart/report"
    assert dsn["Auto-Submitted"] == "auto-replied"
    assert report.message["Return-Path"] == "<>"
    [status] = [part for part in dsn.walk() if part.get_content_type() == "message/delivery-status"]
    per_recipient = status.get_payload()[1:]
    assert [str(fields["Final-Recipient"]).lower() for fields in per_recipient] == [f"rfc822; {refused}"]
    assert str(per_recipient[0]["Status"]).startswith("5.")
    assert REFUSAL_TEXT in report.raw.decode(errors="replace")
    assert postfix.messages_to(refused) == []


def test_relays_over_implicit_tls_when_configured(
    gateway_factory: GatewayFactory, postfix: PostfixInstance, tls_material: TlsMaterial, member: Account
) -> None:
    gateway = gateway_factory({"delivery": {"upstream": {"port": postfix.tls_port, "security": "tls"}}})
    recipient = unique_address("implicit-tls")
    sent = submit(gateway, tls_material, member, [recipient])
    [delivered] = postfix.wait_for_recipient(recipient)
    assert_arrived_unchanged(delivered, sent)
    assert "with ESMTPS" in delivered.header_values("Received")[0]


def test_an_upstream_certificate_it_cannot_verify_gets_no_mail(
    gateway_factory: GatewayFactory, postfix: PostfixInstance, tls_material: TlsMaterial, member: Account
) -> None:
    # Same Postfix, but the gateway is not told about the test CA: verification is on by default.
    gateway = gateway_factory({"delivery": {"upstream": {"ca_file": None}}})
    recipient = unique_address("unverified")
    submit(gateway, tls_material, member, [recipient])
    wait_until(lambda: spooled(gateway, "deferred") == 1, 20, "the message is deferred")
    assert postfix.messages_to(recipient) == []


def test_sigterm_stops_cleanly_and_the_restart_has_nothing_left_to_do(
    gateway_factory: GatewayFactory, postfix: PostfixInstance, tls_material: TlsMaterial, member: Account
) -> None:
    gateway = gateway_factory()
    recipient = unique_address("sigterm")
    sent = submit(gateway, tls_material, member, [recipient])
    [delivered] = postfix.wait_for_recipient(recipient)
    assert_arrived_unchanged(delivered, sent)
    wait_until(
        lambda: spooled(gateway, "incoming") + spooled(gateway, "deferred") == 0, 10, "the spool drains"
    )
    assert gateway.terminate() == 0, gateway.current_log()
    assert "event=stopped" in gateway.current_log()
    gateway.start()
    assert gateway.terminate() == 0, gateway.current_log()
    assert len(postfix.messages_to(recipient)) == 1
