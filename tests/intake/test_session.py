"""The submission session without a socket: bytes in, reply bytes and events out."""

from __future__ import annotations

import base64

import pytest

from gateway import replies
from gateway.intake.admission import AdmissionLimits, Limit
from gateway.intake.events import AUTH_LINE_LIMIT, COMMAND_LINE_LIMIT, MAX_ERRORS, NEED_DATA, PAUSED, StartTls
from gateway.intake.session import Session
from tests.intake.session_driver import (
    ALICE,
    HOSTNAME,
    MEMBER,
    OUTSIDER,
    PASSWORD,
    Driver,
    FakeHost,
    Seen,
    logged_in,
    message,
    new_session,
    pipelined,
    plain_token,
)


def envelope(driver: Driver) -> None:
    assert driver.say(f"MAIL FROM:<{ALICE}>").startswith("250 2.1.0")
    assert driver.say(f"RCPT TO:<{OUTSIDER}>").startswith("250 2.1.5")
    assert driver.say("DATA").startswith("354 ")


# --- greeting, EHLO, TLS and AUTH ---------------------------------------------------------------------


def test_the_greeting_comes_first_and_ehlo_lists_the_extensions_of_a_plaintext_listener() -> None:
    driver = Driver(new_session(implicit_tls=False))
    (greeting,) = driver.transcript.replies
    assert greeting.startswith(f"220 {HOSTNAME} ")
    driver.say("EHLO client.example.org")
    extensions = [line[4:] for line in driver.transcript.replies[2:]]
    assert "STARTTLS" in extensions and "ENHANCEDSTATUSCODES" in extensions
    assert not any(extension.startswith("AUTH") for extension in extensions)


def test_implicit_tls_offers_auth_and_no_starttls() -> None:
    driver = Driver(new_session(implicit_tls=True))
    driver.say("EHLO client.example.org")
    extensions = [line[4:] for line in driver.transcript.replies[2:]]
    assert "AUTH PLAIN LOGIN" in extensions and "STARTTLS" not in extensions
    assert driver.say(f"AUTH PLAIN {plain_token()}").startswith("235 2.7.0")
    assert driver.transcript.events == [Seen("credentials", (MEMBER, PASSWORD, "PLAIN"))]


def test_auth_is_refused_without_tls_and_mail_needs_starttls_first() -> None:
    driver = Driver(new_session(implicit_tls=False))
    driver.say("EHLO client.example.org")
    assert driver.say(f"AUTH PLAIN {plain_token()}").startswith("538 5.7.11")
    assert driver.say(f"MAIL FROM:<{ALICE}>").startswith("530 5.7.0 Must issue a STARTTLS")
    assert driver.transcript.events == []


def test_plaintext_auth_when_the_loopback_exception_applies() -> None:
    driver = Driver(new_session(implicit_tls=False, plaintext_auth=True))
    driver.say("EHLO client.example.org")
    assert driver.say(f"AUTH PLAIN {plain_token()}").startswith("235 2.7.0")


def test_starttls_drops_what_was_pipelined_in_plaintext_and_forgets_the_session() -> None:
    driver = Driver(new_session(implicit_tls=False, plaintext_auth=True))
    driver.say("EHLO client.example.org")
    driver.say(f"AUTH PLAIN {plain_token()}")
    session = driver.session
    session.receive_data(pipelined(["STARTTLS", "EHLO evil.example.org", f"AUTH PLAIN {plain_token()}"]), 1.0)
    assert isinstance(session.next_event(), StartTls)
    assert session.data_to_send() == b"220 2.0.0 Ready to start TLS\r\n"  # nothing for the EHLO or AUTH
    session.receive_data(b"RSET\r\n", 1.0)  # plaintext arriving before the switch: never read
    assert session.next_event() is PAUSED
    session.tls_began()
    session.receive_data(b"NOOP\r\n", 1.0)
    assert session.next_event() is NEED_DATA
    assert session.data_to_send() == b"250 2.0.0 Ok\r\n"
    assert session.member is None and session.host_name is None
    session.receive_data(f"MAIL FROM:<{ALICE}>\r\n".encode(), 1.0)
    session.next_event()
    assert session.data_to_send().startswith(b"503 5.5.1 Send EHLO first")


