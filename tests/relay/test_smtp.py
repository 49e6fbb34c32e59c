"""SMTP submission intake: TLS, AUTH, envelope and header checks, limits, bad input, shutdown."""

# Fixtures are imported from smtp_fixtures (tests/relay/conftest.py is not ours); pytest passes them
# in as arguments of the same name.
# ruff: noqa: F811

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiosmtplib
import pytest

from gateway.decision.commit import CommitState, DecisionStores
from gateway.decision.disposition import Disposition
from gateway.decision.screening import Accept, Outgoing, Ruling, Submission
from gateway.errors import SpoolError
from gateway.intake.smtp import MAX_ERRORS, forward_path_problem
from gateway.replies import Reply
from gateway.state.spool import FollowUp, Spool, SpoolEnvelope
from tests.relay.smtp_fixtures import (  # noqa: F401
    ALICE,
    ALICE_ALIAS,
    BOB,
    HOSTNAME,
    OUTSIDER,
    PASSWORD,
    RawClient,
    RecordingScreener,
    RunningGateway,
    SlowSpool,
    StartGateway,
    ca,
    client_tls,
    close_quietly,
    gateway,
    make_settings,
    message,
    raw_clients,
    server_tls,
    start_gateway,
)

Connect = Callable[..., Awaitable[RawClient]]


async def raw_session(
    raw_clients: Connect, gateway: RawClient | RunningGateway, implicit_tls: bool = False
) -> RawClient:
    """A RawClient logged in as Alice over STARTTLS (or implicit TLS)."""
    assert isinstance(gateway, RunningGateway)
    if implicit_tls:
        client = await raw_clients(gateway.submissions, gateway.client_tls)
        await client.login(None)
    else:
        client = await raw_clients(gateway.submission)
        await client.login(gateway.client_tls)
    return client


async def send_envelope(
    client: RawClient, sender: str = ALICE, recipients: tuple[str, ...] = (OUTSIDER,)
) -> None:
    assert (await client.command(f"MAIL FROM:<{sender}>")).startswith("250 2.1.0")
    for recipient in recipients:
        assert (await client.command(f"RCPT TO:<{recipient}>")).startswith("250 2.1.5")
    assert (await client.command("DATA")).startswith("354 ")


# --- TLS and AUTH ---------------------------------------------------------------------------------


async def test_starttls_auth_plain_queues_the_exact_bytes_in_the_spool(gateway: RunningGateway) -> None:
    smtp = await gateway.logged_in()
    errors, response = await smtp.sendmail(ALICE, [OUTSIDER], message())
    await smtp.quit()
    assert errors == {}
    assert response.startswith("2.0.0 Ok: queued as ")
    (stored,) = gateway.stored()
    assert response.endswith(stored.envelope.queue_id)
    assert stored.envelope.mail_from == ALICE
    assert stored.envelope.rcpt_tos == (OUTSIDER,)
    assert stored.envelope.authenticated_as == ALICE
    assert stored.content.endswith(message())
    trace = stored.content[: -len(message())]
    assert trace.startswith(
        f"Received: by {HOSTNAME} (conduct-gateway) with ESMTPSA id {stored.envelope.queue_id}".encode()
    )
    assert b"127.0.0.1" not in trace and b"client.example.org" not in trace


async def test_starttls_auth_login(gateway: RunningGateway) -> None:
    smtp = gateway.client()
    await smtp.connect()
    await smtp.starttls()
    await smtp.ehlo()
    response = await smtp.auth_login(ALICE, PASSWORD)
    assert (response.code, response.message) == (235, "2.7.0 Authentication successful")
    errors, _ = await smtp.sendmail(ALICE, [OUTSIDER], message())
    await smtp.quit()
    assert errors == {}
    assert len(gateway.stored()) == 1


async def test_auth_login_with_challenges_over_raw_connection(
    gateway: RunningGateway, raw_clients: Connect
) -> None:
    client = await raw_clients(gateway.submission)
    await client.command("EHLO client.example.org")
    await client.starttls(gateway.client_tls)
    await client.command("EHLO client.example.org")
    assert await client.command("AUTH LOGIN") == "334 VXNlcm5hbWU6"
    assert await client.command(base64.b64encode(ALICE.encode())) == "334 UGFzc3dvcmQ6"
    assert await client.command(base64.b64encode(PASSWORD.encode())) == "235 2.7.0 Authentication successful"


async def test_implicit_tls_listener_offers_and_accepts_auth(gateway: RunningGateway) -> None:
    # Gmail's "Send mail as" uses port 465 style; aiosmtpd alone refuses AUTH there (issues 274/281).
    smtp = gateway.client(implicit_tls=True)
    await smtp.connect()
    await smtp.ehlo()
    assert smtp.supports_extension("auth")
    assert not smtp.supports_extension("starttls")
    assert smtp.server_auth_methods == ["plain", "login"]
    await smtp.auth_plain(ALICE, PASSWORD)
    errors, response = await smtp.sendmail(ALICE, [OUTSIDER], message())
    await smtp.quit()
    assert errors == {} and "queued as" in response
    assert len(gateway.stored()) == 1


async def test_ehlo_advertises_the_submission_extensions(gateway: RunningGateway) -> None:
    smtp = gateway.client()
    await smtp.connect()
    await smtp.starttls()
    response = await smtp.ehlo()
    await smtp.quit()
    lines = response.message.splitlines()
    assert lines[0] == HOSTNAME
    size = gateway.settings.limits.max_message_size
    for extension in (
        "PIPELINING",
        f"SIZE {size}",
        "8BITMIME",
        "SMTPUTF8",
        "ENHANCEDSTATUSCODES",
        "AUTH PLAIN LOGIN",
    ):
        assert extension in lines


async def test_auth_is_neither_offered_nor_accepted_before_starttls(gateway: RunningGateway) -> None:
    smtp = gateway.client()
    await smtp.connect()
    await smtp.ehlo()
    assert smtp.supports_extension("starttls")
    assert not smtp.supports_extension("auth")
    token = base64.b64encode(f"\0{ALICE}\0{PASSWORD}".encode())
    response = await smtp.execute_command(b"AUTH", b"PLAIN", token)
    assert (response.code, response.message[:6]) == (538, "5.7.11")
    response = await smtp.execute_command(b"MAIL", f"FROM:<{ALICE}>".encode())
    assert (response.code, response.message) == (530, "5.7.0 Must issue a STARTTLS command first")
    await smtp.quit()
    assert gateway.stored() == []


async def test_plaintext_auth_on_loopback_only_when_switched_on(start_gateway: StartGateway) -> None:
    gateway = await start_gateway(auth={"allow_plaintext_auth_on_loopback": True})
    smtp = gateway.client()
    await smtp.connect()
    await smtp.ehlo()
    assert smtp.supports_extension("auth")
    await smtp.auth_plain(ALICE, PASSWORD)
    errors, _ = await smtp.sendmail(ALICE, [OUTSIDER], message())
    await smtp.quit()
    assert errors == {}
    (stored,) = gateway.stored()
    assert b" with ESMTPA id " in stored.content.split(b"\r\n", 1)[0]


async def test_wrong_password_and_unknown_user_are_refused(start_gateway: StartGateway) -> None:
    gateway = await start_gateway(auth={"max_failures_per_connection": 10})
    smtp = gateway.client()
    await smtp.connect()
    await smtp.starttls()
    await smtp.ehlo()
    for user, password in (
        (ALICE, "wrong password"),
        ("nobody@example.org", PASSWORD),
        (ALICE_ALIAS, PASSWORD),
    ):
        with pytest.raises(aiosmtplib.SMTPAuthenticationError) as refused:
            await smtp.auth_plain(user, password)
        assert (refused.value.code, refused.value.message) == (
            535,
            "5.7.8 Authentication credentials invalid",
        )
    await smtp.quit()


