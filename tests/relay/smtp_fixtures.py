"""Helpers for the SMTP intake tests: certificates, accounts, a running SubmissionService, a raw client.

Import the fixtures you use into a test module (``from tests.relay.smtp_fixtures import gateway``);
they are not in a conftest because tests/relay/conftest.py belongs to the delivery tests.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest
import trustme
from argon2 import PasswordHasher

from gateway.decision import disposition
from gateway.decision.commit import DecisionStores
from gateway.decision.disposition import Disposition
from gateway.decision.screening import Accept, PassThrough, Screener, Submission
from gateway.intake.smtp import SubmissionService
from gateway.replies import Reply
from gateway.settings import GatewaySettings
from gateway.state.accounts import Accounts
from gateway.state.audit import DecisionRecord
from gateway.state.spool import FollowUp, QueueState, Spool, SpoolMessage

HOSTNAME = "mail.example.org"
PASSWORD = "correct horse battery staple"
ALICE = "alice@example.org"
ALICE_ALIAS = "a.smith@example.org"
BOB = "bob@example.org"
OUTSIDER = "reported.party@example.net"
# Cheap parameters keep the suite fast; verification reads the parameters from each hash anyway.
FAST_HASHER = PasswordHasher(time_cost=1, memory_cost=64, parallelism=1)


def message(
    sender: str = ALICE, to: str = OUTSIDER, subject: str = "Hello", body: str = "Hi there.\r\n", **extra: str
) -> bytes:
    """A small, well-formed message with CRLF line endings."""
    headers = {"From": sender, "To": to, "Subject": subject, "Date": "Mon, 24 Nov 2025 10:00:00 +0000"}
    headers["Message-ID"] = "<test-1@example.org>"
    headers.update({key.replace("_", "-"): value for key, value in extra.items()})
    head = "".join(f"{key}: {value}\r\n" for key, value in headers.items())
    return (head + "\r\n" + body).encode()


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def server_tls(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(HOSTNAME, "localhost", "127.0.0.1").configure_cert(context)
    return context


@pytest.fixture
def client_tls(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


def write_users(path: Path) -> Accounts:
    accounts = Accounts.load(path, hasher=FAST_HASHER)
    accounts.add(ALICE, PASSWORD, aliases=[ALICE_ALIAS])
    accounts.add(BOB, PASSWORD)
    return Accounts.load(path, hasher=FAST_HASHER)


def make_settings(tmp_path: Path, **sections: dict[str, Any]) -> GatewaySettings:
    """Settings with both listeners on free loopback ports; ``sections`` override keys per section."""
    data: dict[str, Any] = {
        "state_dir": str(tmp_path / "state"),
        "server": {
            "hostname": HOSTNAME,
            "submission": {"host": "127.0.0.1", "port": 0},
            "submissions": {"host": "127.0.0.1", "port": 0},
        },
        "auth": {"users_file": str(tmp_path / "users.passwd")},
    }
    for section, values in sections.items():
        data.setdefault(section, {}).update(values)
    return GatewaySettings.model_validate(data)


class SlowSpool(Spool):
    """A real spool whose commits first wait ``delay`` seconds; ``started`` is set when one begins."""

    def __init__(self, root: Path, delay: float) -> None:
        super().__init__(root)
        self.delay = delay
        self.started = asyncio.Event()

    async def commit(self, envelope: Any, content: bytes, follow_up: FollowUp | None = None) -> None:
        self.started.set()
        await asyncio.sleep(self.delay)
        await super().commit(envelope, content, follow_up)


class RecordingTrail:
    """A fake audit trail: each record reaches its screener's ``accepted``; ``flush`` its
    ``flush_decisions`` (the steps the tests watch)."""

    def __init__(self, screener: RecordingScreener) -> None:
        self.screener = screener

    def record_decision(self, record: DecisionRecord) -> None:
        self.screener.accepted(record.queue_id)

    def flush(self) -> None:
        self.screener.flush_decisions()


class RecordingHolds:
    """A fake review desk: undone holds are noted on the screener."""

    def __init__(self, screener: RecordingScreener) -> None:
        self.screener = screener

    def confirm(self, key: str) -> None:
        return None

    def undo(self, key: str) -> None:
        self.screener.not_stored(key)


@dataclass
class RecordingScreener(PassThrough):
    """Accepts (or refuses with ``refuse``) and remembers what it saw and what was recorded."""

    refuse: Reply | None = None
    seen: list[Submission] = field(default_factory=list)
    recorded: list[str] = field(default_factory=list)
    intake_refusals: list[tuple[str, int, str, str]] = field(default_factory=list)

    def screen(self, submission: Submission) -> Accept | Reply:
        self.seen.append(submission)
        if self.refuse is not None:
            return self.refuse
        return Accept(content=submission.content, rcpt_tos=submission.rcpt_tos)

    async def decide(self, submission: Submission) -> Disposition:
        verdict = self.screen(submission)
        if not isinstance(verdict, Accept):
            return disposition.refused(verdict)
        record = DecisionRecord(
            submission.queue_id, submission.authenticated_as, verdict.verdict, "250", "test"
        )
        return disposition.acceptance(submission, verdict, audit=(record,))

    @property
    def stores(self) -> DecisionStores:
        return DecisionStores(audit=RecordingTrail(self), holds=RecordingHolds(self))

    def accepted(self, queue_id: str) -> None:
        self.recorded.append(queue_id)

    def not_stored(self, queue_id: str) -> None:
        return None

    def flush_decisions(self) -> None:
        return None

    def refused_at_intake(self, submission: Submission, reply: Reply, reason: str) -> Disposition:
        self.intake_refusals.append((submission.queue_id, reply.code, reply.status, reason))
        return disposition.refused(reply)


@dataclass
class RunningGateway:
    service: SubmissionService
    spool: Spool
    accounts: Accounts
    settings: GatewaySettings
    client_tls: ssl.SSLContext

    @property
    def submission(self) -> tuple[str, int]:
        return self.service.addresses["submission"]

    @property
    def submissions(self) -> tuple[str, int]:
        return self.service.addresses["submissions"]

    def client(self, *, implicit_tls: bool = False, **options: Any) -> aiosmtplib.SMTP:
        host, port = self.submissions if implicit_tls else self.submission
        options.setdefault("start_tls", False)
        return aiosmtplib.SMTP(
            hostname=host,
            port=port,
            use_tls=implicit_tls,
            tls_context=self.client_tls,
            timeout=10,
            **options,
        )

    async def logged_in(
        self, *, implicit_tls: bool = False, user: str = ALICE, password: str = PASSWORD, **options: Any
    ) -> aiosmtplib.SMTP:
        """A connected client that did STARTTLS (unless implicit) and AUTH PLAIN."""
        smtp = self.client(implicit_tls=implicit_tls, **options)
        await smtp.connect()
        if not implicit_tls:
            await smtp.starttls()
        await smtp.ehlo()
        await smtp.auth_plain(user, password)
        return smtp

    def stored(self) -> list[SpoolMessage]:
        """Messages in the spool's incoming folder, oldest first."""
        entries = sorted(self.spool.entries(QueueState.INCOMING), key=lambda entry: entry.queue_id)
        return [self.spool.load(entry.queue_id) for entry in entries]