def test_a_second_starttls_and_starttls_on_implicit_tls_are_refused() -> None:
    driver = Driver(new_session(implicit_tls=False))
    driver.say("EHLO client.example.org")
    assert driver.say("STARTTLS").startswith("220 2.0.0")
    assert driver.say("STARTTLS").startswith("503 5.5.1 TLS is already active")
    implicit = Driver(new_session(implicit_tls=True))
    assert implicit.say("STARTTLS").startswith("503 5.5.1 TLS is already active")


def test_auth_login_with_challenges() -> None:
    driver = Driver(new_session())
    driver.say("EHLO client.example.org")
    assert driver.say("AUTH LOGIN") == "334 VXNlcm5hbWU6"
    assert driver.say(base64.b64encode(MEMBER.encode())) == "334 UGFzc3dvcmQ6"
    assert driver.say(base64.b64encode(PASSWORD.encode())).startswith("235 2.7.0")
    assert driver.session.member == MEMBER


@pytest.mark.parametrize(
    ("exchange", "expected"),
    [
        pytest.param(["AUTH PLAIN", "*"], "501 5.7.0", id="cancelled"),
        pytest.param(["AUTH PLAIN", "not base64!"], "501 5.5.2", id="bad-base64"),
        pytest.param(
            ["AUTH PLAIN " + base64.b64encode(b"only-one-part").decode()], "501 5.5.2", id="bad-plain"
        ),
        pytest.param(["AUTH PLAIN", "A" * (AUTH_LINE_LIMIT + 10)], "500 5.5.6", id="overlong-response"),
        pytest.param(["AUTH CRAM-MD5"], "504 5.5.4", id="unknown-mechanism"),
        pytest.param([f"AUTH PLAIN {plain_token(password='wrong')}"], "535 5.7.8", id="wrong-password"),
        pytest.param(
            ["AUTH PLAIN " + base64.b64encode(f"bob\0{MEMBER}\0{PASSWORD}".encode()).decode()],
            "535 5.7.8",
            id="foreign-authzid",
        ),
    ],
)
def test_malformed_auth_exchanges_get_5xx_and_the_session_continues(
    exchange: list[str], expected: str
) -> None:
    driver = Driver(new_session())
    driver.say("EHLO client.example.org")
    for line in exchange:
        last = driver.say(line)
    assert last.startswith(expected)
    assert driver.say("NOOP") == "250 2.0.0 Ok"
    assert driver.session.member is None


def test_the_third_failed_login_ends_the_connection() -> None:
    host = FakeHost()
    driver = Driver(new_session(host, limits=AdmissionLimits(auth_failures_per_connection=3)))
    driver.say("EHLO client.example.org")
    for _ in range(2):
        assert driver.say(f"AUTH PLAIN {plain_token(password='wrong')}").startswith("535 5.7.8")
    assert driver.say(f"AUTH PLAIN {plain_token(password='wrong')}").startswith("421 4.7.0")
    assert driver.transcript.closed and host.limits == [Limit.AUTH_FAILURES] and host.failed_logins == 3


def test_a_throttled_client_cannot_even_try() -> None:
    driver = Driver(new_session(FakeHost(throttled=True)))
    driver.say("EHLO client.example.org")
    assert driver.say(f"AUTH PLAIN {plain_token()}").startswith("454 4.7.0")
    assert driver.transcript.events == []


def test_a_login_over_the_session_cap_gets_421_and_closes() -> None:
    host = FakeHost(session_limit=Limit.TOO_MANY_SESSIONS)
    driver = Driver(new_session(host))
    driver.say("EHLO client.example.org")
    assert driver.say(f"AUTH PLAIN {plain_token()}").startswith("421 4.7.0")
    assert driver.transcript.closed and driver.session.member is None


# --- commands -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "line",
    [
        pytest.param(b"NOOP\rRSET\r\n", id="bare-cr"),
        pytest.param(b"NO\0OP\r\n", id="nul"),
    ],
)
def test_bare_cr_and_nul_in_a_command_are_refused(line: bytes) -> None:
    driver = Driver(new_session())
    assert driver.say(line).startswith("500 5.5.2 Command contains characters")