async def test_malformed_auth_exchanges_get_5xx_and_the_session_continues(
    gateway: RunningGateway, raw_clients: Connect
) -> None:
    client = await raw_clients(gateway.submissions, gateway.client_tls)
    assert (await client.command("AUTH PLAIN")).startswith("503 5.5.1")  # before EHLO
    await client.command("EHLO client.example.org")
    assert (await client.command("AUTH CRAM-MD5")).startswith("504 5.5.4")
    assert (await client.command("AUTH PLAIN !!notbase64")).startswith("501 5.5.2")
    assert (await client.command("AUTH PLAIN " + base64.b64encode(b"no-nul-bytes").decode())).startswith(
        "501 5.5.2"
    )
    assert await client.command("AUTH PLAIN") == "334 "  # RFC 4954: the space is mandatory
    assert (await client.command("*")).startswith("501 5.7.0")
    other = base64.b64encode(f"{BOB}\0{ALICE}\0{PASSWORD}".encode()).decode()
    assert (await client.command(f"AUTH PLAIN {other}")).startswith("535 5.7.8")  # authzid != login
    assert (await client.command("AUTH PLAIN " + "A" * 13000)).startswith("500 5.5.2")
    token = base64.b64encode(f"\0{ALICE}\0{PASSWORD}".encode()).decode()
    assert (await client.command(f"AUTH PLAIN {token}")).startswith("235 2.7.0")
    assert (await client.command(f"AUTH PLAIN {token}")).startswith("503 5.5.1")  # already authenticated


async def test_failed_logins_are_throttled_per_client_address(start_gateway: StartGateway) -> None:
    gateway = await start_gateway(
        auth={"max_failures": 3, "failure_window": "15m", "max_failures_per_connection": 10}
    )
    smtp = await gateway.logged_in(implicit_tls=True)  # a success does not count and does not reset
    await smtp.quit()
    smtp = gateway.client(implicit_tls=True)
    await smtp.connect()
    await smtp.ehlo()
    for _ in range(3):
        response = await smtp.execute_command(
            b"AUTH", b"PLAIN", base64.b64encode(f"\0{ALICE}\0guess".encode())
        )
        assert response.code == 535
    # Over the limit even the right password is refused, without being checked.
    token = base64.b64encode(f"\0{ALICE}\0{PASSWORD}".encode())
    response = await smtp.execute_command(b"AUTH", b"PLAIN", token)
    assert (response.code, response.message[:5]) == (454, "4.7.0")
    await smtp.quit()
    # A new connection from the same address is throttled too ...
    smtp = gateway.client(implicit_tls=True)
    await smtp.connect()
    await smtp.ehlo()
    assert (await smtp.execute_command(b"AUTH", b"PLAIN", token)).code == 454
    await smtp.quit()
    # ... but another client address is not.
    other = await gateway.logged_in(implicit_tls=True, source_address=("127.0.0.2", 0))
    await other.quit()
    statistics = gateway.service.statistics()
    assert (statistics.auth_failures_total, statistics.auth_throttled_total) == (3, 2)


# --- No open relay --------------------------------------------------------------------------------


async def test_unauthenticated_mail_gets_530_on_both_listeners(gateway: RunningGateway) -> None:
    for implicit_tls in (False, True):
        smtp = gateway.client(implicit_tls=implicit_tls)
        await smtp.connect()
        if not implicit_tls:
            await smtp.starttls()
        await smtp.ehlo()
        response = await smtp.execute_command(b"MAIL", f"FROM:<{ALICE}>".encode())
        assert (response.code, response.message) == (530, "5.7.0 Authentication required")
        for command, argument in ((b"RCPT", f"TO:<{OUTSIDER}>".encode()), (b"DATA", b"")):
            response = await smtp.execute_command(command, *([argument] if argument else []))
            assert response.code == 530
        await smtp.quit()
    assert gateway.stored() == []


async def test_helo_session_cannot_authenticate_or_send(
    gateway: RunningGateway, raw_clients: Connect
) -> None:
    client = await raw_clients(gateway.submissions, gateway.client_tls)
    assert await client.command("HELO client.example.org") == f"250 {HOSTNAME}"
    assert (await client.command("AUTH PLAIN")).startswith("503 5.5.1")
    assert (await client.command(f"MAIL FROM:<{ALICE}>")).startswith("530 5.7.0")


async def test_mail_from_must_be_an_address_of_the_member(gateway: RunningGateway) -> None:
    smtp = await gateway.logged_in()
    for sender in (BOB, OUTSIDER, ""):
        response = await smtp.execute_command(b"MAIL", f"FROM:<{sender}>".encode())
        assert response.code == 553 and response.message.startswith("5.7.1 "), response
        assert ALICE in response.message
    response = await smtp.execute_command(b"MAIL", f"FROM:<{ALICE_ALIAS.upper()}>".encode())
    assert (response.code, response.message) == (250, "2.1.0 Sender ok")
    await smtp.quit()


async def test_header_from_must_be_an_address_of_the_member(gateway: RunningGateway) -> None:
    smtp = await gateway.logged_in()
    cases = {
        "someone else": message(sender=BOB),
        "display name trick": message(sender=f'"{ALICE}" <{OUTSIDER}>'),
        "second address": message(sender=f"{ALICE}, {OUTSIDER}"),
        "sender header": message(Sender=OUTSIDER),
    }
    for case, content in cases.items():
        await smtp.mail(ALICE)
        await smtp.rcpt(OUTSIDER)
        with pytest.raises(aiosmtplib.SMTPDataError) as refused:
            await smtp.data(content)
        assert refused.value.code == 550, case
        assert refused.value.message.startswith("5.7.1 Message refused: "), case
    errors, _ = await smtp.sendmail(ALICE, [OUTSIDER], message(sender=f"Alice Smith <{ALICE_ALIAS}>"))
    await smtp.quit()
    assert errors == {}
    assert len(gateway.stored()) == 1


@pytest.mark.parametrize(
    ("content", "status"),
    [
        pytest.param(
            message().replace(b"From: ", b"X-Old-From: "), "5.6.0 Message refused: it has no From", id="none"
        ),
        pytest.param(message(Resent_To="x@example.org") + b"", None, id="control-ok"),
        pytest.param(
            b"From: " + OUTSIDER.encode() + b"\r\n" + message(),
            "5.6.0 Message refused: it has more",
            id="two",
        ),
        pytest.param(
            b"From : " + OUTSIDER.encode() + b"\r\n" + message(),
            "5.6.0 Message refused: the header",
            id="space",
        ),
        pytest.param(
            b"From " + OUTSIDER.encode() + b" Mon\r\n" + message(),
            "5.6.0 Message refused: the header",
            id="mbox",
        ),
        pytest.param(b"not a header\r\n" + message(), "5.6.0 Message refused: the header", id="junk-line"),
        pytest.param(b" folded first\r\n" + message(), "5.6.0 Message refused: the header", id="fold-first"),
        pytest.param(
            message(sender="undisclosed-recipients:;"), "5.6.0 Message refused: the From", id="group"
        ),
        # The email package raises on these (IndexError, AttributeError): once 451 Internal error,
        # retried forever; now a permanent refusal that says what is wrong.
        pytest.param(
            message(sender="John Doe <jdoe@"),
            '5.6.0 Message refused: the From header is malformed: an address is not closed with ">"',
            id="unclosed-address",
        ),
        pytest.param(
            message(sender="Name <"), "5.6.0 Message refused: the From header is malformed", id="open"
        ),
        pytest.param(message(sender=':;\t[\t(@b@>""'), "5.6.0 Message refused: the From header", id="junk"),
    ],
)
async def test_header_from_must_be_exactly_one_readable_field(
    gateway: RunningGateway, content: bytes, status: str | None
) -> None:
    smtp = await gateway.logged_in()
    await smtp.mail(ALICE)
    await smtp.rcpt(OUTSIDER)
    if status is None:
        assert (await smtp.data(content)).code == 250
    else:
        with pytest.raises(aiosmtplib.SMTPDataError) as refused:
            await smtp.data(content)
        assert refused.value.code == 550
        assert refused.value.message.startswith(status)
    await smtp.quit()


