"""The real gateway as a child process: ``conduct-gateway serve --config FILE`` with a throwaway config.

Listeners bind port 0; the bound addresses are read from the gateway's own ``event=listening`` log
lines, so tests never race for fixed ports and a restart after ``kill -9`` just reads them again.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from tests.e2e.clients import Endpoint
from tests.e2e.postfix import PostfixInstance
from tests.e2e.tls import TlsMaterial

LISTENING = re.compile(r"event=listening name=(\S+) address=\[?([^\s\]]+?)\]?:(\d+)(?:\s|$)")
LISTENER_SECURITY = {"submission": "starttls", "submissions": "tls"}


def conduct_gateway_command() -> list[str]:
    """The console script installed next to this interpreter (the venv's), else the one on PATH."""
    beside = Path(sys.executable).parent / "conduct-gateway"
    if beside.exists():
        return [str(beside)]
    found = shutil.which("conduct-gateway")
    if found is None:
        raise RuntimeError("conduct-gateway is not installed: run `pip install -e '.[test]'`")
    return [found]


# Relay-core tests run the real policy engine with a policy that changes nothing (see the file).
RELAY_POLICY = Path(__file__).resolve().parent / "relay-policy.yaml"


def gateway_settings(
    tls: TlsMaterial, postfix: PostfixInstance, policy: Path = RELAY_POLICY
) -> dict[str, Any]:
    """A throwaway config: listeners on port 0, our certificate, Postfix over verified STARTTLS."""
    return {
        "policy": {"path": str(policy)},
        "tls": {"cert_file": str(tls.cert_file), "key_file": str(tls.key_file)},
        "delivery": {
            "upstream": {
                "host": "127.0.0.1",
                "port": postfix.port,
                "security": "starttls",
                "verify_certificates": True,
                "ca_file": str(tls.ca_file),
                "timeout": "10s",
            },
            # Retry quickly: tests stop Postfix for seconds, not hours.
            "initial_backoff": "0.5s",
            "max_backoff": "1s",
            "poll_interval": "0.2s",
            # The end-to-end suite relays from a delivery process (what `auto` picks on three cores
            # or more); the serve tests cover in-process delivery, `auto` on a two-core machine.
            "own_process": True,
        },
    }


def deep_merge(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(dict(base))
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


class GatewayProcessError(RuntimeError):
    """The gateway did not start, or stopped in a way the caller did not ask for."""


class GatewayProcess:
    """One gateway: its folder holds ``gateway.yaml``, ``users.passwd``, ``state/`` and ``gateway.log``."""

    def __init__(
        self,
        root: Path,
        settings: Mapping[str, Any],
        environ: Mapping[str, str] | None = None,
        serve_command: list[str] | None = None,
    ):
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.config_path = root / "gateway.yaml"
        self.log_path = root / "gateway.log"
        base = {
            "state_dir": str(root / "state"),
            "server": {
                "hostname": "gateway.example.test",
                "submission": {"host": "127.0.0.1", "port": 0},
                "submissions": {"host": "127.0.0.1", "port": 0},
            },
            "auth": {"users_file": str(root / "users.passwd")},
            "metrics": {"host": "127.0.0.1", "port": 0},
            "log_level": "info",
        }
        self.settings = deep_merge(base, settings)
        # JSON is YAML: the gateway reads this file with its YAML loader.
        self.config_path.write_text(json.dumps(self.settings, indent=2) + "\n")
        self.environ = {
            key: value for key, value in os.environ.items() if not key.startswith("CONDUCT_GATEWAY_")
        }
        self.environ.update(environ or {})
        # The benchmark swaps in a launcher that runs `serve` with the PassThrough screener.
        self.serve_command = serve_command or [*conduct_gateway_command(), "serve"]
        self.process: subprocess.Popen[bytes] | None = None
        self.addresses: dict[str, tuple[str, int]] = {}
        self._log_offset = 0

    @property
    def state_dir(self) -> Path:
        return Path(self.settings["state_dir"])

    @property
    def users_file(self) -> Path:
        return Path(self.settings["auth"]["users_file"])

    def cli(
        self, *args: str, stdin: str | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run ``conduct-gateway ARGS --config FILE`` and return the finished process."""
        return subprocess.run(
            [*conduct_gateway_command(), *args, "--config", str(self.config_path)],
            input=stdin if stdin is not None else "",
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self.environ,
            check=False,
        )

    def add_user(self, address: str, password: str) -> None:
        result = self.cli("user", "add", "--password-stdin", address, stdin=password + "\n")
        if result.returncode != 0:
            raise GatewayProcessError(f"`user add {address}` failed ({result.returncode}):\n{result.stderr}")

    # --- lifecycle ---------------------------------------------------------------------------------

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def current_log(self) -> str:
        """The log written by the running (or last) process only."""
        return self.log_text()[self._log_offset :]

    def start(self, timeout: float = 30) -> None:
        """Start ``serve`` and wait for its ``event=ready`` line; fail with the log if it exits first."""
        if self.process is not None and self.process.poll() is None:
            raise GatewayProcessError("the gateway is already running")
        self._log_offset = len(self.log_text())
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [*self.serve_command, "--config", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.environ,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while True:
            log_text = self.current_log()
            if "event=ready" in log_text:
                break
            if self.process.poll() is not None:
                raise GatewayProcessError(
                    f"`conduct-gateway serve` exited with {self.process.returncode} before it was ready:\n"
                    f"{log_text}"
                )
            if time.monotonic() > deadline:
                self.kill()
                raise GatewayProcessError(f"the gateway was not ready within {timeout:.0f}s:\n{log_text}")
            time.sleep(0.05)
        self.addresses = {
            match.group(1): (match.group(2), int(match.group(3))) for match in LISTENING.finditer(log_text)
        }

    def endpoint(self, listener: str) -> Endpoint:
        """``submission`` (STARTTLS) or ``submissions`` (implicit TLS), as the running gateway bound it."""
        host, port = self.addresses[listener]
        return Endpoint(host, port, LISTENER_SECURITY[listener])  # type: ignore[arg-type]

    def scrape(self, path: str = "/metrics") -> tuple[int, str]:
        """GET ``path`` (``/metrics`` or ``/healthz``) from the running gateway's metrics listener."""
        host, port = self.addresses["metrics"]
        try:
            with urllib.request.urlopen(f"http://{host}:{port}{path}", timeout=10) as response:
                return int(response.status), response.read().decode()
        except urllib.error.HTTPError as error:
            return int(error.code), error.read().decode()

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def kill(self, *, host_down: bool = False) -> None:
        """``kill -9``: no chance to flush, close or answer anything.

        ``host_down``: the whole process group (the delivery process and the policy workers too), as
        when the host dies; killing only the gateway lets its delivery process stop cleanly.
        """
        if self.process is not None and self.process.poll() is None:
            if host_down:
                os.killpg(self.process.pid, signal.SIGKILL)  # start_new_session: its own group
            else:
                os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def terminate(self, timeout: float = 30) -> int:
        """SIGTERM and wait; returns the exit status (kills and raises if it does not stop)."""
        if self.process is None:
            raise GatewayProcessError("the gateway was never started")
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                raise GatewayProcessError(
                    f"the gateway ignored SIGTERM for {timeout:.0f}s:\n{self.current_log()}"
                ) from None
        return self.process.returncode

    def close(self) -> None:
        """Stop whatever runs (SIGTERM, then SIGKILL); for fixture teardown."""
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(GatewayProcessError):
                self.terminate(timeout=15)


GatewayFactory = Callable[..., GatewayProcess]
"""``gateway_factory(overrides=None, *, start=True)``: the e2e fixture that makes gateways."""
