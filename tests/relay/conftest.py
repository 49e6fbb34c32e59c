"""Fixtures for the spool and delivery tests: a spool, a capture upstream, a fake clock, a running worker."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trustme

from gateway.delivery.worker import DeliveryWorker
from gateway.settings import DeliverySettings, UpstreamSettings
from gateway.state.spool import Spool, SpoolEnvelope
from gateway.testing import CaptureUpstream

SENDER = "alice@example.org"
HOSTNAME = "gateway.example.org"

# Fast but not frantic: a deferred message is retried after 50 ms, at most every 200 ms.
FAST = {"initial_backoff": 0.05, "max_backoff": 0.2, "poll_interval": 0.02}


def message(subject: str = "Hello", body: str = "Hello there.", *, extra: str = "") -> bytes:
    """A small RFC 5322 message with CRLF line endings."""
    text = (
        f"From: Alice <{SENDER}>\r\n"
        "To: Bob <bob@example.org>\r\n"
        f"Subject: {subject}\r\n"
        "Message-ID: <original-1@example.org>\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: text/plain; charset="utf-8"\r\n'
        f"{extra}"
        "\r\n"
        f"{body}\r\n"
    )
    return text.encode("utf-8")


def envelope(
    queue_id: str | None = None,
    rcpt_tos: tuple[str, ...] = ("bob@example.org",),
    mail_from: str = SENDER,
    received_at: float | None = None,
) -> SpoolEnvelope:
    return SpoolEnvelope(
        queue_id=Spool.new_queue_id() if queue_id is None else queue_id,
        mail_from=mail_from,
        rcpt_tos=rcpt_tos,
        authenticated_as=mail_from,
        received_at=time.time() if received_at is None else received_at,
        client_address="127.0.0.1",
    )


@dataclass
class FakeClock:
    """A settable unix clock for backoff and expiry."""

    now: float

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(time.time())


@pytest.fixture
def spool(tmp_path: Path) -> Spool:
    return Spool(tmp_path / "state" / "spool")


@pytest.fixture(params=[False, True], ids=["one-command-at-a-time", "pipelining"])
async def upstream(request: pytest.FixtureRequest) -> AsyncIterator[CaptureUpstream]:
    """The upstream, once without and once with PIPELINING: every delivery outcome must be the same."""
    async with CaptureUpstream(pipelining=request.param) as server:
        yield server


def upstream_settings(server: CaptureUpstream, **overrides: Any) -> UpstreamSettings:
    values: dict[str, Any] = {"host": server.host, "port": server.port, "security": "none", "timeout": 5}
    values.update(overrides)
    return UpstreamSettings.model_validate(values)


def delivery_settings(upstream: UpstreamSettings | None = None, **overrides: Any) -> DeliverySettings:
    values: dict[str, Any] = {"upstream": upstream, **FAST}
    values.update(overrides)
    return DeliverySettings.model_validate(values)


@contextlib.asynccontextmanager
async def running(spool: Spool, settings: DeliverySettings, **options: Any) -> AsyncIterator[DeliveryWorker]:
    """Run a DeliveryWorker for the duration of the block; stop it and wait for it afterwards."""
    options.setdefault("hostname", HOSTNAME)
    worker = DeliveryWorker(spool, settings, **options)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        yield worker
    finally:
        stop.set()
        async with asyncio.timeout(10):
            await task


async def eventually(condition: Callable[[], bool], within: float = 5.0) -> None:
    """Poll ``condition`` until it holds (fails the test after ``within`` seconds)."""
    async with asyncio.timeout(within):
        while not condition():
            await asyncio.sleep(0.01)


@dataclass(frozen=True)
class Certificates:
    ca: trustme.CA
    server_context: ssl.SSLContext
    ca_file: Path
    other_ca_file: Path


@pytest.fixture(scope="session")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    """A CA whose certificate the upstream presents (for 127.0.0.1), and an unrelated CA."""
    folder = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(server_context)
    ca_file = folder / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    other_ca_file = folder / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other_ca_file))
    return Certificates(ca, server_context, ca_file, other_ca_file)
