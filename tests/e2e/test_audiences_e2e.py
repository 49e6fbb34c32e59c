"""Issue 4's rules end to end: a real client, a real gateway, the real Postfix upstream.

Mail to a moderator is held for a second member (who gets the review request); a reporter's own words,
learnt with `case add-report` while the gateway runs, are refused on their way to an outsider; a
`warn` finding delivers the message and tells the sender in a notice.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.clients import Account, new_password
from tests.e2e.messages import token, unique_address
from tests.e2e.postfix import DeliveredMessage, PostfixInstance
from tests.e2e.test_policy_e2e import (
    PolicyGateway,
    arrived,
    assert_quoting_refused,
    compose,
    never_relayed,
    start_gateway,
)
from tests.e2e.tls import TlsMaterial

pytestmark = pytest.mark.e2e

POLICY = Path(__file__).resolve().parent / "policy-e2e-audiences.yaml"
SENDER = "maya.member@example.org"
REVIEWER = "noor.haddad@example.org"
NOTICE = "X-Conduct-Gateway-Notice"
REPORT_WORDS = (
    "During the evening social the organiser of the workshop kept interrupting me whenever I tried to "
    "describe the accessibility problems with the venue and then followed me to the cloakroom"
)


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory,
    tls_material: TlsMaterial,
    postfix: PostfixInstance,
    member: Account,
) -> Iterator[PolicyGateway]:
    process = start_gateway(tmp_path_factory.mktemp("audiences"), POLICY, tls_material, postfix, member)
    # Review rights need an account: the second member gets one, picked up at once on SIGHUP.
    process.add_user(REVIEWER, new_password())
    os.kill(process.pid, signal.SIGHUP)
    deadline = time.monotonic() + 10
    while "event=reloaded" not in process.current_log() and time.monotonic() < deadline:
        time.sleep(0.05)
    yield PolicyGateway(process, tls_material, member)
    process.close()


def notices_to_sender(postfix: PostfixInstance, kind: str, marker: str) -> list[DeliveredMessage]:
    return [
        m
        for m in postfix.messages()
        if m.delivered_to == SENDER
        and m.header_values(NOTICE) == [kind]
        and f"<{marker}@example.org>" in " ".join(m.header_values("In-Reply-To"))
    ]


def test_mail_to_a_moderator_is_held_and_the_other_member_is_asked_to_review(
    gateway: PolicyGateway, postfix: PostfixInstance
) -> None:
    marker, moderator = token(), f"mods-{token()}@forum.example.net"
    result = gateway.send(compose(marker, to=f"Forum Mods <{moderator}>"), [moderator])

    assert result.final.startswith("250"), result.run.transcript
    assert "Held for review" in result.reply_text, result.run.transcript
    requests = postfix.wait_for(
        lambda ms: any(
            m.delivered_to == REVIEWER and m.header_values(NOTICE) == ["review-request"] for m in ms
        ),
        what="a review request to the other member",
    )
    assert requests
    held = postfix.wait_for(lambda ms: bool(notices_to_sender(postfix, "held", marker)), what="held notice")
    assert held
    never_relayed(postfix, f"mods-{marker}")  # nothing reached the moderator
    assert not [m for m in postfix.messages() if m.delivered_to == moderator]


def test_a_reporters_words_learnt_while_running_are_refused_to_an_outsider(
    gateway: PolicyGateway, postfix: PostfixInstance, tmp_path: Path
) -> None:
    report = tmp_path / "report.eml"
    report.write_bytes(
        (
            "From: Ines Valtonen <ines.valtonen@reporter.test>\r\nTo: conduct@example.org\r\n"
            "Subject: what happened\r\nMessage-ID: <report-1@reporter.test>\r\n\r\n"
            f"{REPORT_WORDS}.\r\n"
        ).encode()
    )
    learnt = gateway.process.cli("case", "add-report", "amber tide", str(report))
    assert learnt.returncode == 0, learnt.stderr

    assert_quoting_refused(gateway, postfix, REPORT_WORDS, telltale="cloakroom", label="words")


def test_a_warning_delivers_the_message_and_tells_the_sender(
    gateway: PolicyGateway, postfix: PostfixInstance
) -> None:
    marker, outsider = token(), unique_address("warn")
    body = "Hello,\r\n\r\nWe think it was just a misunderstanding on both sides.\r\n"
    result = gateway.send(compose(marker, to=f"<{outsider}>", body=body), [outsider])

    assert result.final.startswith("250"), result.run.transcript
    arrived(postfix, outsider, marker)
    notices = postfix.wait_for(
        lambda ms: bool(notices_to_sender(postfix, "warnings", marker)), what="a warnings notice"
    )
    assert notices
    [notice] = notices_to_sender(postfix, "warnings", marker)
    assert notice.header_values("Auto-Submitted") == ["auto-replied"]
    assert b"MINIMISING_LANGUAGE" in notice.raw or b"minimis" in notice.raw.lower()
