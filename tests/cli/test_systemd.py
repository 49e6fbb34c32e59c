"""Running under systemd: the notify protocol, the serve command's notifications, and the shipped unit."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway import systemd

from .conftest import write_config

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "deploy" / "conduct-gateway.service"


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    # A short path: Unix socket paths are limited to about 100 bytes.
    path = f"/tmp/cg-notify-{os.getpid()}-{tmp_path.name[-12:]}.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(0)
    try:
        yield sock, path
    finally:
        sock.close()
        os.unlink(path)


def received(sock: socket.socket) -> list[str]:
    messages = []
    while True:
        try:
            messages.append(sock.recv(4096).decode())
        except BlockingIOError:
            return messages


class TestNotify:
    def test_sends_the_lines_as_one_datagram(self, notify_socket: tuple[socket.socket, str]) -> None:
        sock, path = notify_socket
        assert systemd.notify("READY=1", "STATUS=up", environ={"NOTIFY_SOCKET": path})
        assert received(sock) == ["READY=1\nSTATUS=up"]

    def test_abstract_socket(self) -> None:
        name = f"cg-notify-abstract-{os.getpid()}"
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.bind("\0" + name)
            assert systemd.notify("WATCHDOG=1", environ={"NOTIFY_SOCKET": "@" + name})
            assert sock.recv(100) == b"WATCHDOG=1"

    @pytest.mark.parametrize("value", ["", "relative/path", "/nonexistent/socket"])
    def test_outside_systemd_nothing_is_sent(self, value: str) -> None:
        assert not systemd.notify("READY=1", environ={"NOTIFY_SOCKET": value} if value else {})

    @pytest.mark.parametrize(
        ("environ", "expected"),
        [
            ({"WATCHDOG_USEC": "30000000"}, 15.0),
            ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}, 15.0),
            ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, None),
            ({"WATCHDOG_USEC": "0"}, None),
            ({"WATCHDOG_USEC": "soon"}, None),
            ({}, None),
        ],
    )
    def test_watchdog_interval_is_half_of_watchdogsec(
        self, environ: dict[str, str], expected: float | None
    ) -> None:
        assert systemd.watchdog_interval(environ) == expected


async def test_serve_says_ready_pings_the_watchdog_and_says_stopping(
    tmp_path: Path, notify_socket: tuple[socket.socket, str]
) -> None:
    sock, path = notify_socket
    config = write_config(tmp_path)
    quiet = asyncio.subprocess.DEVNULL
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "gateway", "serve", "--config", str(config)),
        stdout=quiet,
        stderr=quiet,
        stdin=quiet,
        env={**os.environ, "NOTIFY_SOCKET": path, "WATCHDOG_USEC": "200000"},
    )
    try:
        messages: list[str] = []
        async with asyncio.timeout(30):
            while sum(m == "WATCHDOG=1" for m in messages) < 3:
                messages += received(sock)
                await asyncio.sleep(0.05)
        assert messages[0].startswith("READY=1\nSTATUS=accepting mail on submission 127.0.0.1:")
        process.send_signal(signal.SIGHUP)
        async with asyncio.timeout(10):
            while "RELOADING=1" not in messages or messages[-1] == "RELOADING=1":
                messages += received(sock)
                await asyncio.sleep(0.05)
        assert "READY=1" in messages[messages.index("RELOADING=1") :]
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            assert await process.wait() == 0
        assert any(m.startswith("STOPPING=1") for m in received(sock) + messages)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


def test_the_shipped_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is missing (Debian package systemd; scripts/test installs it)"
    # The unit names where the gateway is installed in production; point it at this one to verify.
    executable = Path(sys.executable).parent / "conduct-gateway"
    unit = tmp_path / "conduct-gateway.service"
    unit.write_text(
        UNIT.read_text(encoding="utf-8").replace(
            "/opt/conduct-gateway/.venv/bin/conduct-gateway", str(executable)
        ),
        encoding="utf-8",
    )
    result = subprocess.run(
        [analyze, "verify", "--man=no", str(unit)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr  # unknown keys and bad values are only warnings


def test_the_unit_is_hardened_and_uses_notify() -> None:
    settings = {}
    for line in UNIT.read_text(encoding="utf-8").splitlines():
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            settings.setdefault(key, value)
    assert settings["Type"] == "notify"
    assert settings["WatchdogSec"]
    for key in ("NoNewPrivileges", "ProtectHome", "PrivateTmp"):
        assert settings[key] == "yes", key
    assert settings["ProtectSystem"] == "strict"
    assert settings["StateDirectory"] == "conduct-gateway"
    assert settings["Environment"] == "CONDUCT_GATEWAY_STATE_DIR=/var/lib/conduct-gateway"