async def test_command_sequences_never_open_the_relay(gateway: RunningGateway, raw_clients: Connect) -> None:
    client = await raw_session(raw_clients, gateway)
    # RSET keeps the login but forgets the envelope.
    await client.command(f"MAIL FROM:<{ALICE}>")
    await client.command(f"RCPT TO:<{OUTSIDER}>")
    assert await client.command("RSET") == "250 2.0.0 Ok"
    assert (await client.command("DATA")).startswith("503 5.5.1")
    assert (await client.command(f"RCPT TO:<{OUTSIDER}>")).startswith("503 5.5.1")
    assert (await client.command(f"MAIL FROM:<{OUTSIDER}>")).startswith("553 5.7.1")
    # A second EHLO also ends the transaction; the sender check still applies after it.
    await client.command(f"MAIL FROM:<{ALICE}>")
    await client.command(f"RCPT TO:<{OUTSIDER}>")
    assert (await client.command("EHLO again.example.org")).startswith("250-")
    assert (await client.command("DATA")).startswith("503 5.5.1")
    assert (await client.command(f"MAIL FROM:<{BOB}>")).startswith("553 5.7.1")
    # AUTH inside a transaction, STARTTLS inside TLS: refused.
    await client.command(f"MAIL FROM:<{ALICE}>")
    assert (await client.command("AUTH PLAIN")).startswith("503 5.5.1")
    assert (await client.command("STARTTLS")).startswith("503 5.5.1")
    assert gateway.stored() == []


async def test_starttls_forgets_a_plaintext_login(start_gateway: StartGateway, raw_clients: Connect) -> None:
    gateway = await start_gateway(auth={"allow_plaintext_auth_on_loopback": True})
    client = await raw_clients(gateway.submission)
    await client.login(None)
    await client.starttls(gateway.client_tls)
    assert (await client.command(f"MAIL FROM:<{ALICE}>")).startswith("503 5.5.1")  # EHLO forgotten too
    await client.command("EHLO client.example.org")
    assert (await client.command(f"MAIL FROM:<{ALICE}>")).startswith("530 5.7.0 Authentication required")


async def test_commands_pipelined_after_starttls_in_plaintext_are_dropped(
    start_gateway: StartGateway, raw_clients: Connect
) -> None:
    gateway = await start_gateway(auth={"allow_plaintext_auth_on_loopback": True})
    client = await raw_clients(gateway.submission)
    await client.command("EHLO client.example.org")
    token = base64.b64encode(f"\0{ALICE}\0{PASSWORD}".encode()).decode()
    await client.send(f"STARTTLS\r\nEHLO evil.example.org\r\nAUTH PLAIN {token}\r\n".encode())
    assert (await client.reply()).startswith("220 2.0.0")
    await client.writer.start_tls(gateway.client_tls, server_hostname=HOSTNAME)
    assert await client.command("NOOP") == "250 2.0.0 Ok"  # no EHLO or AUTH reply came first
    assert (await client.command(f"MAIL FROM:<{ALICE}>")).startswith("503 5.5.1")


# --- Envelope limits and forward paths ----------------------------------------------------------------


@pytest.mark.parametrize(
    "recipient",
    [
        pytest.param("victim%example.net@example.org", id="percent-hack"),
        pytest.param("example.net!victim@example.org", id="bang-path"),
        pytest.param("@relay.example.org:victim@example.net", id="source-route"),
        pytest.param("@a.example.org,@b.example.org:victim@example.net", id="source-route-list"),
        pytest.param('"victim@example.net"@example.org', id="quoted-with-at"),
        pytest.param('"a b"@example.org', id="quoted"),
        pytest.param("victim@[192.0.2.1]", id="address-literal"),
        pytest.param("victim", id="no-domain"),
        pytest.param("", id="empty"),
        pytest.param("victim@localhost", id="special-use-domain"),
        pytest.param("victim@example..org", id="bad-domain"),
    ],
)
async def test_odd_forward_paths_are_refused(
    gateway: RunningGateway, raw_clients: Connect, recipient: str
) -> None:
    client = await raw_session(raw_clients, gateway)
    await client.command(f"MAIL FROM:<{ALICE}>")
    reply = await client.command(f"RCPT TO:<{recipient}>")
    assert reply.startswith("553 5.1.3 Recipient address refused: "), reply


def test_forward_path_problem_accepts_plain_addresses() -> None:
    for address in (
        "victim@example.net",
        "first.last+tag@sub.example.org",
        "x@example.test",
        "ü@exämple.org",
    ):
        assert forward_path_problem(address) is None


async def test_non_ascii_recipient_needs_smtputf8(gateway: RunningGateway, raw_clients: Connect) -> None:
    client = await raw_session(raw_clients, gateway)
    await client.command(f"MAIL FROM:<{ALICE}>")
    assert (await client.command("RCPT TO:<jürgen@example.org>")).startswith("553 5.6.7")
    await client.command("RSET")
    assert (await client.command(f"MAIL FROM:<{ALICE}> SMTPUTF8 BODY=8BITMIME")).startswith("250 ")
    assert (await client.command("RCPT TO:<jürgen@example.org>")).startswith("250 2.1.5")


async def test_too_many_recipients_get_452_and_the_rest_is_delivered(start_gateway: StartGateway) -> None:
    gateway = await start_gateway(limits={"max_recipients": 3})
    smtp = await gateway.logged_in()
    recipients = [f"person{n}@example.net" for n in range(5)]
    errors, _ = await smtp.sendmail(ALICE, recipients, message())
    await smtp.quit()
    assert set(errors) == set(recipients[3:])
    assert {error.code for error in errors.values()} == {452}
    assert all(error.message.startswith("4.5.3") for error in errors.values())
    (stored,) = gateway.stored()
    assert stored.envelope.rcpt_tos == tuple(recipients[:3])


async def test_mail_parameters(gateway: RunningGateway, raw_clients: Connect) -> None:
    client = await raw_session(raw_clients, gateway)
    assert (await client.command(f"MAIL FROM:<{ALICE}> FOO=BAR")).startswith("555 5.5.4")
    assert (await client.command(f"MAIL FROM:<{ALICE}> BODY=BINARYMIME")).startswith("501 5.5.4")
    assert (await client.command(f"MAIL FROM:<{ALICE}> SIZE=lots")).startswith("501 5.5.4")
    assert (await client.command(f"MAIL FROM:<{ALICE}>SIZE=1")).startswith("501 5.5.4")
    assert (await client.command(f"MAIL FROM:<{ALICE}> SIZE=100 BODY=8BITMIME AUTH=<>")).startswith("250 ")
    assert (await client.command(f"MAIL FROM:<{ALICE}>")).startswith("503 5.5.1")  # nested
    assert (await client.command(f"RCPT TO:<{OUTSIDER}> NOTIFY=NEVER")).startswith("555 5.5.4")


# --- Size, lines and bad bytes ----------------------------------------------------------------------


async def test_declared_and_actual_size_over_the_limit_get_552(start_gateway: StartGateway) -> None:
    gateway = await start_gateway(limits={"max_message_size": 2000})
    smtp = await gateway.logged_in()
    response = await smtp.execute_command(b"MAIL", f"FROM:<{ALICE}>".encode(), b"SIZE=2001")
    assert response.code == 552 and response.message.startswith("5.3.4 ")
    await smtp.mail(ALICE)
    await smtp.rcpt(OUTSIDER)
    with pytest.raises(aiosmtplib.SMTPDataError) as refused:
        await smtp.data(message(body="x" * 70 + "\r\n") * 1 + b"y" * 70 * 40 + b"\r\n")
    assert refused.value.code == 552 and refused.value.message.startswith("5.3.4 ")
    # The session stays in step and usable.
    errors, _ = await smtp.sendmail(ALICE, [OUTSIDER], message())
    await smtp.quit()
    assert errors == {}
    assert len(gateway.stored()) == 1


