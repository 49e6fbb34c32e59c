"""The benchmark's load: N aiosmtplib clients in their own process, each on one reused connection.

Every client connects and logs in once (when a login is given); when all are ready the clock starts
and they send messages back to back, each taking the next one from a shared budget, so the total
count is fixed whatever the concurrency. Latency is one whole transaction (MAIL, RCPT, DATA up to
the final 250) as the client sees it.

Every message is made unique: its Message-ID and a last body line carry its number. Real mail differs
from message to message, and identical copies would let the gateway's per-text caches (decoded and
normalised text, parsed address lists) answer every message after the first.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection

import aiosmtplib


@dataclass(frozen=True)
class LoadSpec:
    host: str
    port: int
    concurrency: int
    count: int
    message: bytes
    mail_from: str
    recipients: tuple[str, ...]
    username: str | None = None
    password: str | None = None
    # More instances of the same service: clients are spread over port, *more_ports in turn (as DNS
    # round-robin or a TCP load balancer would spread them), all drawing from one message budget.
    more_ports: tuple[int, ...] = ()
    # STARTTLS before AUTH, trusting this CA file (``--tls``); None: plaintext on loopback.
    tls_ca: str | None = None


@dataclass(frozen=True)
class LoadResult:
    started: float
    finished: float
    latencies: list[float]
    failures: list[str]
    cipher: str | None = None  # what the first client's STARTTLS negotiated ("TLSv1.3 TLS_AES_...")


async def _connect(spec: LoadSpec, port: int) -> aiosmtplib.SMTP:
    if spec.tls_ca is None:
        smtp = aiosmtplib.SMTP(hostname=spec.host, port=port, timeout=120, start_tls=False)
    else:  # as a member's mail client does: STARTTLS, the certificate verified, then AUTH
        context = ssl.create_default_context(cafile=spec.tls_ca)
        smtp = aiosmtplib.SMTP(
            hostname=spec.host, port=port, timeout=120, start_tls=True, tls_context=context
        )
    await smtp.connect()
    if spec.username is not None and spec.password is not None:
        await smtp.login(spec.username, spec.password)
    return smtp


async def _send_all(
    smtp: aiosmtplib.SMTP, spec: LoadSpec, budget: list[int], latencies: list[float], failures: list[str]
) -> None:
    try:
        while budget[0] > 0:
            budget[0] -= 1
            message = unique_copy(spec.message, budget[0])
            began = time.monotonic()
            try:
                await smtp.sendmail(spec.mail_from, list(spec.recipients), message)
            except aiosmtplib.SMTPException as exc:
                failures.append(f"{type(exc).__name__}: {exc}")
                if not smtp.is_connected:
                    return
                continue
            latencies.append(time.monotonic() - began)
    finally:
        if smtp.is_connected:
            try:
                await smtp.quit()
            except aiosmtplib.SMTPException:
                smtp.close()


def unique_copy(message: bytes, number: int) -> bytes:
    """``message`` (which ends with CRLF) with ``number`` in its Message-ID and in a last body line."""
    head, separator, body = message.partition(b"\r\n\r\n")
    head = head.replace(b"Message-ID: <", b"Message-ID: <%d." % number, 1)
    return head + separator + body + b"Reference number %d\r\n" % number


async def run_load(spec: LoadSpec) -> LoadResult:
    """Connect and log in every client first (argon2 logins are not the relay's throughput), then go."""
    ports = (spec.port, *spec.more_ports)
    clients = await asyncio.gather(*(_connect(spec, ports[n % len(ports)]) for n in range(spec.concurrency)))
    cipher = _cipher(clients[0]) if spec.tls_ca is not None else None  # asked before they quit
    budget = [spec.count]
    latencies: list[float] = []
    failures: list[str] = []
    started = time.monotonic()
    async with asyncio.TaskGroup() as group:
        for smtp in clients:
            group.create_task(_send_all(smtp, spec, budget, latencies, failures))
    return LoadResult(
        started=started,
        finished=time.monotonic(),
        latencies=latencies,
        failures=failures,
        cipher=cipher,
    )


def _cipher(smtp: aiosmtplib.SMTP) -> str | None:
    negotiated = smtp.get_transport_info("cipher")
    return f"{negotiated[1]} {negotiated[0]}" if negotiated else None


def load_process(spec: LoadSpec, results: Connection) -> None:
    """Process entry point: run the load, send back a LoadResult (or the error text)."""
    try:
        results.send(asyncio.run(run_load(spec)))
    except BaseException as exc:
        results.send(f"load generator failed: {type(exc).__name__}: {exc}")
        raise
    finally:
        results.close()
