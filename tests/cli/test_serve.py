"""`conduct-gateway serve` as a real process: first start, a message end to end, signals, bad settings.

Each test starts ``python -m gateway serve`` on a throwaway settings file (ports 0, a temporary state
folder), reads the listening addresses from its log, talks to it with aiosmtplib (STARTTLS + AUTH,
trusting the generated certificate through its file) or with the exact swaks command the first start
prints, and stops it with real signals.
"""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import signal
import socket
import ssl
import sys
import time
from collections.abc import AsyncIterator
from email.message import EmailMessage
from pathlib import Path
from typing import Protocol

import aiosmtplib
import pytest
from click.testing import CliRunner

from gateway.app import DemoAccount, swaks_command
from gateway.cli import main

from .conftest import SHIPPED_POLICY, write_config

STARTUP_TIMEOUT = 30.0
STOP_TIMEOUT = 20.0


class GatewayProcess:
    """A running `conduct-gateway serve` whose output is collected line by line."""

    def __init__(self, process: asyncio.subprocess.Process, config: Path) -> None:
        self.process = process
        self.config = config
        self.state = config.parent / "state"
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self._changed = asyncio.Event()
        self._pumps = [
            asyncio.ensure_future(self._pump(process.stdout, self.stdout)),
            asyncio.ensure_future(self._pump(process.stderr, self.stderr)),
        ]

    async def _pump(self, stream: asyncio.StreamReader | None, lines: list[str]) -> None:
        assert stream is not None
        while line := await stream.readline():
            lines.append(line.decode("utf-8", "replace").rstrip("\n"))
            self._changed.set()
        self._changed.set()

    async def wait_for_log(self, pattern: str, timeout: float = STARTUP_TIMEOUT) -> re.Match[str]:
        """The first stderr line matching ``pattern``, waiting for it if need be."""
        regex = re.compile(pattern)
        async with asyncio.timeout(timeout):
            while True:
                for line in self.stderr:
                    if match := regex.search(line):
                        return match
                if self.process.returncode is not None and all(p.done() for p in self._pumps):
                    raise AssertionError(f"gateway exited before logging {pattern!r}:\n{self.output}")
                self._changed.clear()
                await self._changed.wait()

    @property
    def output(self) -> str:
        return "\n".join(["--- stdout", *self.stdout, "--- stderr", *self.stderr])

    def address(self, name: str) -> tuple[str, int]:
        for line in self.stderr:
            match = re.search(rf"event=listening name={name} address=(\S+):(\d+)", line)
            if match:
                return match.group(1), int(match.group(2))
        raise AssertionError(f"no listening line for {name}:\n{self.output}")

    def banner_value(self, label: str) -> str:
        for line in self.stdout:
            if line.strip().startswith(f"{label}:"):
                return line.split(":", 1)[1].strip()
        raise AssertionError(f"no {label!r} in the banner:\n{self.output}")

    def tls_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.state / "tls" / "selfsigned.crt"))

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    async def wait(self, timeout: float = STOP_TIMEOUT) -> int:
        async with asyncio.timeout(timeout):
            code = await self.process.wait()
            await asyncio.gather(*self._pumps)
        return code

    async def ensure_stopped(self) -> None:
        if self.process.returncode is None:
            self.process.kill()
        await self.process.wait()
        await asyncio.gather(*self._pumps)


class StartGateway(Protocol):
    async def __call__(
        self, config: Path | None = None, env: dict[str, str] | None = None, ready: bool = True
    ) -> GatewayProcess: ...


@pytest.fixture
async def start_gateway(tmp_path: Path) -> AsyncIterator[StartGateway]:
    started: list[GatewayProcess] = []

    async def start(
        config: Path | None = None, env: dict[str, str] | None = None, ready: bool = True
    ) -> GatewayProcess:
        config = config or write_config(tmp_path)
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "gateway",
            "serve",
            "--config",
            str(config),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            stdin=asyncio.subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
        )
        gateway = GatewayProcess(process, config)
        started.append(gateway)
        if ready:
            await gateway.wait_for_log(r"event=ready")
        return gateway

    yield start
    for gateway in started:
        await gateway.ensure_stopped()


def message(sender: str, recipient: str, token: str) -> EmailMessage:
    mail = EmailMessage()
    mail["From"] = sender
    mail["To"] = recipient
    mail["Subject"] = f"first message {token}"
    mail["Message-ID"] = f"<{token}@example.org>"
    mail.set_content(f"Hello from the test, {token}.\n")
    return mail


