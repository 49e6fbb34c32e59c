"""No open relay, tried with a real client: every way around AUTH is refused and nothing reaches Postfix."""

from __future__ import annotations

import base64
import socket

import pytest

from tests.e2e.clients import Account, ClientRun, Endpoint, swaks
from tests.e2e.gateway_process import GatewayFactory, GatewayProcess
from tests.e2e.messages import token, tricky_message
from tests.e2e.postfix import PostfixInstance
from tests.e2e.tls import TlsMaterial

pytestmark = pytest.mark.e2e


def first_refusal(run: ClientRun) -> str:
    refusals = [line for line in run.server_replies() if line[:1] in ("4", "5")]
    assert refusals, f"the gateway refused nothing:\n{run.transcript}"
    return refusals[0]


def assert_only_canary_arrives(
    gateway: GatewayProcess,
    postfix: PostfixInstance,
    tls_material: TlsMaterial,
    member: Account,
    recipient: str,
) -> None:
    """Send a proper message after the refused ones: once it is in, nothing else may be there."""
    marker = token()
    run = swaks(
        gateway.endpoint("submission"),
        mail_from=member.address,
        recipients=[recipient],
        message=tricky_message(member.address, recipient, marker),
        account=member,
        ca_file=tls_material.ca_file,
    )
    assert run.ok, run.transcript
    delivered = postfix.wait_for_recipient(recipient)
    assert [message.message["Message-ID"] for message in delivered] == [f"<{marker}@example.org>"]


@pytest.mark.parametrize("listener", ["submission", "submissions"])
def test_unauthenticated_mail_is_refused_with_530(
    shared_gateway: GatewayProcess,
    postfix: PostfixInstance,
    tls_material: TlsMaterial,
    member: Account,
    recipient: str,
    listener: str,
) -> None:
    run = swaks(
        shared_gateway.endpoint(listener),
        mail_from=member.address,
        recipients=[recipient],
        message=tricky_message(member.address, recipient, token()),
        ca_file=tls_material.ca_file,
    )
    assert not run.ok
    assert first_refusal(run).startswith(("530 5.7.0", "530-5.7.0")), run.transcript
    assert_only_canary_arrives(shared_gateway, postfix, tls_material, member, recipient)


def smtp_exchange(sock: socket.socket, command: bytes | None) -> bytes:
    """Send one command (None: only read the greeting) and read the whole, possibly multi-line, reply."""
    if command is not None:
        sock.sendall(command + b"\r\n")
    reply = b""
    while True:
        chunk = sock.recv(4096)
        if not chunk:
            return reply
        reply += chunk
        lines = reply.split(b"\r\n")
        if len(lines) > 1 and len(lines[-2]) >= 4 and lines[-2][3:4] == b" ":
            return reply


def test_auth_before_starttls_is_neither_offered_nor_accepted(
    shared_gateway: GatewayProcess,
    postfix: PostfixInstance,
    tls_material: TlsMaterial,
    member: Account,
    recipient: str,
) -> None:
    host, port = shared_gateway.addresses["submission"]
    # 127.0.0.1 is loopback, but plaintext AUTH on loopback is off unless configured.
    with socket.create_connection((host, port), timeout=10) as sock:
        assert smtp_exchange(sock, None).startswith(b"220")
        ehlo = smtp_exchange(sock, b"EHLO client.example.test")
        assert ehlo.startswith(b"250")
        assert b"STARTTLS" in ehlo
        assert b"AUTH" not in ehlo
        credentials = base64.b64encode(f"\0{member.address}\0{member.password}".encode())
        assert smtp_exchange(sock, b"AUTH PLAIN " + credentials)[:1] == b"5"
        assert smtp_exchange(sock, f"MAIL FROM:<{member.address}>".encode()).startswith(b"530")
        assert smtp_exchange(sock, f"RCPT TO:<{recipient}>".encode())[:1] == b"5"
        assert smtp_exchange(sock, b"DATA")[:1] == b"5"
    run = swaks(
        Endpoint(host, port, "none"),
        mail_from=member.address,
        recipients=[recipient],
        message=tricky_message(member.address, recipient, token()),
        account=member,
    )
    assert not run.ok, run.transcript
    assert_only_canary_arrives(shared_gateway, postfix, tls_material, member, recipient)


def test_envelope_sender_must_be_the_members_own_address(
    shared_gateway: GatewayProcess,
    postfix: PostfixInstance,
    tls_material: TlsMaterial,
    member: Account,
    recipient: str,
) -> None:
    other = "alex.outsider@example.test"
    run = swaks(
        shared_gateway.endpoint("submission"),
        mail_from=other,
        recipients=[recipient],
        message=tricky_message(other, recipient, token()),
        account=member,
        ca_file=tls_material.ca_file,
    )
    assert not run.ok
    assert first_refusal(run).startswith(("553 5.7.1", "553-5.7.1")), run.transcript
    assert_only_canary_arrives(shared_gateway, postfix, tls_material, member, recipient)


def test_header_from_must_be_the_members_own_address(
    shared_gateway: GatewayProcess,
    postfix: PostfixInstance,
    tls_material: TlsMaterial,
    member: Account,
    recipient: str,
) -> None:
    run = swaks(
        shared_gateway.endpoint("submissions"),
        mail_from=member.address,
        recipients=[recipient],
        message=tricky_message("alex.outsider@example.test", recipient, token()),
        account=member,
        ca_file=tls_material.ca_file,
    )
    assert not run.ok
    # Refused at the end of DATA, where RFC 5321 allows 550 (553 belongs to MAIL/RCPT); 5.7.1 either way.
    assert first_refusal(run)[:9] in ("550 5.7.1", "553 5.7.1", "550-5.7.1", "553-5.7.1"), run.transcript
    assert_only_canary_arrives(shared_gateway, postfix, tls_material, member, recipient)


def test_wrong_passwords_are_refused_then_throttled(
    gateway_factory: GatewayFactory,
    postfix: PostfixInstance,
    tls_material: TlsMaterial,
    member: Account,
    recipient: str,
) -> None:
    # Its own gateway: throttling is per client address, and every test client is 127.0.0.1.
    gateway = gateway_factory({"auth": {"max_failures": 2, "failure_window": "10m"}})
    wrong = Account(member.address, member.password + "-wrong")
    for _ in range(2):
        run = swaks(
            gateway.endpoint("submissions"),
            mail_from=member.address,
            recipients=[recipient],
            message=tricky_message(member.address, recipient, token()),
            account=wrong,
            ca_file=tls_material.ca_file,
        )
        assert not run.ok
        assert first_refusal(run).startswith("535 5.7.8"), run.transcript
    # Over the limit, even the right password is turned away for now.
    run = swaks(
        gateway.endpoint("submissions"),
        mail_from=member.address,
        recipients=[recipient],
        message=tricky_message(member.address, recipient, token()),
        account=member,
        ca_file=tls_material.ca_file,
    )
    assert not run.ok, run.transcript
    assert first_refusal(run)[:1] in ("4", "5"), run.transcript
    assert postfix.messages_to(recipient) == []
