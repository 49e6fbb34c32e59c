"""Milter mode end to end: a private Postfix whose smtpd passes every message to `conduct-gateway milter`.

swaks submits through Postfix. Postfix's master.cf has three smtpd listeners: one screened by the
milter with the e2e policy (rewrite, banner, reject), one screened by a second milter whose policy
holds (the hold queue and review), and one without milters where the gateways deliver their own
messages (review requests, notices). The member is Maya Member's committee address: unauthenticated
mail from a committee address is judged as that member's (``milter.unauthenticated: pass``).
"""

from __future__ import annotations

import secrets
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.clients import Account, ClientRun, Endpoint, msmtp, new_password, swaks
from tests.e2e.gateway_process import GatewayProcess, conduct_gateway_command
from tests.e2e.messages import token, unique_address
from tests.e2e.postfix import POSTFIX, DeliveredMessage, PostfixInstance, free_port
from tests.e2e.sasl import DovecotAuth
from tests.e2e.test_policy_e2e import CONDUCT, CONDUCT_CC, MAIN_POLICY, RELAY_HEADER, compose
from tests.e2e.tls import TlsMaterial

pytestmark = pytest.mark.e2e

MAYA = "maya.member@example.org"


class MilterPostfix(PostfixInstance):
    """Postfix with a screened port (milter A), a holding port (milter B) and a clean port; members
    log in with SASL (a Dovecot-protocol server here), and local ``sendmail`` is screened too."""

    def __init__(self, tls: TlsMaterial, sasl: DovecotAuth) -> None:
        self.milter_port = free_port()
        self.hold_milter_port = free_port()
        self.hold_port = free_port()
        self.clean_port = free_port()
        super().__init__(
            tls_cert_file=tls.cert_file,
            tls_key_file=tls.key_file,
            extra_main_cf={
                # What the README tells admins to add to main.cf.
                "smtpd_milters": f"inet:127.0.0.1:{self.milter_port}",
                "non_smtpd_milters": f"inet:127.0.0.1:{self.milter_port}",
                "milter_default_action": "tempfail",
                "milter_protocol": "6",
                "smtpd_sasl_auth_enable": "yes",
                "smtpd_sasl_type": "dovecot",
                "smtpd_sasl_path": sasl.path,
            },
        )

    def _master_cf(self) -> str:
        return super()._master_cf() + (
            f"{self.host}:{self.hold_port} inet n - n - - smtpd\n"
            f"  -o smtpd_milters=inet:127.0.0.1:{self.hold_milter_port}\n"
            f"{self.host}:{self.clean_port} inet n - n - - smtpd\n  -o smtpd_milters=\n"
        )

    def postsuper_command(self) -> list[str]:
        return ["postsuper"]

    def held_ids(self) -> list[str]:
        hold = self.queue_directory / "hold"
        return sorted(path.name for path in hold.rglob("*") if path.is_file()) if hold.is_dir() else []


MAYA_PASSWORD = new_password()
BEN = "ben.ink@example.org"
BEN_PASSWORD = new_password()


@pytest.fixture(scope="module")
def milter_postfix(tls_material: TlsMaterial) -> Iterator[MilterPostfix]:
    sasl = DovecotAuth({MAYA: MAYA_PASSWORD, BEN: BEN_PASSWORD})
    sasl.start()
    instance = MilterPostfix(tls_material, sasl)
    try:
        instance.start()
        yield instance
    finally:
        instance.close()
        sasl.close()


def milter_process(root: Path, postfix: MilterPostfix, policy: Path, port: int) -> GatewayProcess:
    settings = {
        "policy": {"path": str(policy), "workers": 0},
        "milter": {
            "listen": f"inet:{port}@127.0.0.1",
            "postsuper": ["postsuper"],
            "postfix_config_directory": str(postfix.config_directory),
        },
        "review": {"check_interval": "1s"},
        "delivery": {
            "upstream": {"host": "127.0.0.1", "port": postfix.clean_port, "security": "none"},
            "initial_backoff": "0.5s",
            "max_backoff": "1s",
            "poll_interval": "0.2s",
        },
    }
    return GatewayProcess(root, settings, serve_command=[*conduct_gateway_command(), "milter"])


