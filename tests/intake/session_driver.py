"""Drive a submission ``Session`` without a socket: a fake host, canned answers, and a transcript."""

from __future__ import annotations

import base64
import itertools
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field

from gateway import replies
from gateway.intake.admission import AdmissionLimits, Limit, SessionClock
from gateway.intake.events import (
    CLOSED,
    NEED_DATA,
    CheckCredentials,
    Event,
    MessageReceived,
    SessionConfig,
    StartTls,
)
from gateway.intake.session import Session
from gateway.replies import Reply

HOSTNAME = "gateway.example.org"
MEMBER = "alice"
ALICE = "alice@example.org"
PASSWORD = "correct horse"
OUTSIDER = "someone@example.net"
QUEUED = replies.queued("TESTQUEUEID")


def plain_token(login: str = MEMBER, password: str = PASSWORD) -> str:
    return base64.b64encode(f"\0{login}\0{password}".encode()).decode()


def message(body: str = "Hello.\r\n", sender: str = ALICE) -> bytes:
    return f"From: {sender}\r\nTo: {OUTSIDER}\r\nSubject: A test\r\n\r\n{body}".encode()


@dataclass
class FakeHost:
    """A ``SessionHost`` with fixed answers that records what it was told."""

    addresses: frozenset[str] = frozenset({ALICE})
    is_stopping: bool = False
    no_room: Reply | None = None
    throttled: bool = False
    session_limit: Limit | None = None
    broken_addresses: bool = False
    limits: list[Limit] = field(default_factory=list)
    failed_logins: int = 0
    logins: list[str] = field(default_factory=list)

    def stopping(self) -> bool:
        return self.is_stopping

    def addresses_of(self, member: str) -> Collection[str]:
        if self.broken_addresses:
            raise RuntimeError("Jane Doe's accounts file")
        return self.addresses

    def storage_refusal(self, size: int | None) -> Reply | None:
        return self.no_room

    def auth_throttled(self) -> bool:
        return self.throttled

    def auth_failed(self, mechanism: str) -> None:
        self.failed_logins += 1

    def log_in(self, member: str, mechanism: str) -> Limit | None:
        if self.session_limit is not None:
            return self.session_limit
        self.logins.append(member)
        return None

    def limit_reached(self, limit: Limit) -> None:
        self.limits.append(limit)


def new_session(
    host: FakeHost | None = None,
    *,
    implicit_tls: bool = True,
    plaintext_auth: bool = False,
    limits: AdmissionLimits | None = None,
    max_message_size: int = 1_000_000,
    max_recipients: int = 50,
) -> Session:
    config = SessionConfig(
        hostname=HOSTNAME,
        client_address="192.0.2.10",
        max_message_size=max_message_size,
        max_recipients=max_recipients,
        tls_active=implicit_tls,
        starttls_available=not implicit_tls,
        plaintext_auth_allowed=plaintext_auth,
    )
    clock = SessionClock(limits or AdmissionLimits(commands_before_login=1000), opened_at=0.0)
    return Session(config, host or FakeHost(), clock)


@dataclass(frozen=True)
class Seen:
    """An event as a comparable value (a message by its envelope and content)."""

    kind: str
    detail: tuple[object, ...] = ()


def seen(event: Event) -> Seen:
    if isinstance(event, MessageReceived):
        data = event.data
        return Seen("message", (event.member, event.mail_from, event.rcpt_tos, data.content, data.too_big))
    if isinstance(event, CheckCredentials):
        return Seen("credentials", (event.login, event.password, event.mechanism))
    return Seen(type(event).__name__ if isinstance(event, StartTls) else str(event))


@dataclass
class Transcript:
    """Everything the session sent and every event it raised, in order."""

    sent: bytearray = field(default_factory=bytearray)
    events: list[Seen] = field(default_factory=list)
    closed: bool = False

    @property
    def replies(self) -> list[str]:
        """The reply lines sent (the greeting first)."""
        return self.sent.decode("utf-8", "replace").split("\r\n")[:-1]


class Driver:
    """Feeds a session chunk by chunk and answers its events at once, as a well-behaved shell would."""

    def __init__(self, session: Session, answer: Reply = QUEUED) -> None:
        self.session = session
        self.answer = answer
        self.transcript = Transcript()
        self.messages: list[MessageReceived] = []
        session.greet()
        self._pump()

    def feed(self, *chunks: bytes) -> Transcript:
        for chunk in chunks:
            if self.transcript.closed:
                break
            self.session.receive_data(chunk, 1.0)
            self._pump()
        return self.transcript

    def end(self) -> Transcript:
        return self.feed(b"")

    def say(self, line: str | bytes) -> str:
        """Send one line; the last reply line it got (or "" if none)."""
        before = len(self.transcript.replies)
        data = line.encode() if isinstance(line, str) else line
        self.feed(data if data.endswith(b"\n") else data + b"\r\n")
        got = self.transcript.replies[before:]
        return got[-1] if got else ""

    def _pump(self) -> None:
        session = self.session
        transcript = self.transcript
        while not transcript.closed:
            event = session.next_event()
            transcript.sent += session.data_to_send()
            if event is NEED_DATA:
                return
            if event is CLOSED:
                transcript.closed = True
                return
            transcript.events.append(seen(event))
            if isinstance(event, StartTls):
                session.tls_began()
            elif isinstance(event, CheckCredentials):
                session.credentials_checked(MEMBER if event.password == PASSWORD else None)
            elif isinstance(event, MessageReceived):
                self.messages.append(event)
                session.message_answered(self.answer)
            else:
                raise AssertionError(f"unexpected event {event!r}")


def logged_in(session: Session | None = None, **options: object) -> Driver:
    """A driver whose session has said EHLO and logged in (implicit TLS by default)."""
    driver = Driver(session or new_session(**options))  # type: ignore[arg-type]
    driver.say("EHLO client.example.org")
    assert driver.say(f"AUTH PLAIN {plain_token()}").startswith("235 2.7.0")
    return driver


def pipelined(lines: Iterable[str]) -> bytes:
    return "".join(f"{line}\r\n" for line in lines).encode()


def pieces(data: bytes, cuts: Iterable[int]) -> list[bytes]:
    """``data`` cut at the given offsets (taken modulo its length), as it might arrive from a socket."""
    edges = [0, *sorted(cut % (len(data) + 1) for cut in cuts), len(data)]
    return [data[start:end] for start, end in itertools.pairwise(edges) if end > start]
