"""Real clients (swaks, msmtp) submit through the real gateway to a real Postfix, over both listeners."""

from __future__ import annotations

import pytest

from tests.e2e.clients import Account, ClientRun, msmtp, swaks
from tests.e2e.gateway_process import GatewayProcess
from tests.e2e.messages import assert_arrived_unchanged, token, tricky_message
from tests.e2e.postfix import PostfixInstance
from tests.e2e.tls import TlsMaterial

pytestmark = pytest.mark.e2e

LISTENERS = {"starttls": "submission", "tls": "submissions"}


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
@pytest.mark.parametrize("security", ["starttls", "tls"])
@pytest.mark.parametrize("client", ["swaks", "msmtp"])
def test_client_submits_with_auth_and_postfix_receives_the_exact_bytes(
    shared_gateway: GatewayProcess,
    postfix: PostfixInstance,
    tls_material: TlsMaterial,
    member: Account,
    recipient: str,
    client: str,
    security: str,
    mechanism: str,
) -> None:
    marker = token()
    subject_marker = token()
    sent = tricky_message(member.address, recipient, marker, subject=f"subject {subject_marker}")
    endpoint = shared_gateway.endpoint(LISTENERS[security])
    submit = swaks if client == "swaks" else msmtp
    run: ClientRun = submit(
        endpoint,
        mail_from=member.address,
        recipients=[recipient],
        message=sent,
        account=member,
        mechanism=mechanism,  # type: ignore[arg-type]
        ca_file=tls_material.ca_file,
    )
    assert run.ok, run.transcript

    [delivered] = postfix.wait_for_recipient(recipient)
    assert_arrived_unchanged(delivered, sent)
    # Postfix's own Received header: the gateway relayed over STARTTLS, verifying Postfix's certificate.
    assert "with ESMTPS" in delivered.header_values("Received")[0]
    assert delivered.message["Return-Path"] == f"<{member.address}>"
    # Logs carry ids and counts, never what the message says.
    log = shared_gateway.log_text()
    assert marker not in log
    assert subject_marker not in log


def test_one_submission_to_several_recipients_reaches_each_once(
    shared_gateway: GatewayProcess, postfix: PostfixInstance, tls_material: TlsMaterial, member: Account
) -> None:
    marker = token()
    recipients = [f"{name}-{marker}@example.test" for name in ("alex", "jin", "sam")]
    sent = tricky_message(member.address, recipients[0], marker)
    run = swaks(
        shared_gateway.endpoint("submission"),
        mail_from=member.address,
        recipients=recipients,
        message=sent,
        account=member,
        ca_file=tls_material.ca_file,
    )
    assert run.ok, run.transcript
    for address in recipients:
        [delivered] = postfix.wait_for_recipient(address)
        assert_arrived_unchanged(delivered, sent)