async def test_size_limit_counts_the_message_not_the_dot_stuffing(start_gateway: StartGateway) -> None:
    gateway = await start_gateway(limits={"max_message_size": 3000})
    smtp = await gateway.logged_in()
    content = message(body=".\r\n" * 400)  # 1200 bytes of body, stuffed to 1600 on the wire
    assert len(content) < 3000
    errors, _ = await smtp.sendmail(ALICE, [OUTSIDER], content)
    await smtp.quit()
    assert errors == {}
    assert gateway.stored()[0].content.endswith(content)


async def test_overlong_command_lines_get_500_and_the_session_continues(
    gateway: RunningGateway, raw_clients: Connect
) -> None:
    client = await raw_session(raw_clients, gateway)
    assert await client.command("NOOP " + "x" * 5000) == "500 5.5.2 Command line too long"
    assert await client.command("NOOP " + "x" * 100_000) == "500 5.5.2 Command line too long"
    assert (await client.command(f"MAIL FROM:<{ALICE}> " + "x" * 3000)).startswith("500 5.5.2")
    assert await client.command("NOOP") == "250 2.0.0 Ok"


async def test_overlong_message_line_is_refused(start_gateway: StartGateway) -> None:
    gateway = await start_gateway(limits={"max_line_length": 100})
    smtp = await gateway.logged_in()
    await smtp.mail(ALICE)
    await smtp.rcpt(OUTSIDER)
    with pytest.raises(aiosmtplib.SMTPDataError) as refused:
        await smtp.data(message(body="z" * 101 + "\r\n"))
    assert refused.value.code == 550 and refused.value.message.startswith("5.6.0 ")
    assert "100 bytes" in refused.value.message
    errors, _ = await smtp.sendmail(ALICE, [OUTSIDER], message(body="z" * 100 + "\r\n"))
    await smtp.quit()
    assert errors == {}


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        pytest.param(b"one\ntwo\r\n", "bare CR or LF", id="bare-lf"),
        pytest.param(b"one\rtwo\r\n", "bare CR or LF", id="bare-cr"),
        pytest.param(b"one\r\r\n", "bare CR or LF", id="cr-crlf"),
        pytest.param(b"one\0two\r\n", "NUL byte", id="nul"),
    ],
)
async def test_bare_cr_lf_and_nul_in_data_are_refused(
    gateway: RunningGateway, raw_clients: Connect, body: bytes, reason: str
) -> None:
    client = await raw_session(raw_clients, gateway)
    await send_envelope(client)
    await client.send(message(body="") + body + b".\r\n")
    reply = await client.reply()
    assert reply.startswith("550 5.5.2 ") and reason in reply
    assert "\r\n" not in reply  # one reply for the whole message
    assert await client.command("NOOP") == "250 2.0.0 Ok"
    assert gateway.stored() == []


async def test_bare_lf_in_a_header_cannot_add_a_header_field(
    gateway: RunningGateway, raw_clients: Connect
) -> None:
    client = await raw_session(raw_clients, gateway)
    await send_envelope(client)
    await client.send(b"From: " + ALICE.encode() + b"\r\nSubject: x\nBcc: spy@example.net\r\n\r\nhi\r\n.\r\n")
    assert (await client.reply()).startswith("550 5.5.2")
    assert gateway.stored() == []


async def test_malformed_commands_get_5xx_and_keep_the_connection_usable(
    gateway: RunningGateway, raw_clients: Connect
) -> None:
    client = await raw_session(raw_clients, gateway)
    expected = {
        b"FOO": "500 5.5.2",
        b"": "500 5.5.2",
        b"\xff\xfe": "500 5.5.2",
        b"MAIL": "501 5.5.4",
        b"MAIL TO:<x@example.org>": "501 5.5.4",
        b"MAIL FROM:<" + ALICE.encode(): "501 5.5.4",
        b"MAIL FROM:<\xff@example.org>": "501 5.5.2",
        b"RCPT TO:<" + OUTSIDER.encode() + b">": "503 5.5.1",
        b"DATA": "503 5.5.1",
        b"NOOP \0": "500 5.5.2",
        b"NOOP a\rb": "500 5.5.2",
        b"EXPN staff": "502 5.5.1",
        b"RSET now": "501 5.5.4",
        b"EHLO": "501 5.5.4",
        b"BDAT 10 LAST": "500 5.5.2",
    }
    for command, reply in expected.items():
        assert (await client.command(command)).startswith(reply), command
    assert (await client.command("VRFY alice")).startswith("252 2.5.0")
    assert (await client.command("HELP")).startswith("214 2.0.0")
    await send_envelope(client)
    await client.send(message() + b".\r\n")
    assert (await client.reply()).startswith("250 2.0.0 Ok: queued as ")


async def test_too_many_errors_close_the_connection(gateway: RunningGateway, raw_clients: Connect) -> None:
    client = await raw_clients(gateway.submission)
    for _ in range(MAX_ERRORS - 1):
        assert (await client.command("FOO")).startswith("500 ")
    assert (await client.command("FOO")).startswith("421 4.7.0")
    assert await client.reader.read() == b""


async def test_pipelined_transaction_in_one_write(gateway: RunningGateway, raw_clients: Connect) -> None:
    client = await raw_session(raw_clients, gateway)
    first = message(subject="one")
    second = message(subject="two", body=".leading dot\r\n")
    stuffed = second.replace(b"\r\n.", b"\r\n..")
    await client.send(
        f"MAIL FROM:<{ALICE}>\r\nRCPT TO:<{OUTSIDER}>\r\nDATA\r\n".encode()
        + first
        + b".\r\n"
        + f"MAIL FROM:<{ALICE}>\r\nRCPT TO:<{BOB}>\r\nDATA\r\n".encode()
        + stuffed
        + b".\r\nQUIT\r\n"
    )
    replies = [await client.reply() for _ in range(9)]
    assert [reply[:3] for reply in replies] == ["250", "250", "354", "250", "250", "250", "354", "250", "221"]
    stored = gateway.stored()
    assert len(stored) == 2
    assert stored[0].content.endswith(first) and stored[1].content.endswith(second)
    assert stored[1].envelope.rcpt_tos == (BOB,)


async def test_empty_data_is_refused_for_lack_of_a_from_header(
    gateway: RunningGateway, raw_clients: Connect
) -> None:
    client = await raw_session(raw_clients, gateway)
    await send_envelope(client)
    assert (await client.command(".")).startswith("550 5.6.0 Message refused: it has no From")
    assert await client.command("NOOP") == "250 2.0.0 Ok"


# --- Screening, spooling and failures -----------------------------------------------------------------


async def test_screener_sees_the_submission_and_its_refusal_reaches_the_client(
    start_gateway: StartGateway,
) -> None:
    screener = RecordingScreener(
        refuse=Reply(
            550, "5.7.1", ("The conduct address must be in Cc.", "Add conduct@example.org and resend.")
        )
    )
    gateway = await start_gateway(screener=screener)
    smtp = await gateway.logged_in()
    await smtp.mail(ALICE)
    await smtp.rcpt(OUTSIDER)
    with pytest.raises(aiosmtplib.SMTPDataError) as refused:
        await smtp.data(message())
    await smtp.quit()
    assert refused.value.code == 550
    assert refused.value.message == (
        "5.7.1 The conduct address must be in Cc.\n5.7.1 Add conduct@example.org and resend."
    )
    (seen,) = screener.seen
    assert (seen.mail_from, seen.rcpt_tos, seen.authenticated_as) == (ALICE, (OUTSIDER,), ALICE)
    assert seen.content == message()
    assert seen.client_address == "127.0.0.1"
    assert screener.recorded == []
    assert gateway.stored() == []


