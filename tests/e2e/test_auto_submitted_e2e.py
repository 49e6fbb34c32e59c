"""RFC 3834 end to end: a real gateway process, swaks as the members, the real Postfix upstream.

The gateway never answers an automatic message (``Auto-Submitted`` other than ``no``) or the null
sender with a notice, and an automatic reply to a review address never decides a hold.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.e2e.gateway_process import GatewayFactory
from tests.e2e.members import notices, reply_address, send
from tests.e2e.postfix import DeliveredMessage, PostfixInstance
from tests.e2e.test_workflow_net_e2e import (
    ALIAS,
    CONDUCT,
    NAME,
    Committee,
    open_thread,
    start,
)
from tests.e2e.tls import TlsMaterial

pytestmark = pytest.mark.e2e

SETTLE = 1.5  # seconds the gateway gets to send a notice it should not send, after one it should


def notices_to(postfix: PostfixInstance, recipient: str) -> list[DeliveredMessage]:
    return [m for m in postfix.messages_to(recipient) if m.header_values("X-Conduct-Gateway-Notice")]


@pytest.mark.parametrize(
    ("automatic", "mail_from"),
    [
        pytest.param(("Auto-Submitted: auto-generated",), None, id="auto-generated"),
        pytest.param(("Auto-Submitted: auto-replied",), None, id="auto-replied"),
        pytest.param((), "<>", id="null-sender"),
    ],
)
def test_a_refused_automatic_message_gets_no_notice_mail(
    gateway_factory: GatewayFactory,
    tmp_path: Path,
    tls_material: TlsMaterial,
    running_postfix: PostfixInstance,
    automatic: tuple[str, ...],
    mail_from: str | None,
) -> None:
    committee = Committee()
    gateway = start(gateway_factory, tmp_path, committee)
    gateway.start()
    refused = send(
        gateway,
        tls_material,
        committee.ada,
        to=[committee.outsider],
        cc=[CONDUCT],
        body=f"{ALIAS} asked us to write to {committee.address}.",
        extra_headers=automatic,
        mail_from=mail_from,
    )
    # Refused for what it says (550), or, from the null sender, already at MAIL FROM (553).
    assert not refused.ok and " 5.7.1 " in refused.stdout, refused.transcript
    # The same mistake sent by a person is answered: once that notice is in, the first would be too.
    control = send(
        gateway,
        tls_material,
        committee.ada,
        to=[committee.outsider],
        cc=[CONDUCT],
        body=f"{NAME} wrote to us.",
    )
    assert not control.ok and "550 5.7.1" in control.stdout
    notices(running_postfix, committee.ada.address, "refused")
    time.sleep(SETTLE)
    assert len(notices_to(running_postfix, committee.ada.address)) == 1
    assert not running_postfix.messages_to(committee.outsider)


def test_a_held_automatic_message_tells_its_sender_nothing_and_an_automatic_reply_decides_nothing(
    gateway_factory: GatewayFactory,
    tmp_path: Path,
    tls_material: TlsMaterial,
    running_postfix: PostfixInstance,
) -> None:
    committee = Committee()
    committee.list = f"devs-{committee.tag}@example.org"  # a domain the upstream Postfix delivers for
    gateway = start(gateway_factory, tmp_path, committee)
    gateway.start()
    parent = open_thread(gateway, tls_material, committee, running_postfix)

    # An automatic reply-all (an out-of-office answering the thread) to the list: held.
    held = send(
        gateway,
        tls_material,
        committee.ada,
        to=[committee.list],
        body="I am away until Monday.",
        subject="Re: Next steps",
        in_reply_to=parent,
        extra_headers=("Auto-Submitted: auto-replied",),
    )
    assert held.ok and "Held for review" in held.stdout, held.transcript
    [request] = notices(running_postfix, committee.ben.address, "review-request")

    # Ben's own out-of-office answering the review request decides nothing.
    automatic = send(
        gateway,
        tls_material,
        committee.ben,
        to=[reply_address(request)],
        body="approve\r\n\r\nI am away until Monday.",
        subject="Re: review request",
        extra_headers=("Auto-Submitted: auto-replied",),
    )
    assert not automatic.ok and "550 5.7.1" in automatic.stdout, automatic.transcript
    time.sleep(SETTLE)
    assert not running_postfix.messages_to(committee.list)  # still held

    approved = send(gateway, tls_material, committee.ben, to=[reply_address(request)], body="approve")
    assert approved.ok and "Approved" in approved.stdout, approved.transcript
    [delivered] = running_postfix.wait_for_recipient(committee.list)
    assert b"I am away until Monday." in delivered.body
    time.sleep(SETTLE)
    # Neither the "held" nor the "approved" notice went to the automatic message's sender.
    assert notices_to(running_postfix, committee.ada.address) == []
    assert len(running_postfix.messages_to(committee.list)) == 1