async def maildir_files(maildir: Path, count: int, timeout: float = 10.0) -> list[Path]:
    """Wait until the Maildir holds ``count`` delivered messages; return them."""
    deadline = time.monotonic() + timeout
    while True:
        found = sorted((maildir / "new").glob("*")) + sorted((maildir / "cur").glob("*"))
        if len(found) >= count or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.05)


async def http_get(address: tuple[str, int], path: str) -> tuple[int, str]:
    reader, writer = await asyncio.open_connection(*address)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        async with asyncio.timeout(5):
            raw = await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()
    head, _, body = raw.decode().partition("\r\n\r\n")
    return int(head.split()[1]), body


async def test_first_start_demo_account_sends_a_message_into_the_maildir(start_gateway: StartGateway) -> None:
    gateway = await start_gateway()
    address = gateway.banner_value("address")
    password = gateway.banner_value("password")
    assert address == "demo@example.org"
    assert len(password) >= 20
    assert any(str(gateway.state / "maildir") in line for line in gateway.stdout)
    assert password not in "\n".join(gateway.stderr), "the password must never reach the log"

    host, port = gateway.address("submission")
    token = f"t{time.time_ns()}"
    async with aiosmtplib.SMTP(
        hostname=host, port=port, start_tls=True, tls_context=gateway.tls_context(), timeout=10
    ) as client:
        await client.login(address, password)
        errors, _reply = await client.send_message(message(address, "someone@example.org", token))
    assert errors == {}

    delivered = await maildir_files(gateway.state / "maildir", 1)
    assert len(delivered) == 1, gateway.output
    content = delivered[0].read_bytes()
    assert f"Hello from the test, {token}.".encode() in content
    assert b"X-Original-To: someone@example.org" in content

    metrics = gateway.address("metrics")
    status, body = await http_get(metrics, "/healthz")
    assert (status, body) == (200, "ok\nlisteners: up\ndelivery: up\n")
    delivered = 'conduct_gateway_delivery_outcomes_total{outcome="delivered"} 1.0'
    latency = "conduct_gateway_delivery_latency_seconds_count 1.0"
    for _ in range(600):  # delivery reports from its own process, a moment after the message lands
        status, body = await http_get(metrics, "/metrics")
        if delivered in body and latency in body:
            break
        await asyncio.sleep(0.05)
    assert status == 200
    assert "conduct_gateway_smtp_messages_accepted_total 1.0" in body
    assert "conduct_gateway_smtp_submission_duration_seconds_count 1.0" in body
    assert latency in body, body
    assert "conduct_gateway_policy_evaluation_duration_seconds_count 1.0" in body
    assert 'conduct_gateway_smtp_submission_duration_seconds_bucket{le="+Inf"} 1.0' in body
    assert delivered in body
    assert token not in body and address not in body

    gateway.signal(signal.SIGTERM)
    assert await gateway.wait() == 0, gateway.output
    assert any("event=stopped" in line for line in gateway.stderr)
    assert not any("Traceback" in line for line in gateway.stderr), gateway.output


@pytest.mark.parametrize(
    ("env", "listener", "tls_flag"),
    [
        pytest.param({}, "submission", "--tls", id="starttls"),
        pytest.param(
            {"CONDUCT_GATEWAY_SERVER__SUBMISSION__ENABLED": "false"},
            "submissions",
            "--tlsc",
            id="implicit-tls",
        ),
    ],
)
async def test_the_printed_swaks_command_works_as_printed(
    start_gateway: StartGateway, env: dict[str, str], listener: str, tls_flag: str
) -> None:
    gateway = await start_gateway(env=env)
    command = next(line.strip() for line in gateway.stdout if line.strip().startswith("swaks "))
    args = shlex.split(command)
    assert args[args.index("--port") + 1] == str(gateway.address(listener)[1])
    assert tls_flag in args
    swaks = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    async with asyncio.timeout(30):
        transcript, _ = await swaks.communicate()
    assert swaks.returncode == 0, transcript.decode()
    assert b"<~  250 " in transcript  # the answer to DATA
    assert len(await maildir_files(gateway.state / "maildir", 1)) == 1
    gateway.signal(signal.SIGINT)  # Ctrl-C stops as gracefully as SIGTERM
    assert await gateway.wait() == 0, gateway.output