async def test_refusal_lines_are_multiline_on_the_wire(
    start_gateway: StartGateway, raw_clients: Connect
) -> None:
    screener = RecordingScreener(refuse=Reply(451, "4.7.1", ("Held for review.", "Try again\r\nlater.")))
    gateway = await start_gateway(screener=screener)
    client = await raw_session(raw_clients, gateway)
    await send_envelope(client)
    await client.send(message() + b".\r\n")
    assert await client.reply() == "451-4.7.1 Held for review.\r\n451 4.7.1 Try again??later."


async def test_accepted_content_and_recipients_are_what_the_screener_says(
    start_gateway: StartGateway,
) -> None:
    class Rewriting(RecordingScreener):
        def screen(self, submission: Submission) -> Accept | Reply:
            self.seen.append(submission)
            content = b"X-Conduct: checked\r\n" + submission.content
            return Accept(
                content=content, rcpt_tos=(*submission.rcpt_tos, "conduct@example.org"), changes=("Cc added",)
            )

    screener = Rewriting()
    gateway = await start_gateway(screener=screener)
    smtp = await gateway.logged_in()
    errors, response = await smtp.sendmail(ALICE, [OUTSIDER], message())
    await smtp.quit()
    assert errors == {}
    assert response.splitlines() == [
        "2.0.0 Changed: Cc added",
        f"2.0.0 Ok: queued as {gateway.stored()[0].envelope.queue_id}",
    ]
    (stored,) = gateway.stored()
    assert stored.envelope.rcpt_tos == (OUTSIDER, "conduct@example.org")
    assert stored.content.endswith(b"X-Conduct: checked\r\n" + message())
    assert screener.recorded == [stored.envelope.queue_id]


class ConsumingScreener(RecordingScreener):
    """Answers 250 without spooling the submission, spooling gateway messages instead (a hold)."""

    def __init__(self, *, essential: bool = True) -> None:
        super().__init__()
        self.essential = essential
        self.undone: list[str] = []

    def screen(self, submission: Submission) -> Accept | Reply:
        self.seen.append(submission)
        notice = Outgoing(f"{submission.queue_id}N", "", (ALICE,), b"Subject: held\r\n\r\nheld\r\n")
        request = Outgoing(
            f"{submission.queue_id}R", "", ("bob@example.org",), b"Subject: r\r\n\r\nr\r\n", self.essential
        )
        return Accept(
            content=b"",
            rcpt_tos=(),
            verdict=Ruling.HOLD,
            extra=(notice, request),
            spool_submission=False,
            reply_lines=("Held for review by a second committee member: X.", "Reference Q."),
        )

    def not_stored(self, queue_id: str) -> None:
        self.undone.append(queue_id)


async def test_a_consumed_submission_spools_only_the_gateway_messages_and_says_so(
    start_gateway: StartGateway,
) -> None:
    screener = ConsumingScreener()
    gateway = await start_gateway(screener=screener)
    smtp = await gateway.logged_in()
    errors, response = await smtp.sendmail(ALICE, [OUTSIDER], message())
    await smtp.quit()
    assert errors == {}
    assert response.splitlines() == [
        "2.0.0 Held for review by a second committee member: X.",
        "2.0.0 Reference Q.",
    ]
    stored = gateway.stored()
    assert sorted(m.envelope.rcpt_tos for m in stored) == [(ALICE,), ("bob@example.org",)]
    assert all(m.envelope.mail_from == "" and m.content != message() for m in stored)
    assert screener.recorded == [screener.seen[0].queue_id]


