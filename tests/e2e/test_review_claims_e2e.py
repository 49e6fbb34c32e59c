"""Reviewers working together end to end, through a real gateway process and Postfix as upstream.

A reviewer claims a held message by reply: the other reviewer is told; the reminder reaches both
reviewers (never the sender) before the hold expires; the other reviewer approves with a comment,
which reaches the sender with the claim, and the message reaches the recipient.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.gateway_process import GatewayFactory
from tests.e2e.members import notices, reply_address, send
from tests.e2e.postfix import PostfixInstance
from tests.e2e.test_review_e2e import Committee, start_gateway
from tests.e2e.tls import TlsMaterial

pytestmark = pytest.mark.e2e

COMMENT = "Fine to send; leave the dates out next time"


def test_claim_reminder_and_comment_reach_the_right_people(
    gateway_factory: GatewayFactory,
    tmp_path: Path,
    tls_material: TlsMaterial,
    running_postfix: PostfixInstance,
) -> None:
    committee = Committee()
    review = {"expiry": "40s", "reminder_before": "34s", "check_interval": "0.5s"}
    gateway = start_gateway(gateway_factory, tmp_path, committee, review)
    held = send(gateway, tls_material, committee.ada, committee.outsider, "Hello,\r\n\r\nJin Park told us.")
    assert held.ok, held.transcript
    [ben_request] = notices(running_postfix, committee.ben.address, "review-request")
    [cleo_request] = notices(running_postfix, committee.cleo.address, "review-request")

    claimed = send(gateway, tls_material, committee.ben, reply_address(ben_request), "Claim.\r\n\r\n> quoted")
    assert claimed.ok and "Claimed:" in claimed.stdout, claimed.transcript
    [told] = notices(running_postfix, committee.cleo.address, "claimed")
    assert "Ben Ink" in told.header_values("Subject")[0]
    listed = gateway.cli("review", "list")
    assert listed.returncode == 0 and committee.ben.address in listed.stdout

    # The reminder comes 34 s before the 40 s expiry, to both reviewers, and the hold is still open.
    notices(running_postfix, committee.ben.address, "review-reminder")
    [reminder] = notices(running_postfix, committee.cleo.address, "review-reminder")
    assert b"Ben Ink claimed it." in b" ".join(reminder.body.split())

    approved = send(gateway, tls_material, committee.cleo, reply_address(cleo_request), f"approve {COMMENT}")
    assert approved.ok and "Approved: message" in approved.stdout, approved.transcript
    running_postfix.wait_for_recipient(committee.outsider)
    [letter] = notices(running_postfix, committee.ada.address, "approved")
    text = b" ".join(letter.body.split()).decode()
    assert f"Cleo Nib's comment: {COMMENT}" in text and "(Ben Ink had claimed it for review.)" in text
    mine = [m for m in running_postfix.messages() if m.delivered_to == committee.ada.address.lower()]
    kinds = {value for m in mine for value in m.header_values("X-Conduct-Gateway-Notice")}
    assert kinds == {"held", "approved"}  # never a claim or reminder to the sender