StartGateway = Callable[..., Awaitable[RunningGateway]]


@pytest.fixture
async def start_gateway(
    tmp_path: Path, server_tls: ssl.SSLContext, client_tls: ssl.SSLContext
) -> AsyncIterator[StartGateway]:
    """Factory: ``await start_gateway(limits={...}, screener=..., spool=...)`` -> RunningGateway."""
    services: list[SubmissionService] = []

    async def start(
        *, screener: Screener | None = None, spool: Spool | None = None, **sections: dict[str, Any]
    ) -> RunningGateway:
        settings = make_settings(tmp_path, **sections)
        accounts = write_users(settings.auth.users_file)
        spool = spool or Spool(tmp_path / "spool")
        service = SubmissionService(settings, spool, accounts, screener or PassThrough(), server_tls)
        services.append(service)
        await service.start()
        return RunningGateway(service, spool, accounts, settings, client_tls)

    yield start
    for service in services:
        await service.stop(0)


@pytest.fixture
async def gateway(start_gateway: StartGateway) -> RunningGateway:
    """A gateway with default settings and a pass-through screener."""
    return await start_gateway()


class RawClient:
    """A byte-level SMTP client for what aiosmtplib will not send (bare LF, smuggling, pipelining)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, address: tuple[str, int], tls: ssl.SSLContext | None = None) -> RawClient:
        host, port = address
        reader, writer = await asyncio.open_connection(
            host, port, ssl=tls, server_hostname=HOSTNAME if tls is not None else None
        )
        client = cls(reader, writer)
        greeting = await client.reply()
        assert greeting.startswith("220 "), greeting
        return client

    async def reply(self) -> str:
        """One whole (possibly multi-line) reply, lines joined with CRLF."""
        lines: list[str] = []
        while True:
            line = await asyncio.wait_for(self.reader.readline(), 10)
            if not line:
                raise ConnectionError("connection closed; replies so far: " + repr(lines))
            text = line.decode().rstrip("\r\n")
            lines.append(text)
            if len(text) < 4 or text[3] != "-":
                return "\r\n".join(lines)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def command(self, line: str | bytes) -> str:
        await self.send((line.encode() if isinstance(line, str) else line) + b"\r\n")
        return await self.reply()

    async def starttls(self, tls: ssl.SSLContext) -> None:
        assert (await self.command("STARTTLS")).startswith("220 ")
        await self.writer.start_tls(tls, server_hostname=HOSTNAME)

    async def login(self, tls: ssl.SSLContext | None, user: str = ALICE, password: str = PASSWORD) -> None:
        """EHLO, STARTTLS (if ``tls``), EHLO, AUTH PLAIN."""
        assert (await self.command("EHLO client.example.org")).startswith("250")
        if tls is not None:
            await self.starttls(tls)
            assert (await self.command("EHLO client.example.org")).startswith("250")
        token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
        reply = await self.command(f"AUTH PLAIN {token}")
        assert reply.startswith("235 "), reply

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            await self.writer.wait_closed()


@pytest.fixture
async def raw_clients() -> AsyncIterator[Callable[..., Awaitable[RawClient]]]:
    """Factory of RawClient connections, all closed at teardown."""
    opened: list[RawClient] = []

    async def connect(address: tuple[str, int], tls: ssl.SSLContext | None = None) -> RawClient:
        client = await RawClient.connect(address, tls)
        opened.append(client)
        return client

    yield connect
    for client in opened:
        await client.close()


async def close_quietly(smtp: aiosmtplib.SMTP) -> None:
    """QUIT if still connected, else just close; never raise (teardown helper)."""
    if smtp.is_connected:
        try:
            await smtp.quit()
        except aiosmtplib.SMTPException:
            smtp.close()