async def test_sigterm_lets_the_transaction_in_flight_finish(start_gateway: StartGateway) -> None:
    gateway = await start_gateway()
    address, password = gateway.banner_value("address"), gateway.banner_value("password")
    host, port = gateway.address("submission")
    token = f"t{time.time_ns()}"
    client = aiosmtplib.SMTP(
        hostname=host, port=port, start_tls=True, tls_context=gateway.tls_context(), timeout=10
    )
    await client.connect()
    try:
        await client.login(address, password)
        await client.mail(address)
        await client.rcpt("late@example.org")

        gateway.signal(signal.SIGTERM)
        await gateway.wait_for_log(r"event=stopping")
        with pytest.raises(
            (ConnectionRefusedError, aiosmtplib.SMTPConnectError, aiosmtplib.SMTPResponseException)
        ):
            async with aiosmtplib.SMTP(hostname=host, port=port, start_tls=False, timeout=5) as newcomer:
                await newcomer.ehlo()  # no new connection is taken once stopping

        response = await client.data(message(address, "late@example.org", token).as_bytes())
        assert response.code == 250, response
        # The gateway closes the connection once the transaction is done: no QUIT needed.
    finally:
        client.close()
    assert await gateway.wait() == 0, gateway.output

    # Accepted is never lost: delivered before the stop, or still in incoming/ for the next start.
    maildir = gateway.state / "maildir"
    spooled = list((gateway.state / "spool" / "incoming").iterdir())
    delivered = await maildir_files(maildir, 1, timeout=0)
    assert len(spooled) + len(delivered) == 1, gateway.output

    again = await start_gateway(config=gateway.config)
    assert not any("password:" in line for line in again.stdout), "the demo account is made only once"
    delivered = await maildir_files(maildir, 1)
    assert len(delivered) == 1
    assert token.encode() in delivered[0].read_bytes()
    assert list((gateway.state / "spool" / "incoming").iterdir()) == []
    again.signal(signal.SIGTERM)
    assert await again.wait() == 0, again.output


@pytest.mark.parametrize("busy", ["submission", "metrics"])
async def test_a_first_start_that_fails_leaves_no_demo_account_and_the_next_start_shows_one(
    start_gateway: StartGateway, tmp_path: Path, busy: str
) -> None:
    # A listener's port is taken by another program: the start fails after the settings were read.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = write_config(tmp_path)
        text = config.read_text(encoding="utf-8")
        text = text.replace("submission:\n    port: 0", "submission:\n    port: " + str(port), 1)
        if busy == "metrics":
            text = text.replace("metrics:\n  port: 0", f"metrics:\n  host: 127.0.0.1\n  port: {port}")
        assert f"port: {port}" in text
        config.write_text(text, encoding="utf-8")
        failed = await start_gateway(config=config, ready=False)
        assert await failed.wait() != 0, failed.output
    assert not any("password:" in line for line in failed.stdout)
    assert not (tmp_path / "users.passwd").exists(), "an account whose password nobody saw was made"

    config.write_text(text.replace(f"port: {port}", "port: 0"), encoding="utf-8")
    again = await start_gateway(config=config)
    assert again.banner_value("address") == "demo@example.org"
    password = again.banner_value("password")
    host, port = again.address("submission")
    async with aiosmtplib.SMTP(
        hostname=host, port=port, start_tls=True, tls_context=again.tls_context(), timeout=10
    ) as client:
        await client.login("demo@example.org", password)
    again.signal(signal.SIGTERM)
    assert await again.wait() == 0, again.output


async def test_accounts_added_while_running_can_log_in_without_a_restart(start_gateway: StartGateway) -> None:
    gateway = await start_gateway()
    host, port = gateway.address("submission")

    def add(address: str, password: str) -> None:
        added = CliRunner().invoke(
            main,
            ["user", "add", address, "--password-stdin", "--config", str(gateway.config)],
            input=f"{password}\n",
        )
        assert added.exit_code == 0, added.output

    async def login(address: str, password: str) -> None:
        async with aiosmtplib.SMTP(
            hostname=host, port=port, start_tls=True, tls_context=gateway.tls_context(), timeout=10
        ) as client:
            await client.login(address, password)

    add("ivy@example.org", "ivy's password")  # noticed by the periodic check of the users file
    await gateway.wait_for_log(r"event=accounts.reloaded members=2", timeout=10)
    await login("ivy@example.org", "ivy's password")

    add("jo@example.org", "jo's password")  # or at once on SIGHUP
    gateway.signal(signal.SIGHUP)
    await gateway.wait_for_log(r"event=reloaded accounts=3", timeout=10)
    await login("jo@example.org", "jo's password")

    gateway.signal(signal.SIGTERM)
    assert await gateway.wait() == 0, gateway.output


