"""Nothing accepted is lost: kill -9 the gateway mid-load, restart it, and count what reaches Postfix.

The guarantee under test (the operations guide states it): every message answered 250 is delivered
after a restart; a message the gateway was handing to the upstream when it died may arrive twice (at
most one extra copy each, so no more extra copies in all than messages the delivery worker can have
in progress: ``delivery.concurrency`` connections x ``IN_FLIGHT_PER_CONNECTION``); a message whose
DATA never completed never arrives, not even in part.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import re
import ssl
import time
from dataclasses import dataclass

import aiosmtplib
import pytest

from gateway.delivery.worker import IN_FLIGHT_PER_CONNECTION
from tests.e2e.clients import Account
from tests.e2e.gateway_process import GatewayFactory, GatewayProcess
from tests.e2e.messages import assert_arrived_unchanged, token, tricky_message
from tests.e2e.postfix import PostfixInstance
from tests.e2e.tls import TlsMaterial

pytestmark = pytest.mark.e2e

CONCURRENT = 32
KILL_AFTER_ACCEPTED = 10
HALF_WRITTEN = 4
DELIVERY_CONCURRENCY = 8


@dataclass
class Submission:
    recipient: str
    content: bytes
    accepted: bool = False
    error: str = ""
    reply: str = ""  # the refusing reply's code and text, when the server answered one


async def submit(host: str, port: int, context: ssl.SSLContext, member: Account, item: Submission) -> None:
    client = aiosmtplib.SMTP(hostname=host, port=port, start_tls=True, tls_context=context, timeout=20)
    try:
        await client.connect()
        await client.login(member.address, member.password)
        await client.sendmail(member.address, [item.recipient], item.content)
        item.accepted = True
    except (aiosmtplib.SMTPException, OSError) as exc:
        item.error = f"{type(exc).__name__}: {exc}"
        if isinstance(exc, aiosmtplib.SMTPResponseException):
            item.reply = f"{exc.code} {exc.message}"
    finally:
        client.close()


async def start_half_written(
    host: str, port: int, context: ssl.SSLContext, member: Account, item: Submission
) -> asyncio.StreamWriter:
    """Implicit TLS, AUTH, MAIL, RCPT, DATA and half the message: then the client just waits."""
    reader, writer = await asyncio.open_connection(host, port, ssl=context)

    async def reply() -> bytes:
        while True:
            line = await reader.readline()
            if line[3:4] != b"-":
                return line

    assert (await reply()).startswith(b"220")
    credentials = base64.b64encode(f"\0{member.address}\0{member.password}".encode())
    for command, expected in (
        (b"EHLO client.example.test", b"250"),
        (b"AUTH PLAIN " + credentials, b"235"),
        (f"MAIL FROM:<{member.address}>".encode(), b"250"),
        (f"RCPT TO:<{item.recipient}>".encode(), b"250"),
        (b"DATA", b"354"),
    ):
        writer.write(command + b"\r\n")
        answer = await reply()
        assert answer.startswith(expected), (command, answer)
    # Dot-stuffed as on the wire; cut mid-line so no end-of-data marker can be in what was sent.
    stuffed = re.sub(rb"(?m)^\.", b"..", item.content)
    half = stuffed[: len(stuffed) // 2].rstrip(b"\r\n.")
    assert b"\r\n.\r\n" not in half
    writer.write(half)
    await writer.drain()
    return writer


def spool_is_idle(gateway: GatewayProcess) -> bool:
    spool = gateway.state_dir / "spool"
    return not any(
        path.is_file() for folder in ("incoming", "deferred") for path in (spool / folder).rglob("*")
    )


def wait_until(condition: object, timeout: float, what: str) -> None:
    assert callable(condition)
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting until {what}")
        time.sleep(0.05)


@pytest.mark.parametrize(
    "upstream",
    [
        # Deliveries run while the gateway dies: exercises the de-duplication bound.
        pytest.param("up", id="upstream-up"),
        # Every accepted message is still only in the spool when the gateway dies.
        pytest.param("down", id="upstream-down-until-restart"),
    ],
)
async def test_kill_9_under_load_loses_no_accepted_message(
    gateway_factory: GatewayFactory,
    running_postfix: PostfixInstance,
    tls_material: TlsMaterial,
    member: Account,
    upstream: str,
) -> None:
    postfix = running_postfix
    began = time.monotonic()
    gateway = gateway_factory({"delivery": {"concurrency": DELIVERY_CONCURRENCY}})
    phases = {"start": time.monotonic() - began}
    context = ssl.create_default_context(cafile=str(tls_material.ca_file))
    run = token()

    def new(label: str, index: int) -> Submission:
        recipient = f"{label}-{index}-{run}@example.test"
        return Submission(recipient, tricky_message(member.address, recipient, f"{run}{label}{index}"))

    if upstream == "down":
        postfix.stop()
    half_written = [new("half", index) for index in range(HALF_WRITTEN)]
    writers = [
        await start_half_written(*gateway.addresses["submissions"], context, member, item)
        for item in half_written
    ]
    submissions = [new("load", index) for index in range(CONCURRENT)]
    host, port = gateway.addresses["submission"]
    tasks = [asyncio.create_task(submit(host, port, context, member, item)) for item in submissions]
    deadline = time.monotonic() + 60
    while sum(item.accepted for item in submissions) < KILL_AFTER_ACCEPTED:
        assert time.monotonic() < deadline, [item.error for item in submissions if item.error]
        assert not all(task.done() for task in tasks), [item.error for item in submissions]
        await asyncio.sleep(0.001)
    phases["load until kill"] = time.monotonic() - began - sum(phases.values())
    gateway.kill()
    await asyncio.gather(*tasks)
    for writer in writers:
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()

    accepted = [item for item in submissions if item.accepted]
    unanswered = [item for item in submissions if not item.accepted]
    assert len(accepted) >= KILL_AFTER_ACCEPTED
    # The kill must land mid-load, or this test would prove nothing about crashes.
    assert unanswered, "every submission finished before the kill; raise CONCURRENT"

    phases["after kill"] = time.monotonic() - began - sum(phases.values())
    if upstream == "down":
        assert all(postfix.messages_to(item.recipient) == [] for item in submissions)
        gateway.start()
        postfix.start()
    else:
        gateway.start()
    phases["restart"] = time.monotonic() - began - sum(phases.values())
    postfix.wait_for(
        lambda messages: (
            {item.recipient for item in accepted} <= {message.delivered_to for message in messages}
        ),
        timeout=60,
        what=f"all {len(accepted)} accepted messages after the restart",
    )
    wait_until(lambda: spool_is_idle(gateway), 30, "the restarted gateway's spool is empty")
    wait_until(postfix.queue_is_empty, 30, "Postfix's queue is empty")
    phases["recovery"] = time.monotonic() - began - sum(phases.values())

    extra_copies = 0
    for item in submissions:
        copies = postfix.messages_to(item.recipient)
        if item.accepted:
            assert copies, f"accepted (250) but never delivered: {item.recipient}"
        # A message without a 250 may still have been committed just before the kill: if it
        # arrives, it arrives whole.
        assert len(copies) <= 2, f"{len(copies)} copies of {item.recipient}"
        extra_copies += max(0, len(copies) - 1)
        for copy in copies:
            assert_arrived_unchanged(copy, item.content)
    assert extra_copies <= DELIVERY_CONCURRENCY * IN_FLIGHT_PER_CONNECTION
    for item in half_written:
        assert postfix.messages_to(item.recipient) == [], "a half-written DATA was delivered"
    print(
        f"accepted {len(accepted)}, unanswered {len(unanswered)}, half-written {len(half_written)}, "
        f"extra copies {extra_copies}; seconds: "
        + ", ".join(f"{name} {value:.2f}" for name, value in phases.items())
    )