async def test_an_essential_gateway_message_that_cannot_be_stored_is_a_451_and_undone(
    start_gateway: StartGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    screener = ConsumingScreener()
    gateway = await start_gateway(screener=screener)
    real_commit = gateway.spool.commit

    async def failing(envelope: SpoolEnvelope, content: bytes, *follow_up: FollowUp | None) -> None:
        if envelope.queue_id.endswith("R"):
            raise SpoolError("disk full")
        await real_commit(envelope, content, *follow_up)

    monkeypatch.setattr(gateway.spool, "commit", failing)
    smtp = await gateway.logged_in()
    with pytest.raises(aiosmtplib.SMTPDataError) as deferred:
        await smtp.sendmail(ALICE, [OUTSIDER], message())
    await smtp.quit()
    assert deferred.value.code == 451
    assert screener.undone == [screener.seen[0].queue_id]
    assert screener.recorded == []


async def test_a_best_effort_notice_that_cannot_be_stored_does_not_fail_the_message(
    start_gateway: StartGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    screener = ConsumingScreener(essential=False)
    gateway = await start_gateway(screener=screener)
    real_commit = gateway.spool.commit

    async def failing(envelope: SpoolEnvelope, content: bytes, *follow_up: FollowUp | None) -> None:
        if envelope.queue_id.endswith("R"):
            raise SpoolError("disk full")
        await real_commit(envelope, content, *follow_up)

    monkeypatch.setattr(gateway.spool, "commit", failing)
    smtp = await gateway.logged_in()
    errors, _response = await smtp.sendmail(ALICE, [OUTSIDER], message())
    await smtp.quit()
    assert errors == {} and screener.undone == []
    assert [m.envelope.rcpt_tos for m in gateway.stored()] == [(ALICE,)]


async def test_missing_date_and_message_id_are_added(gateway: RunningGateway) -> None:
    content = f"From: {ALICE}\r\nTo: {OUTSIDER}\r\nSubject: bare\r\n\r\nhello\r\n".encode()
    smtp = await gateway.logged_in()
    await smtp.sendmail(ALICE, [OUTSIDER], content)
    await smtp.quit()
    (stored,) = gateway.stored()
    head = stored.content[: -len(content)]
    assert b"\r\nDate: " in head
    assert b"\r\nMessage-ID: <" in head and f"@{HOSTNAME}>\r\n".encode() in head


async def test_screener_exception_gets_451_without_python_text(start_gateway: StartGateway) -> None:
    class Broken(RecordingScreener):
        def screen(self, submission: Submission) -> Accept | Reply:
            raise KeyError("Subject: secret words")

    gateway = await start_gateway(screener=Broken())
    smtp = await gateway.logged_in()
    await smtp.mail(ALICE)
    await smtp.rcpt(OUTSIDER)
    with pytest.raises(aiosmtplib.SMTPDataError) as refused:
        await smtp.data(message())
    assert refused.value.code == 451 and refused.value.message.startswith("4.3.0 ")
    assert "KeyError" not in refused.value.message and "secret" not in refused.value.message
    await smtp.quit()
    assert gateway.stored() == []


async def test_internal_error_in_a_command_gets_451_and_the_session_continues(
    gateway: RunningGateway,
    raw_clients: Connect,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(member: str) -> frozenset[str]:
        raise ZeroDivisionError("division by zero in secret code")

    client = await raw_session(raw_clients, gateway)
    monkeypatch.setattr(gateway.accounts, "addresses_of", broken)
    with caplog.at_level(logging.INFO, logger="gateway.intake.smtp"):
        reply = await client.command(f"MAIL FROM:<{ALICE}>")
    assert reply.startswith("451 4.3.0 ")
    assert "ZeroDivisionError" not in reply and "secret" not in reply
    assert 'error="ZeroDivisionError at' in caplog.text and "secret" not in caplog.text
    monkeypatch.undo()
    assert (await client.command(f"MAIL FROM:<{ALICE}>")).startswith("250 ")


async def test_spool_failure_gets_451(gateway: RunningGateway) -> None:
    # Root ignores permissions, so break the spool by putting a file where its tmp folder was.
    tmp = gateway.spool.root / "tmp"
    tmp.rmdir()
    tmp.write_bytes(b"")
    smtp = await gateway.logged_in()
    await smtp.mail(ALICE)
    await smtp.rcpt(OUTSIDER)
    with pytest.raises(aiosmtplib.SMTPDataError) as refused:
        await smtp.data(message())
    await smtp.quit()
    assert refused.value.code == 451 and refused.value.message.startswith("4.3.0 Could not store")
    assert gateway.service.statistics().messages_deferred_total == 1


async def test_slow_screener_and_slow_commit_still_get_their_reply(
    start_gateway: StartGateway, tmp_path: Path
) -> None:
    class Slow(RecordingScreener):
        def screen(self, submission: Submission) -> Accept | Reply:
            time.sleep(0.3)  # blocks the loop longer than the command timeout
            return super().screen(submission)

    spool = SlowSpool(tmp_path / "slow-spool", delay=0.5)
    gateway = await start_gateway(screener=Slow(), spool=spool, limits={"command_timeout": 0.2})
    smtp = await gateway.logged_in()
    errors, response = await smtp.sendmail(ALICE, [OUTSIDER], message())
    assert errors == {} and "queued as" in response
    await close_quietly(smtp)
    assert len(gateway.stored()) == 1


async def test_message_is_stored_even_if_the_client_hangs_up_during_the_commit(
    start_gateway: StartGateway, raw_clients: Connect, tmp_path: Path
) -> None:
    spool = SlowSpool(tmp_path / "slow-spool", delay=0.3)
    gateway = await start_gateway(spool=spool)
    client = await raw_session(raw_clients, gateway)
    await send_envelope(client)
    await client.send(message() + b".\r\n")
    await spool.started.wait()
    client.writer.transport.abort()
    for _ in range(100):
        if gateway.service.statistics().commits_in_flight == 0:
            break
        await asyncio.sleep(0.02)
    assert len(gateway.stored()) == 1


async def test_a_commit_that_fails_unexpectedly_is_a_451_and_the_session_goes_on(
    gateway: RunningGateway, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from gateway.decision import commit

    async def broken(*_args: object) -> None:
        raise RuntimeError("Jane Doe's words")

    monkeypatch.setattr(commit, "commit", broken)
    smtp = await gateway.logged_in()
    await smtp.mail(ALICE)
    await smtp.rcpt(OUTSIDER)
    with (
        caplog.at_level(logging.ERROR, logger="gateway.intake.smtp"),
        pytest.raises(aiosmtplib.SMTPDataError) as failed,
    ):
        await smtp.data(message())
    assert failed.value.code == 451 and "Jane" not in failed.value.message
    assert 'error="RuntimeError at' in caplog.text and "Jane" not in caplog.text
    monkeypatch.undo()
    errors, _ = await smtp.sendmail(ALICE, [OUTSIDER], message())  # the same session, working again
    await smtp.quit()
    assert errors == {} and len(gateway.stored()) == 1


async def test_idle_client_gets_421_after_the_command_timeout(
    start_gateway: StartGateway, raw_clients: Connect
) -> None:
    gateway = await start_gateway(limits={"command_timeout": 0.2})
    client = await raw_clients(gateway.submission)
    assert (await client.reply()).startswith("421 4.4.2")
    assert await client.reader.read() == b""


async def test_graceful_stop_finishes_the_transaction_in_flight(
    start_gateway: StartGateway, raw_clients: Connect, tmp_path: Path
) -> None:
    spool = SlowSpool(tmp_path / "slow-spool", delay=0.4)
    gateway = await start_gateway(spool=spool)
    idle = await raw_clients(gateway.submission)
    busy = await raw_session(raw_clients, gateway, implicit_tls=True)
    await send_envelope(busy)
    await busy.send(message() + b".\r\n")
    await spool.started.wait()
    stopping = asyncio.create_task(gateway.service.stop(grace=10))
    assert (await idle.reply()).startswith("421 4.3.2")
    assert (await busy.reply()).startswith("250 2.0.0 Ok: queued as ")
    assert (await busy.reply()).startswith("421 4.3.2")
    await asyncio.wait_for(stopping, 5)
    assert len(gateway.stored()) == 1
    with pytest.raises(OSError):
        await asyncio.open_connection(*gateway.submission)


async def test_stop_grace_expiry_closes_stuck_transactions(
    gateway: RunningGateway, raw_clients: Connect
) -> None:
    client = await raw_session(raw_clients, gateway)
    await client.command(f"MAIL FROM:<{ALICE}>")  # a transaction that never finishes
    started = time.monotonic()
    await gateway.service.stop(grace=0.2)
    assert time.monotonic() - started < 3
    assert await client.reader.read() == b""
    assert gateway.service.statistics().connections_open == 0


# --- Connection limits, logs, statistics -------------------------------------------------------------


async def test_connection_limits_answer_421(start_gateway: StartGateway) -> None:
    gateway = await start_gateway(limits={"max_connections": 3, "max_connections_per_client": 2})
    opened: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def greeting(source: str) -> str:
        reader, writer = await asyncio.open_connection(*gateway.submission, local_addr=(source, 0))
        opened.append((reader, writer))
        return (await asyncio.wait_for(reader.readline(), 5)).decode()

    try:
        assert (await greeting("127.0.0.1")).startswith("220 ")
        assert (await greeting("127.0.0.1")).startswith("220 ")
        assert (await greeting("127.0.0.1")).startswith("421 4.7.0 Too many connections from your address")
        assert (await greeting("127.0.0.2")).startswith("220 ")
        # All three places for strangers are taken: the oldest idle one makes room, never silently.
        assert (await greeting("127.0.0.3")).startswith("220 ")
        oldest = opened[0][0]
        assert (await asyncio.wait_for(oldest.readline(), 5)).startswith(b"421 4.7.0 Too many connections")
        assert await asyncio.wait_for(oldest.read(), 5) == b""
    finally:
        for _reader, writer in opened:
            writer.close()
            await writer.wait_closed()
    statistics = gateway.service.statistics()
    assert statistics.connections_refused_total == 1
    assert statistics.refusals_total == {"too_many_from_address": 1, "made_room": 1}


async def test_one_log_line_per_transaction_without_content(
    gateway: RunningGateway, caplog: pytest.LogCaptureFixture
) -> None:
    smtp = await gateway.logged_in()
    with caplog.at_level(logging.INFO, logger="gateway.intake.smtp"):
        await smtp.sendmail(ALICE, [OUTSIDER, BOB], message(subject="Confidential report"))
        await smtp.mail(ALICE)
        await smtp.rcpt(OUTSIDER)
        with pytest.raises(aiosmtplib.SMTPDataError):
            await smtp.data(message(sender=BOB, subject="Confidential report"))
    await smtp.quit()
    lines = [
        record.getMessage() for record in caplog.records if "event=smtp.transaction" in record.getMessage()
    ]
    assert len(lines) == 2
    queue_id = gateway.stored()[0].envelope.queue_id
    assert f"queue_id={queue_id}" in lines[0]
    assert "outcome=queued reply=250 status=2.0.0" in lines[0]
    assert f"member={ALICE}" in lines[0] and "recipients=2" in lines[0] and "size=" in lines[0]
    assert "outcome=refused reply=550 status=5.7.1" in lines[1]
    assert "Confidential" not in caplog.text and "Hi there" not in caplog.text and OUTSIDER not in caplog.text


async def test_statistics_count_what_happened(gateway: RunningGateway) -> None:
    smtp = await gateway.logged_in()
    await smtp.sendmail(ALICE, [OUTSIDER], message())
    await smtp.mail(ALICE)
    await smtp.rcpt(OUTSIDER)
    with pytest.raises(aiosmtplib.SMTPDataError):
        await smtp.data(message(sender=BOB))
    statistics = gateway.service.statistics()
    await smtp.quit()
    assert statistics.connections_open == 1
    assert (statistics.messages_accepted_total, statistics.messages_refused_total) == (1, 1)
    assert statistics.auth_successes_total == 1
    assert statistics.bytes_accepted_total > len(message())


async def test_users_added_while_running_can_log_in(gateway: RunningGateway) -> None:
    from gateway.state.accounts import Accounts
    from tests.relay.smtp_fixtures import FAST_HASHER

    Accounts.load(gateway.settings.auth.users_file, hasher=FAST_HASHER).add("carol@example.org", PASSWORD)
    smtp = await gateway.logged_in(user="carol@example.org")
    errors, _ = await smtp.sendmail("carol@example.org", [OUTSIDER], message(sender="carol@example.org"))
    await smtp.quit()
    assert errors == {}


async def test_tls_handshake_garbage_does_not_disturb_the_service(
    gateway: RunningGateway, raw_clients: Connect
) -> None:
    reader, writer = await asyncio.open_connection(*gateway.submissions)
    writer.write(b"EHLO not-tls\r\n")
    await writer.drain()
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()
    await writer.wait_closed()
    client = await raw_clients(gateway.submission)
    await client.command("EHLO client.example.org")
    assert (await client.command("STARTTLS")).startswith("220 ")
    await client.send(b"this is not a TLS ClientHello\r\n" * 10)
    assert await asyncio.wait_for(client.reader.read(), 5) == b""
    for _ in range(100):  # the failed connection is released (its per-client slot too)
        if gateway.service.statistics().connections_open == 0:
            break
        await asyncio.sleep(0.01)
    assert gateway.service.statistics().connections_open == 0
    smtp = await gateway.logged_in()
    await smtp.quit()


async def test_commands_pipelined_before_a_half_close_are_all_answered(start_gateway: StartGateway) -> None:
    gateway = await start_gateway(auth={"allow_plaintext_auth_on_loopback": True})
    reader, writer = await asyncio.open_connection(*gateway.submission)
    token = base64.b64encode(f"\0{ALICE}\0{PASSWORD}".encode()).decode()
    commands = [
        f"EHLO client.example.org\r\nAUTH PLAIN {token}",
        f"MAIL FROM:<{ALICE}>",
        f"RCPT TO:<{OUTSIDER}>",
        "DATA",
    ]
    writer.write("".join(f"{command}\r\n" for command in commands).encode() + message() + b".\r\nQUIT\r\n")
    writer.write_eof()
    received = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    await writer.wait_closed()
    assert b"250 2.0.0 Ok: queued as " in received
    assert received.endswith(b"221 2.0.0 Bye\r\n")
    assert len(gateway.stored()) == 1


async def test_internal_error_while_reading_data_closes_the_connection(
    gateway: RunningGateway, raw_clients: Connect, monkeypatch: pytest.MonkeyPatch
) -> None:
    # After a failure in the middle of DATA the rest of the message must not be taken for commands.
    def broken(self: object, buffer: bytearray) -> bool:
        raise RuntimeError("reader bug")

    client = await raw_session(raw_clients, gateway)
    await send_envelope(client)
    monkeypatch.setattr("gateway.intake.dataread.DataReader.consume", broken)
    await client.send(message(body=f"MAIL FROM:<{ALICE}>\r\nRCPT TO:<{OUTSIDER}>\r\n") + b".\r\n")
    assert (await client.reply()).startswith("451 4.3.0 ")
    assert await client.reader.read() == b""
    assert gateway.stored() == []


async def test_refusals_before_the_policy_are_recorded_for_the_audit_trail(
    start_gateway: StartGateway,
) -> None:
    """Every decision reaches the audit trail, including those the SMTP layer makes itself."""
    screener = RecordingScreener()
    running = await start_gateway(screener=screener)
    smtp = await running.logged_in()
    cases = {
        "MALFORMED_MESSAGE": b"From: " + OUTSIDER.encode() + b"\r\n" + message(),
        "HEADER_ADDRESS_NOT_MEMBER": message(sender=BOB),
    }
    for reason, content in cases.items():
        await smtp.mail(ALICE)
        await smtp.rcpt(OUTSIDER)
        with pytest.raises(aiosmtplib.SMTPDataError) as refused:
            await smtp.data(content)
        assert refused.value.code == 550, reason
    await smtp.quit()
    assert [(code, reason) for _id, code, _status, reason in screener.intake_refusals] == [
        (550, "MALFORMED_MESSAGE"),
        (550, "HEADER_ADDRESS_NOT_MEMBER"),
    ]
    assert screener.seen == []  # the policy never saw them


async def test_an_intake_refusal_that_cannot_be_recorded_is_deferred(start_gateway: StartGateway) -> None:
    class UnrecordableScreener(RecordingScreener):
        def refused_at_intake(self, submission: Submission, reply: Reply, reason: str) -> Disposition:
            raise RuntimeError("audit trail unavailable")

    running = await start_gateway(screener=UnrecordableScreener())
    smtp = await running.logged_in()
    await smtp.mail(ALICE)
    await smtp.rcpt(OUTSIDER)
    with pytest.raises(aiosmtplib.SMTPDataError) as deferred:
        await smtp.data(message(sender=BOB))
    await smtp.quit()
    assert deferred.value.code == 451


async def test_decisions_are_flushed_before_the_client_hears_of_them(start_gateway: StartGateway) -> None:
    """A screener that batches its audit writes is flushed before every reply it decided."""

    class BatchingScreener(RecordingScreener):
        flushed_at: list[int]

        def flush_decisions(self) -> None:
            self.flushed_at.append(len(self.seen))

    screener = BatchingScreener()
    screener.flushed_at = []
    running = await start_gateway(screener=screener)
    smtp = await running.logged_in()
    errors, _ = await smtp.sendmail(ALICE, [OUTSIDER], message())
    assert errors == {}
    screener.refuse = Reply(550, "5.7.1", ("Not sent.",))
    with pytest.raises(aiosmtplib.SMTPResponseException):
        await smtp.sendmail(ALICE, [OUTSIDER], message())
    await smtp.quit()
    assert screener.flushed_at == [1, 2]  # after the acceptance, and before the refusal


async def test_a_refusal_whose_record_cannot_be_flushed_is_deferred(start_gateway: StartGateway) -> None:
    class UnflushableScreener(RecordingScreener):
        def flush_decisions(self) -> None:
            raise OSError(5, "Input/output error")

    running = await start_gateway(screener=UnflushableScreener(refuse=Reply(550, "5.7.1", ("No.",))))
    smtp = await running.logged_in()
    await smtp.mail(ALICE)
    await smtp.rcpt(OUTSIDER)
    with pytest.raises(aiosmtplib.SMTPDataError) as deferred:
        await smtp.data(message())
    await smtp.quit()
    assert deferred.value.code == 451


async def test_the_gateways_own_screener_batches_its_audit_trail_and_is_flushed(
    start_gateway: StartGateway, tmp_path: Path
) -> None:
    """serve's screener appends without fsync; the SMTP layer must flush it before each answer."""
    from gateway.app import build_screener

    shipped = Path(__file__).resolve().parents[2] / "gateway" / "data" / "default-policy.yaml"
    screener = build_screener(make_settings(tmp_path / "policy", policy={"path": str(shipped)}))
    try:
        assert screener.audit.deferred  # type: ignore[attr-defined]
        running = await start_gateway(screener=screener)
        smtp = await running.logged_in()
        await smtp.mail(ALICE)
        await smtp.rcpt(OUTSIDER)
        with contextlib.suppress(aiosmtplib.SMTPDataError):  # whatever the verdict, it is recorded
            await smtp.data(message())
        await smtp.quit()
        assert screener.audit.last_seq == 1  # type: ignore[attr-defined]
        assert not screener.audit.unflushed  # type: ignore[attr-defined]
    finally:
        await screener.stop()  # its policy workers, started for the first message, are ours to stop
        screener.close()  # type: ignore[attr-defined]


class OffLoopScreener(RecordingScreener):
    """Lets the SMTP layer record acceptances on the spool's I/O thread (as the policy screener does
    for everything but holds and review decisions); notes where and when each step ran."""

    def __init__(self, gateway_spool: Path, *, off_loop: bool = True) -> None:
        super().__init__()
        self.spool_root = gateway_spool
        self.off_loop = off_loop
        self.steps: list[tuple[str, str, bool]] = []  # (step, thread name, message already queued)
        self.fail_record = False

    async def decide(self, submission: Submission) -> Disposition:
        decided = await super().decide(submission)
        # A hold's records are written on the event loop (the review store belongs to its thread).
        return decided if self.off_loop else dataclasses.replace(decided, hold=submission.queue_id)

    def accepted(self, queue_id: str) -> None:
        stored = (self.spool_root / "incoming" / queue_id).is_file()
        self.steps.append(("accepted", threading.current_thread().name, stored))
        if self.fail_record:
            raise RuntimeError("audit trail unavailable")
        super().accepted(queue_id)

    def flush_decisions(self) -> None:
        queued = any((self.spool_root / "incoming").iterdir())
        self.steps.append(("flush", threading.current_thread().name, queued))


async def test_an_acceptance_is_recorded_and_flushed_in_the_batch_that_stores_it(
    start_gateway: StartGateway, tmp_path: Path
) -> None:
    screener = OffLoopScreener(tmp_path / "spool")
    gateway = await start_gateway(screener=screener)
    smtp = await gateway.logged_in()
    errors, _ = await smtp.sendmail(ALICE, [OUTSIDER], message())
    # Recorded and flushed before the client heard 250: the steps are all there when it has, and
    # both ran before the message was renamed into the queue (flushed together with its data).
    assert errors == {}
    assert [(step, queued) for step, _thread, queued in screener.steps] == [
        ("accepted", False),
        ("flush", False),
    ]
    assert all(thread != threading.current_thread().name for _step, thread, _ in screener.steps)
    assert screener.recorded == [gateway.stored()[0].envelope.queue_id]
    # One batch for the message and its record: one folder fsync, not a second batch for the flush.
    assert gateway.spool.statistics().directory_syncs_total == 1
    await smtp.quit()


async def test_an_acceptance_the_screener_keeps_on_the_loop_is_recorded_there(
    start_gateway: StartGateway, tmp_path: Path
) -> None:
    screener = OffLoopScreener(tmp_path / "spool", off_loop=False)
    gateway = await start_gateway(screener=screener)
    smtp = await gateway.logged_in()
    errors, _ = await smtp.sendmail(ALICE, [OUTSIDER], message())
    await smtp.quit()
    assert errors == {}
    accepted_on = [thread for step, thread, _ in screener.steps if step == "accepted"]
    assert accepted_on == [threading.current_thread().name]  # the event loop's (the test's) thread
    assert [step for step, _, _ in screener.steps] == ["accepted", "flush"]


async def test_an_acceptance_with_an_essential_extra_is_recorded_after_everything_is_stored(
    start_gateway: StartGateway, tmp_path: Path
) -> None:
    class EssentialExtraScreener(OffLoopScreener):
        def screen(self, submission: Submission) -> Accept | Reply:
            self.seen.append(submission)
            request = Outgoing(f"{submission.queue_id}R", "", (ALICE,), b"Subject: r\r\n\r\nr\r\n", True)
            return Accept(content=submission.content, rcpt_tos=submission.rcpt_tos, extra=(request,))

    screener = EssentialExtraScreener(tmp_path / "spool")
    gateway = await start_gateway(screener=screener)
    smtp = await gateway.logged_in()
    errors, _ = await smtp.sendmail(ALICE, [OUTSIDER], message())
    await smtp.quit()
    assert errors == {}
    assert next((step, thread) for step, thread, _ in screener.steps) == (
        "accepted",
        threading.current_thread().name,
    )
    assert len(gateway.stored()) == 2


async def test_an_acceptance_whose_record_fails_in_the_batch_is_logged_and_still_queued(
    start_gateway: StartGateway, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    screener = OffLoopScreener(tmp_path / "spool")
    screener.fail_record = True
    gateway = await start_gateway(screener=screener)
    smtp = await gateway.logged_in()
    with caplog.at_level(logging.ERROR, logger="gateway.intake.smtp"):
        errors, response = await smtp.sendmail(ALICE, [OUTSIDER], message())
    await smtp.quit()
    assert errors == {}
    assert "queued" in response.lower()
    assert len(gateway.stored()) == 1  # on disk and will be delivered: a 4xx would make a duplicate
    assert any("smtp.record_failed" in r.getMessage() for r in caplog.records)
    assert [step for step, _, _ in screener.steps] == ["accepted", "flush"]


def shared_flush_of(root: Path, flush: Callable[[], None]) -> Callable[[], Awaitable[None]]:
    """The flush concurrent transactions share (``CommitState.shared_flush``), on a real spool."""
    shared = CommitState.of(Spool(root), DecisionStores(audit=_Flushing(flush))).shared_flush
    assert shared is not None
    return shared


@dataclass
class _Flushing:
    """An audit trail that only flushes (with ``flush``)."""

    flush: Callable[[], None]

    def record_decision(self, record: object) -> None:
        raise AssertionError("nothing is recorded here")


async def test_concurrent_transactions_share_flushes_and_each_waits_for_one_that_covers_it(
    tmp_path: Path,
) -> None:
    written: list[int] = []  # what each transaction wrote before asking for a flush
    durable: set[int] = set()
    runs = 0
    release = threading.Event()

    def flush() -> None:
        nonlocal runs
        runs += 1
        covered = list(written)  # a run covers what was written before it started
        release.wait(5)
        durable.update(covered)

    shared = shared_flush_of(tmp_path, flush)

    async def transaction(number: int) -> None:
        written.append(number)
        await shared()
        assert number in durable  # never answered before its own records are durable

    first = [asyncio.create_task(transaction(n)) for n in range(10)]
    await asyncio.sleep(0.05)  # the first run is under way, blocked
    later = [asyncio.create_task(transaction(n)) for n in range(10, 20)]  # must wait for a second run
    await asyncio.sleep(0.05)
    release.set()
    await asyncio.gather(*first, *later)
    assert durable == set(range(20))
    assert runs == 2


async def test_a_failed_flush_fails_its_waiters_only_and_the_next_run_is_tried_afresh(tmp_path: Path) -> None:
    runs = 0
    release = threading.Event()

    def flush() -> None:
        nonlocal runs
        runs += 1
        if runs == 1:
            release.wait(5)  # holds the first run, so the next two waiters share the second
        elif runs == 2:
            raise OSError(5, "Input/output error")

    shared = shared_flush_of(tmp_path, flush)
    first = asyncio.ensure_future(shared())
    await asyncio.sleep(0.05)
    failing = [asyncio.ensure_future(shared()) for _ in range(2)]
    await asyncio.sleep(0.05)
    release.set()
    await first  # the run before is unaffected
    results = await asyncio.gather(*failing, return_exceptions=True)
    assert [type(result) for result in results] == [OSError, OSError]
    await shared()  # the next run succeeds
    assert runs == 3


async def test_a_cancelled_waiter_does_not_cancel_the_flush_the_others_wait_for(tmp_path: Path) -> None:
    release = threading.Event()
    runs = 0

    def flush() -> None:
        nonlocal runs
        runs += 1
        release.wait(5)

    shared = shared_flush_of(tmp_path, flush)
    running = asyncio.ensure_future(shared())  # under way: the next two share the run after it
    await asyncio.sleep(0.05)
    leaving = asyncio.create_task(shared())
    staying = asyncio.create_task(shared())
    await asyncio.sleep(0.05)
    leaving.cancel()
    release.set()
    await asyncio.gather(running, staying)
    assert leaving.cancelled() and runs == 2


async def test_commands_keep_a_session_alive_and_the_idle_timeout_counts_from_the_last_one(
    start_gateway: StartGateway, raw_clients: Connect
) -> None:
    gateway = await start_gateway(limits={"command_timeout": 0.3})
    client = await raw_clients(gateway.submission)  # the greeting is read
    loop = asyncio.get_running_loop()
    for _ in range(6):  # 0.9 s of activity: three timeouts' worth
        await asyncio.sleep(0.15)
        await client.send(b"NOOP\r\n")
        assert (await client.reply()).startswith("250")
    last_command = loop.time()
    assert (await client.reply()).startswith("421 4.4.2")
    waited = loop.time() - last_command
    assert 0.25 <= waited < 0.6