@pytest.fixture(scope="module")
def screening_milter(
    milter_postfix: MilterPostfix, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    process = milter_process(
        tmp_path_factory.mktemp("milter"), milter_postfix, MAIN_POLICY, milter_postfix.milter_port
    )
    process.start()
    yield process
    process.close()


HOLD_POLICY = f"""\
organisation:
  conduct_address: {CONDUCT}
  members:
    - name: Maya Member
      addresses: [{MAYA}]
    - name: Ben Ink
      addresses: [{BEN}]
rules:
  - rule: reporter-protection
    action: hold
cases:
  - code: home shelf
    reporters:
      - id: quiet heron
        names: [Jin Park]
    reported:
      - id: brass-gull
        names: [Tomas Rindell]
        addresses: [tomas.rindell@example.com]
"""


@pytest.fixture(scope="module")
def holding_milter(
    milter_postfix: MilterPostfix, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    root = tmp_path_factory.mktemp("hold-milter")
    policy = root / "hold-policy.yaml"
    policy.write_text(HOLD_POLICY, encoding="utf-8")
    process = milter_process(root, milter_postfix, policy, milter_postfix.hold_milter_port)
    process.start()
    yield process
    process.close()


def submit(
    postfix: MilterPostfix, message: bytes, recipients: list[str], port: int | None = None
) -> ClientRun:
    endpoint = Endpoint("127.0.0.1", port or postfix.port, "none")
    return swaks(endpoint, mail_from=MAYA, recipients=recipients, message=message)


def delivered(
    postfix: PostfixInstance, recipient: str, marker: str, count: int = 1
) -> list[DeliveredMessage]:
    wanted = recipient.lower()

    def matching(messages: list[DeliveredMessage]) -> list[DeliveredMessage]:
        return [m for m in messages if m.delivered_to == wanted and marker in m.raw.decode(errors="replace")]

    postfix.wait_for(lambda ms: len(matching(ms)) >= count, what=f"{marker} to {recipient}")
    return matching(postfix.messages())


def test_conduct_address_missing_is_added_to_cc_and_envelope(
    milter_postfix: MilterPostfix, screening_milter: GatewayProcess
) -> None:
    marker, outsider = token(), unique_address("milter-cc")
    result = submit(milter_postfix, compose(marker, to=f"Bo Brandt <{outsider}>", cc=None), [outsider])
    assert result.ok, result.transcript
    for recipient in (outsider, CONDUCT):
        [message] = delivered(milter_postfix, recipient, marker)
        assert message.header_values("Cc") == [CONDUCT_CC], message.raw.decode()
        [relay] = message.header_values(RELAY_HEADER)
        assert relay.endswith("changed=cc-added"), relay
        # Where gateway mode puts them: its header under Postfix's Received field, the Cc after To.
        names = [
            name for name in message.message if name not in ("Return-Path", "X-Original-To", "Delivered-To")
        ]
        assert names[:5] == ["Received", RELAY_HEADER, "From", "To", "Cc"], message.raw.decode()


def test_an_authenticated_members_mail_is_judged_as_theirs_whatever_the_envelope_sender(
    milter_postfix: MilterPostfix, screening_milter: GatewayProcess, tls_material: TlsMaterial
) -> None:
    # msmtp logs in with SASL over STARTTLS; Postfix passes the login to the milter as {auth_authen}.
    marker, outsider = token(), unique_address("milter-auth")
    sender = "maya.at.home@example.net"  # not a committee address: only the login says who it is
    message = compose(marker, to=f"<{outsider}>", cc=None).replace(
        b"maya.member@example.org", sender.encode()
    )
    run = msmtp(
        Endpoint("127.0.0.1", milter_postfix.port, "starttls"),
        mail_from=sender,
        recipients=[outsider],
        message=message,
        account=Account(MAYA, MAYA_PASSWORD),
        ca_file=tls_material.ca_file,
    )
    assert run.ok, run.transcript
    [delivered_copy] = delivered(milter_postfix, outsider, marker)
    assert delivered_copy.header_values("Cc") == [CONDUCT_CC]
    delivered(milter_postfix, CONDUCT, marker)
    assert "authenticated=True" in screening_milter.log_text()


def test_unauthenticated_mail_from_outside_the_committee_passes_untouched(
    milter_postfix: MilterPostfix, screening_milter: GatewayProcess
) -> None:
    marker, outsider = token(), unique_address("milter-visitor")
    visitor = "visitor@example.net"
    message = compose(marker, to=f"<{outsider}>", cc=None).replace(
        b"maya.member@example.org", visitor.encode()
    )
    run = swaks(
        Endpoint("127.0.0.1", milter_postfix.port, "none"),
        mail_from=visitor,
        recipients=[outsider],
        message=message,
    )
    assert run.ok, run.transcript
    [copy] = delivered(milter_postfix, outsider, marker)
    assert copy.header_values(RELAY_HEADER) == [] and copy.header_values("Cc") == []
    assert copy.body.replace(b"\n", b"\r\n") == f"Hello, this is {marker}.\r\n".encode()


def test_local_sendmail_is_screened_through_pickup_and_non_smtpd_milters(
    milter_postfix: MilterPostfix, screening_milter: GatewayProcess
) -> None:
    marker, outsider = token(), unique_address("milter-sendmail")
    sendmail = str(Path(POSTFIX).with_name("sendmail"))
    run = subprocess.run(
        [sendmail, "-C", str(milter_postfix.config_directory), "-f", MAYA, "--", outsider],
        input=compose(marker, to=f"<{outsider}>", cc=None).replace(b"\r\n", b"\n"),
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    [copy] = delivered(milter_postfix, outsider, marker)
    assert copy.header_values("Cc") == [CONDUCT_CC], copy.raw.decode()
    [relay] = copy.header_values(RELAY_HEADER)
    assert relay.endswith("changed=cc-added")
    delivered(milter_postfix, CONDUCT, marker)


def test_a_reply_adding_a_person_gets_the_banner_in_text_and_html(
    milter_postfix: MilterPostfix, screening_milter: GatewayProcess
) -> None:
    first, reply = token(), token()
    bo, cleo = unique_address("milter-bo"), unique_address("milter-cleo")
    assert submit(milter_postfix, compose(first, to=f"Bo Brandt <{bo}>"), [bo, CONDUCT]).ok
    delivered(milter_postfix, bo, first)
    boundary = f"alt-{reply}"
    body = "\r\n".join(
        [
            f"--{boundary}",
            "Content-Type: text/plain; charset=utf-8",
            "",
            "Looping in Cleo, who runs the venue.",
            f"--{boundary}",
            "Content-Type: text/html; charset=utf-8",
            "",
            "<html><body><p>Looping in Cleo, who runs the venue.</p></body></html>",
            f"--{boundary}--",
            "",
        ]
    )
    answer = compose(
        reply,
        to=f"Bo Brandt <{bo}>, Cleo Rivers <{cleo}>",
        subject=f"Re: policy e2e {first}",
        headers=(f"In-Reply-To: <{first}@example.org>", f"References: <{first}@example.org>"),
        mime=(f'Content-Type: multipart/alternative; boundary="{boundary}"',),
        body=body,
    )
    result = submit(milter_postfix, answer, [bo, cleo, CONDUCT])
    assert result.ok, result.transcript
    [message] = delivered(milter_postfix, cleo, reply)
    plain, html = [
        part.get_content() for part in message.message.walk() if part.get_content_maintype() == "text"
    ]
    assert plain.startswith("[+ Cleo Rivers]\n"), plain
    assert html.count("[+ Cleo Rivers]") == 1, html
    assert html.index("<body>") < html.index("[+ Cleo Rivers]") < html.index("<p>Looping"), html


def test_a_protected_identity_to_an_outsider_is_refused_with_the_gateways_text(
    milter_postfix: MilterPostfix, screening_milter: GatewayProcess
) -> None:
    marker, outsider = token(), unique_address("milter-refused")
    message = compose(marker, to=f"<{outsider}>", body="Elif Marchetti reported this.\r\n")
    result = submit(milter_postfix, message, [outsider, CONDUCT])
    assert not result.ok
    replies = [line for line in result.server_replies() if line.startswith("550")]
    assert replies, result.transcript
    assert replies[0].startswith(
        "550-5.7.1 Message not sent: Remove the name of a person protected in case blue lantern"
    ), result.transcript
    assert replies[-1].startswith("550 5.7.1 Reference: "), result.transcript
    time.sleep(1)
    assert not [m for m in milter_postfix.messages() if marker in m.raw.decode(errors="replace")]


def hold_one(postfix: MilterPostfix, milter: GatewayProcess, marker: str, outsider: str) -> str:
    """Send a message the holding milter holds; return the reply address of Ben's review request."""
    message = compose(marker, to=f"<{outsider}>", body="Jin Park told us what happened.\r\n")
    before = set(postfix.held_ids())
    result = submit(postfix, message, [outsider, CONDUCT], port=postfix.hold_port)
    assert result.ok, result.transcript
    assert len(set(postfix.held_ids()) - before) == 1, (postfix.held_ids(), milter.log_text()[-3000:])
    # The review request goes to Ben, delivered by the gateway through the clean port.
    [request] = delivered(postfix, BEN, marker)
    [reply_to] = request.header_values("Reply-To")
    return reply_to.strip("<> ")


def review_reply(postfix: MilterPostfix, address: str, word: str, *, logged_in: bool = True) -> ClientRun:
    message = (
        f"From: Ben Ink <{BEN}>\r\nTo: <{address}>\r\nSubject: Re: review\r\n"
        f"Message-ID: <{secrets.token_hex(6)}@example.org>\r\n\r\n{word}\r\n"
    ).encode()
    return swaks(
        Endpoint("127.0.0.1", postfix.hold_port, "none"),
        mail_from=BEN,
        recipients=[address],
        message=message,
        account=Account(BEN, BEN_PASSWORD) if logged_in else None,
    )


def test_a_held_message_waits_in_postfixs_hold_queue_and_an_approval_delivers_it_once(
    milter_postfix: MilterPostfix, holding_milter: GatewayProcess
) -> None:
    marker, outsider = token(), unique_address("milter-held")
    before = milter_postfix.held_ids()
    address = hold_one(milter_postfix, holding_milter, marker, outsider)
    assert not [
        m for m in milter_postfix.messages() if m.delivered_to == outsider and marker in m.raw.decode()
    ]
    # A decision without a login is refused: the token alone does not prove who decided.
    forged = review_reply(milter_postfix, address, "approve", logged_in=False)
    assert not forged.ok
    assert any(
        line.startswith("550 5.7.1 Review decisions are accepted only") for line in forged.server_replies()
    )
    assert len(milter_postfix.held_ids()) == len(before) + 1
    run = review_reply(milter_postfix, address, "approve")
    assert run.ok, run.transcript
    [released] = delivered(milter_postfix, outsider, marker)
    [relay] = released.header_values(RELAY_HEADER)
    assert relay.startswith("ref="), released.raw.decode()
    assert milter_postfix.held_ids() == before
    time.sleep(3)  # later review rounds (every second here) must not deliver it again
    assert len(delivered(milter_postfix, outsider, marker)) == 1
    assert holding_milter.log_text().count("event=milter.released") == 1


def test_a_rejected_hold_is_deleted_from_the_hold_queue_and_never_delivered(
    milter_postfix: MilterPostfix, holding_milter: GatewayProcess
) -> None:
    marker, outsider = token(), unique_address("milter-rejected")
    before = milter_postfix.held_ids()
    address = hold_one(milter_postfix, holding_milter, marker, outsider)
    run = review_reply(milter_postfix, address, "reject\r\n\r\nPlease leave the name out.")
    assert run.ok, run.transcript
    deadline = time.monotonic() + 20
    while milter_postfix.held_ids() != before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert milter_postfix.held_ids() == before, holding_milter.log_text()[-2000:]
    time.sleep(2)
    assert not [
        m for m in milter_postfix.messages() if m.delivered_to == outsider and marker in m.raw.decode()
    ]


def test_with_the_milter_stopped_postfix_tempfails_and_delivers_nothing(
    milter_postfix: MilterPostfix, screening_milter: GatewayProcess
) -> None:
    marker, outsider = token(), unique_address("milter-down")
    screening_milter.terminate()
    try:
        # Nothing listens on the milter's port: Postfix's milter_default_action = tempfail applies.
        result = submit(milter_postfix, compose(marker, to=f"<{outsider}>"), [outsider, CONDUCT])
    finally:
        screening_milter.start()
    assert not result.ok
    assert any(line.startswith("451 4.7.1") for line in result.server_replies()), result.transcript
    time.sleep(1)
    assert not [m for m in milter_postfix.messages() if marker in m.raw.decode(errors="replace")]


def test_metrics_and_health_are_served_in_milter_mode_without_addresses(
    milter_postfix: MilterPostfix, screening_milter: GatewayProcess
) -> None:
    marker, outsider = token(), unique_address("milter-metrics")
    result = submit(milter_postfix, compose(marker, to=f"Bo Brandt <{outsider}>", cc=None), [outsider])
    assert result.ok, result.transcript
    delivered(milter_postfix, outsider, marker)
    status, health = screening_milter.scrape("/healthz")
    assert status == 200 and "milter: up" in health and "delivery: up" in health, health
    status, text = screening_milter.scrape()
    assert status == 200
    accepted = [
        line
        for line in text.splitlines()
        if line.startswith('conduct_gateway_milter_messages_total{outcome="accepted"}')
    ]
    assert accepted and float(accepted[0].split()[-1]) >= 1, text
    assert "conduct_gateway_milter_connections_total" in text
    assert "conduct_gateway_delivery_" in text and "conduct_gateway_spool_messages" in text
    assert "@" not in "".join(line for line in text.splitlines() if not line.startswith("#"))
