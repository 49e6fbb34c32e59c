"""The journal intake fed by a real Postfix: inbound mail to the committee is copied to the gateway with
``recipient_bcc_maps`` (as the admins' guide says), the gateway learns the reporter's
words from the copy, and a member's later message quoting them to an outsider is refused.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.clients import Account, Endpoint, swaks
from tests.e2e.gateway_process import GatewayProcess, deep_merge, gateway_settings
from tests.e2e.messages import token
from tests.e2e.postfix import PostfixInstance
from tests.e2e.test_policy_e2e import PolicyGateway, assert_quoting_refused
from tests.e2e.tls import TlsMaterial

pytestmark = pytest.mark.e2e

POLICY = Path(__file__).resolve().parent / "policy-e2e-audiences.yaml"
REPORTER = "ines.valtonen@reporter.test"  # a reporter of case "amber tide" in that policy
CONDUCT = "conduct@example.org"
JOURNAL_ADDRESS = "journal@journal.test"
REPORT_WORDS = (
    "At the sprint dinner the maintainer of the packaging team mocked my accent in front of everyone "
    "and later sent me private messages telling me to stop asking questions in the public channel"
)


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory,
    tls_material: TlsMaterial,
    postfix: PostfixInstance,
    member: Account,
) -> Iterator[PolicyGateway]:
    settings = deep_merge(
        gateway_settings(tls_material, postfix, POLICY), {"journal": {"enabled": True, "port": 0}}
    )
    process = GatewayProcess(tmp_path_factory.mktemp("journal"), settings)
    process.add_user(member.address, member.password)
    process.start()
    yield PolicyGateway(process, tls_material, member)
    process.close()


@pytest.fixture(scope="module")
def inbound_server(gateway: PolicyGateway) -> Iterator[PostfixInstance]:
    """The organisation's own mail server: delivers to its mailboxes, copies committee mail to the gateway."""
    journal_host, journal_port = gateway.process.addresses["journal"]
    instance = PostfixInstance(
        extra_main_cf={
            "recipient_bcc_maps": f"inline:{{ {CONDUCT}={JOURNAL_ADDRESS} }}",
            "transport_maps": f"inline:{{ journal.test=smtp:[{journal_host}]:{journal_port} }}",
        }
    )
    try:
        instance.start()
        yield instance
    finally:
        instance.close()


def wait_for_log(process: GatewayProcess, text: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while text not in process.current_log():
        if time.monotonic() > deadline:
            raise AssertionError(f"{text!r} not in the gateway's log:\n{process.current_log()[-3000:]}")
        time.sleep(0.1)


def test_a_report_copied_by_the_mail_server_protects_the_reporters_words(
    gateway: PolicyGateway, inbound_server: PostfixInstance, postfix: PostfixInstance
) -> None:
    report = (
        f"From: Ines Valtonen <{REPORTER}>\r\nTo: {CONDUCT}\r\nSubject: what happened at the sprint\r\n"
        f"Message-ID: <journal-report-{token()}@reporter.test>\r\n\r\n{REPORT_WORDS}.\r\n"
    ).encode()
    sent = swaks(
        Endpoint(inbound_server.host, inbound_server.port, "none"),
        mail_from=REPORTER,
        recipients=[CONDUCT],
        message=report,
    )
    assert sent.ok, sent.transcript
    # Postfix delivers the report to the committee's mailbox and its copy to the journal listener.
    wait_for_log(gateway.process, 'event=journal-copy learnt=1 cases="amber tide"')

    assert_quoting_refused(gateway, postfix, REPORT_WORDS, telltale="accent", label="journal")
