"""Real SMTP clients for the end-to-end suite: swaks and msmtp, run as subprocesses against a listener.

``starttls`` means a 587-style listener (plain connection, then STARTTLS); ``tls`` means a 465-style
listener (TLS from the first byte). Both clients verify the server certificate against ``ca_file``.
"""

from __future__ import annotations

import re
import secrets
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Security = Literal["starttls", "tls", "none"]
Mechanism = Literal["PLAIN", "LOGIN"]

SWAKS = shutil.which("swaks") or "/usr/bin/swaks"
MSMTP = shutil.which("msmtp") or "/usr/bin/msmtp"


def new_password() -> str:
    """A random password for a test account. Never starts with "-": swaks would read it as an option."""
    return "pw" + secrets.token_urlsafe(16)


@dataclass(frozen=True)
class Endpoint:
    """Where a client connects and how it secures the connection."""

    host: str
    port: int
    security: Security


@dataclass(frozen=True)
class Account:
    """A committee member's login."""

    address: str
    password: str


@dataclass(frozen=True)
class ClientRun:
    """One finished client process."""

    command: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    @property
    def transcript(self) -> str:
        return f"$ {' '.join(self.command)}\n(exit {self.returncode})\n{self.stdout}{self.stderr}"

    def server_replies(self) -> list[str]:
        """swaks transcript lines sent by the server (``<-`` plain, ``<~`` inside TLS)."""
        return [
            line[4:] for line in self.stdout.splitlines() if line.startswith(("<-  ", "<~  ", "<** ", "<~* "))
        ]

    def reply_codes(self) -> list[str]:
        return [match.group(0) for line in self.server_replies() if (match := re.match(r"\d{3}", line))]


def _run(command: list[str], stdin: bytes | None, timeout: float) -> ClientRun:
    if not Path(command[0]).exists():
        raise AssertionError(f"{command[0]} is not installed: `bash scripts/test` installs swaks and msmtp")
    result = subprocess.run(command, input=stdin or b"", capture_output=True, timeout=timeout, check=False)
    return ClientRun(
        command=tuple(command),
        returncode=result.returncode,
        stdout=result.stdout.decode(errors="replace"),
        stderr=result.stderr.decode(errors="replace"),
    )


def swaks(
    endpoint: Endpoint,
    *,
    mail_from: str,
    recipients: list[str],
    message: bytes | None = None,
    account: Account | None = None,
    mechanism: Mechanism = "PLAIN",
    ca_file: Path | None = None,
    extra: tuple[str, ...] = (),
    timeout: float = 30,
) -> ClientRun:
    """Submit with swaks. ``message`` (RFC 5322 bytes, LF or CRLF) is read from stdin; None: swaks' own."""
    command = [
        SWAKS,
        "--server",
        endpoint.host,
        "--port",
        str(endpoint.port),
        "--from",
        mail_from,
        "--to",
        ",".join(recipients),
        "--helo",
        "client.example.test",
        "--timeout",
        str(int(timeout)),
    ]
    if endpoint.security == "starttls":
        command.append("--tls")
    elif endpoint.security == "tls":
        command.append("--tls-on-connect")
    if endpoint.security != "none" and ca_file is not None:
        command += ["--tls-verify", "--tls-ca-path", str(ca_file)]
    if account is not None:
        command += ["--auth", mechanism, "--auth-user", account.address, "--auth-password", account.password]
    if message is not None:
        command += ["--data", "-"]
        # swaks ends DATA with its own CRLF before the dot: drop the message's last line end, or the
        # server would receive one empty line more than the message has.
        if message.endswith(b"\r\n"):
            message = message[:-2]
        elif message.endswith(b"\n"):
            message = message[:-1]
    command += list(extra)
    return _run(command, message, timeout + 5)


def msmtp(
    endpoint: Endpoint,
    *,
    mail_from: str,
    recipients: list[str],
    message: bytes,
    account: Account,
    mechanism: Mechanism = "PLAIN",
    ca_file: Path,
    timeout: float = 30,
) -> ClientRun:
    """Submit with msmtp through a generated config file (msmtp insists on mode 0600)."""
    if endpoint.security == "none":
        raise ValueError("the end-to-end suite only runs msmtp over TLS")
    starttls = "on" if endpoint.security == "starttls" else "off"
    config = "\n".join(
        [
            "defaults",
            "logfile -",
            f"timeout {int(timeout)}",
            "account gateway",
            f"host {endpoint.host}",
            f"port {endpoint.port}",
            "domain client.example.test",
            "tls on",
            f"tls_starttls {starttls}",
            f"tls_trust_file {ca_file}",
            f"auth {mechanism.lower()}",
            f"user {account.address}",
            f"password {account.password}",
            f"from {mail_from}",
            "account default : gateway",
            "",
        ]
    )
    with tempfile.TemporaryDirectory(prefix="conduct-msmtp-") as folder:
        config_file = Path(folder) / "msmtprc"
        config_file.touch(mode=0o600)
        config_file.write_text(config)
        command = [MSMTP, "--file", str(config_file), "--debug", "-f", mail_from, "--", *recipients]
        return _run(command, message, timeout + 5)