def test_an_overlong_command_line_is_skipped_whole_and_the_session_continues() -> None:
    driver = Driver(new_session())
    long_line = b"NOOP " + b"x" * (AUTH_LINE_LIMIT + 100)
    # In pieces, as it would arrive: the session never keeps more than the limit.
    driver.feed(long_line[:5000], long_line[5000:20000], long_line[20000:] + b"\r\nNOOP\r\n")
    assert driver.transcript.replies[1:] == ["500 5.5.2 Command line too long", "250 2.0.0 Ok"]
    assert driver.say(b"NOOP " + b"x" * COMMAND_LINE_LIMIT).startswith("500 5.5.2 Command line too long")


def test_too_many_errors_close_the_connection() -> None:
    host = FakeHost()
    driver = Driver(new_session(host))
    driver.feed(pipelined(["BOGUS"] * (MAX_ERRORS + 5)))
    got = driver.transcript.replies[1:]
    assert got[: MAX_ERRORS - 1] == ["500 5.5.2 Command not recognized"] * (MAX_ERRORS - 1)
    assert got[MAX_ERRORS - 1 :] == [str(replies.TOO_MANY_ERRORS)]
    assert driver.transcript.closed and host.limits == [Limit.TOO_MANY_ERRORS]


def test_commands_before_login_are_budgeted() -> None:
    host = FakeHost()
    driver = Driver(new_session(host, limits=AdmissionLimits(commands_before_login=3)))
    driver.feed(pipelined(["NOOP"] * 5))
    assert driver.transcript.replies[1:] == ["250 2.0.0 Ok"] * 3 + [
        str(replies.TOO_MANY_COMMANDS_BEFORE_LOGIN)
    ]
    assert host.limits == [Limit.COMMANDS_BEFORE_LOGIN]


def test_a_stopping_service_ends_the_session_between_transactions_only() -> None:
    host = FakeHost()
    driver = logged_in(new_session(host))
    assert driver.say(f"MAIL FROM:<{ALICE}>").startswith("250")
    host.is_stopping = True
    assert driver.say(f"RCPT TO:<{OUTSIDER}>").startswith("250")  # the transaction goes on
    driver.say("DATA")
    driver.feed(message() + b".\r\n")
    assert driver.transcript.replies[-2:] == [str(QUEUED_LINE), str(replies.SHUTTING_DOWN)]
    assert driver.transcript.closed


QUEUED_LINE = replies.queued("TESTQUEUEID")


def test_mail_checks_the_sender_the_size_and_free_space() -> None:
    host = FakeHost()
    driver = logged_in(new_session(host, max_message_size=1000))
    assert driver.say(f"MAIL FROM:<{OUTSIDER}>").startswith("553 5.7.1")
    assert driver.say(f"MAIL FROM:<{ALICE}> SIZE=5000").startswith("552 5.3.4")
    assert driver.say(f"MAIL FROM:<{ALICE}> BODY=BINARYMIME").startswith("501 5.5.4")
    assert driver.say(f"MAIL FROM:<{ALICE}> FOO=bar").startswith("555 5.5.4")
    host.no_room = replies.INSUFFICIENT_STORAGE
    assert driver.say(f"MAIL FROM:<{ALICE}>").startswith("452 4.3.1")


def test_non_ascii_addresses_need_smtputf8() -> None:
    driver = logged_in(new_session(FakeHost(addresses=frozenset({ALICE, "zoë@example.org"}))))
    assert driver.say("MAIL FROM:<zoë@example.org>").startswith("553 5.6.7")
    assert driver.say("MAIL FROM:<zoë@example.org> SMTPUTF8").startswith("250 2.1.0")
    assert driver.say("RCPT TO:<renée@example.net>").startswith("250 2.1.5")


def test_an_internal_error_in_a_command_is_a_451_without_python_text() -> None:
    driver = logged_in(new_session(FakeHost(broken_addresses=True)))
    reply = driver.say(f"MAIL FROM:<{ALICE}>")
    assert reply == str(replies.INTERNAL_ERROR) and "Jane" not in reply
    assert driver.say("NOOP") == "250 2.0.0 Ok"