async def test_invalid_settings_exit_2_with_file_line_and_key(
    start_gateway: StartGateway, tmp_path: Path
) -> None:
    config = write_config(tmp_path, "delivery:\n  retry_lifetime: soon\n")
    gateway = await start_gateway(config=config, ready=False)
    assert await gateway.wait() == 2
    assert gateway.stdout == []
    line = next(n for n, text in enumerate(config.read_text().splitlines(), 1) if "retry_lifetime" in text)
    assert gateway.stderr[0].startswith(
        f"conduct-gateway: {config}, line {line}, key delivery.retry_lifetime: "
    )
    assert "Traceback" not in gateway.output


async def test_a_busy_port_is_one_clear_message(start_gateway: StartGateway, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        env = {"CONDUCT_GATEWAY_SERVER__SUBMISSION__PORT": str(busy)}
        gateway = await start_gateway(env=env, ready=False)
        code = await gateway.wait()
    assert code == 2, gateway.output
    assert gateway.stderr[-1].startswith("conduct-gateway: cannot listen for SMTP: ")
    assert "Traceback" not in gateway.output


async def test_no_demo_account_when_relaying_to_a_real_upstream(start_gateway: StartGateway) -> None:
    env = {
        "CONDUCT_GATEWAY_DELIVERY__UPSTREAM__HOST": "127.0.0.1",
        "CONDUCT_GATEWAY_DELIVERY__UPSTREAM__PORT": "9",
    }
    gateway = await start_gateway(env=env)
    assert not any("password" in line for line in gateway.stdout)
    assert not (gateway.config.parent / "users.passwd").exists()
    await gateway.wait_for_log(r"event=no_accounts")
    gateway.signal(signal.SIGTERM)
    assert await gateway.wait() == 0, gateway.output


async def test_a_second_gateway_on_the_same_spool_stops_with_a_clear_message(
    start_gateway: StartGateway, tmp_path: Path
) -> None:
    first = await start_gateway()
    second = await start_gateway(config=first.config, ready=False)
    assert await second.wait() == 2, second.output
    # Whichever of the first gateway's locks (audit trail or spool) the second meets first names it.
    assert re.search(r"another (conduct-)?gateway process", second.stderr[-1]), second.stderr[-1]
    assert "Traceback" not in second.output
    first.signal(signal.SIGTERM)
    assert await first.wait() == 0, first.output


async def test_a_second_signal_stops_without_waiting(start_gateway: StartGateway) -> None:
    gateway = await start_gateway(env={"CONDUCT_GATEWAY_SHUTDOWN_GRACE": "60"})
    host, port = gateway.address("submission")
    client = aiosmtplib.SMTP(
        hostname=host, port=port, start_tls=True, tls_context=gateway.tls_context(), timeout=10
    )
    await client.connect()
    try:
        await client.login(gateway.banner_value("address"), gateway.banner_value("password"))
        await client.mail(gateway.banner_value("address"))  # a transaction in flight: the stop would wait
        gateway.signal(signal.SIGTERM)
        await gateway.wait_for_log(r"event=stopping")
        started = time.monotonic()
        gateway.signal(signal.SIGTERM)
        assert await gateway.wait() == 1, gateway.output
        assert time.monotonic() - started < 10
    finally:
        client.close()
    assert gateway.stderr[-1] == "conduct-gateway: stopped without waiting for work in flight"
    assert "Traceback" not in gateway.output


@pytest.mark.parametrize(
    ("addresses", "expected"),
    [
        pytest.param({"submission": ("0.0.0.0", 2587)}, "--server 127.0.0.1 --port 2587 --tls", id="any-v4"),
        pytest.param({"submission": ("::", 2587)}, "--server ::1 --port 2587 --tls", id="any-v6"),
        pytest.param(
            {"submission": ("192.0.2.7", 587), "submissions": ("192.0.2.7", 465)},
            "--server 192.0.2.7 --port 587 --tls",
            id="starttls-preferred",
        ),
        pytest.param(
            {"submissions": ("127.0.0.1", 2465)}, "--server 127.0.0.1 --port 2465 --tlsc", id="implicit"
        ),
    ],
)
def test_swaks_command_targets_a_reachable_listener(
    addresses: dict[str, tuple[str, int]], expected: str
) -> None:
    command = swaks_command(addresses, DemoAccount("demo@example.org", "Secret123"))
    assert command.startswith(
        f"swaks {expected} --auth PLAIN --auth-user demo@example.org --auth-password Secret123"
    )
    assert swaks_command({}, DemoAccount("demo@example.org", "Secret123")) == ""


async def test_the_journal_intake_listens_and_its_counters_are_in_the_metrics(
    start_gateway: StartGateway, tmp_path: Path
) -> None:
    config = write_config(tmp_path, extra="journal:\n  enabled: true\n  port: 0\n")
    gateway = await start_gateway(config=config)
    await gateway.wait_for_log(r"event=listening name=journal")
    status, body = await http_get(gateway.address("metrics"), "/metrics")
    assert status == 200
    assert "conduct_gateway_journal_copies_total 0.0" in body
    gateway.signal(signal.SIGTERM)
    assert await gateway.wait() == 0, gateway.output


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                status = (entry / "status").read_text()
            except OSError:
                continue
            if f"\nPPid:\t{pid}\n" in status:
                found.append(int(entry.name))
    return found


async def test_policy_workers_run_as_child_processes_in_the_metrics_and_stop_with_the_gateway(
    start_gateway: StartGateway, tmp_path: Path
) -> None:
    config = write_config(tmp_path, extra=f"policy:\n  workers: 2\n  path: {SHIPPED_POLICY}\n")
    gateway = await start_gateway(config=config)
    await gateway.wait_for_log(r"event=policy-workers-started workers=2")
    status, body = await http_get(gateway.address("metrics"), "/metrics")
    assert status == 200
    assert "conduct_gateway_policy_workers_alive 2.0" in body
    assert "conduct_gateway_policy_workers_lost_messages_total 0.0" in body
    workers = children_of(gateway.process.pid)
    assert len(workers) >= 2  # the workers (and multiprocessing's resource tracker, if any)
    gateway.signal(signal.SIGTERM)
    assert await gateway.wait() == 0, gateway.output
    for _ in range(50):
        if not [pid for pid in workers if Path(f"/proc/{pid}").exists()]:
            break
        await asyncio.sleep(0.1)
    assert not [pid for pid in workers if Path(f"/proc/{pid}").exists()], "a worker outlived the gateway"


async def test_a_policy_edit_reaches_the_policy_workers_without_a_restart(
    start_gateway: StartGateway, tmp_path: Path
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(SHIPPED_POLICY.read_text(encoding="utf-8"), encoding="utf-8")
    config = write_config(tmp_path, extra=f"policy:\n  workers: 1\n  path: {policy}\n")
    gateway = await start_gateway(config=config)
    await gateway.wait_for_log(r"event=policy-workers-started workers=1")
    address, password = gateway.banner_value("address"), gateway.banner_value("password")
    host, port = gateway.address("submission")

    async def send(token: str) -> None:
        async with aiosmtplib.SMTP(
            hostname=host, port=port, start_tls=True, tls_context=gateway.tls_context(), timeout=10
        ) as client:
            await client.login(address, password)
            await client.send_message(message(address, "someone@example.net", f"{token} Quinn Farrow"))

    await send("before")  # nobody called Quinn Farrow is protected yet
    edited = policy.read_text(encoding="utf-8").replace(
        "names: [Robin Castellano]", "names: [Robin Castellano, Quinn Farrow]"
    )
    assert edited != policy.read_text(encoding="utf-8")
    policy.write_text(edited, encoding="utf-8")
    gateway.signal(signal.SIGHUP)
    await gateway.wait_for_log(r"event=policy-reloaded")
    with pytest.raises(aiosmtplib.SMTPDataError) as refused:
        await send("after")
    assert refused.value.code == 550
    status, body = await http_get(gateway.address("metrics"), "/metrics")
    assert status == 200
    assert "conduct_gateway_policy_workers_lost_messages_total 0.0" in body
    assert "conduct_gateway_policy_workers_stale_messages_total 0.0" in body  # the worker judged it, reloaded
    gateway.signal(signal.SIGTERM)
    assert await gateway.wait() == 0, gateway.output