def test_quit_says_bye_and_closes() -> None:
    driver = Driver(new_session())
    assert driver.say("QUIT") == "221 2.0.0 Bye"
    assert driver.transcript.closed


def test_the_end_of_input_in_the_middle_of_a_line_closes_without_a_reply() -> None:
    driver = Driver(new_session())
    driver.feed(b"NOO")
    driver.end()
    assert len(driver.transcript.replies) == 1 and driver.transcript.closed  # the greeting only


# --- DATA -------------------------------------------------------------------------------------------------


def test_a_transaction_hands_the_unstuffed_message_to_the_shell_and_sends_its_reply() -> None:
    driver = logged_in()
    envelope(driver)
    driver.feed(message(body="..a line starting with a dot\r\n") + b".\r\n")
    (received,) = driver.messages
    assert received.member == MEMBER and received.mail_from == ALICE and received.rcpt_tos == (OUTSIDER,)
    assert received.data.content == message(body=".a line starting with a dot\r\n")
    assert driver.transcript.replies[-1] == str(QUEUED_LINE)
    assert driver.say("RCPT TO:<someone@example.net>").startswith("503 5.5.1 Send MAIL first")


def test_a_pipelined_transaction_in_one_write() -> None:
    driver = logged_in()
    driver.feed(
        pipelined([f"MAIL FROM:<{ALICE}>", f"RCPT TO:<{OUTSIDER}>", "DATA"]) + message() + b".\r\nQUIT\r\n"
    )
    assert [line[:3] for line in driver.transcript.replies[-5:]] == ["250", "250", "354", "250", "221"]
    assert len(driver.messages) == 1 and driver.transcript.closed


def test_data_is_never_read_as_commands_after_an_internal_error() -> None:
    driver = logged_in()
    envelope(driver)
    driver.session._reader.consume = _broken  # type: ignore[method-assign,union-attr]
    driver.feed(message(body=f"MAIL FROM:<{ALICE}>\r\n") + b".\r\n")
    assert driver.transcript.replies[-1] == str(replies.INTERNAL_ERROR)
    assert driver.transcript.closed and driver.messages == []


def _broken(buffer: bytearray) -> bool:
    raise RuntimeError("reader bug")


def test_a_message_over_the_size_limit_is_read_to_its_end_and_marked() -> None:
    driver = logged_in(max_message_size=100)
    envelope(driver)
    driver.feed(message(body="x" * 500 + "\r\n") + b".\r\nNOOP\r\n")
    (received,) = driver.messages
    assert received.data.too_big and received.data.content is None
    assert driver.transcript.replies[-1] == "250 2.0.0 Ok"


def test_a_failure_while_deciding_is_a_451_and_the_session_goes_on() -> None:
    session = logged_in().session
    session.receive_data(pipelined([f"MAIL FROM:<{ALICE}>", f"RCPT TO:<{OUTSIDER}>", "DATA"]), 1.0)
    session.next_event()
    session.receive_data(message() + b".\r\n", 1.0)
    event = session.next_event()
    assert session.in_data and not session.waiting_for_command
    session.data_to_send()
    session.failed(RuntimeError("Jane Doe's words"))
    assert session.data_to_send() == f"{replies.INTERNAL_ERROR}\r\n".encode()
    assert event is not NEED_DATA and not session.in_data and session.waiting_for_command


def test_the_data_rate_clock_counts_the_bytes_that_arrive_during_data() -> None:
    session: Session = logged_in().session
    session.receive_data(pipelined([f"MAIL FROM:<{ALICE}>", f"RCPT TO:<{OUTSIDER}>", "DATA"]), 5.0)
    session.next_event()
    assert session.clock.data_started == 5.0
    session.receive_data(b"x" * 1000, 6.0)
    assert session.clock.data_received == 1000
    session.receive_data(b"\r\n.\r\n", 7.0)
    session.next_event()
    session.message_answered(QUEUED_LINE)
    assert session.clock.data_started is None
