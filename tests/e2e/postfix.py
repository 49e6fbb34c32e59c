"""A private Postfix instance on a loopback port: the real upstream MTA of the end-to-end suite and bench.

The instance has its own config, queue and data directories under a throwaway folder and is always
driven with ``postfix -c DIR``, so the system instance (``/etc/postfix``, port 25) is never read, started
or stopped. Two modes:

* ``mailbox`` (the default): every recipient in ``domains`` is accepted and delivered by Postfix's
  ``virtual`` agent into one Maildir; ``Delivered-To`` tells recipients apart.
* ``relay``: everything is relayed to ``relayhost`` (the benchmark's capture sink).

Either way, a recipient whose local part starts with ``refuse-`` gets a permanent 550 5.1.1 at RCPT.

Postfix's master must start as root (it binds, then drops to ``mail_owner``), so the folder is made
world-traversable: the ``postfix`` and ``nobody`` users work inside it.
"""

from __future__ import annotations

import email
import email.policy
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

from tests.ports import restartable_port

POSTFIX = shutil.which("postfix") or "/usr/sbin/postfix"
SYSTEM_CONFIG_DIRECTORY = Path("/etc/postfix")
MAILBOX_OWNER = "nobody"
DEFAULT_DOMAINS = ("example.org", "example.test")
REFUSED_PREFIX = "refuse-"
REFUSAL_TEXT = "Recipient refused by the test upstream"


class PostfixError(RuntimeError):
    """The private Postfix instance could not be set up, started or stopped."""


def free_port(host: str = "127.0.0.1") -> int:
    """A loopback port that was free a moment ago (the caller binds it soon after)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_for_banner(host: str, port: int, timeout: float) -> bytes:
    """Connect until the server greets with 220 (plain TCP); return the greeting line."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=2) as sock:
                greeting = sock.recv(512)
                if greeting.startswith(b"220"):
                    return greeting
                last_error = PostfixError(f"unexpected greeting {greeting!r}")
        except OSError as exc:
            last_error = exc
        time.sleep(0.05)
    raise TimeoutError(f"no SMTP greeting on {host}:{port} within {timeout:.0f}s: {last_error}")


@dataclass(frozen=True)
class DeliveredMessage:
    """One file in the instance's Maildir, as Postfix's ``virtual`` agent wrote it (LF line ends)."""

    path: Path
    raw: bytes

    @property
    def message(self) -> EmailMessage:
        parsed = email.message_from_bytes(self.raw, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed

    @property
    def delivered_to(self) -> str:
        return str(self.message.get("Delivered-To", "")).lower()

    @property
    def header_block(self) -> bytes:
        return self.raw.partition(b"\n\n")[0] + b"\n"

    @property
    def body(self) -> bytes:
        """Everything after the first empty line, byte for byte."""
        return self.raw.partition(b"\n\n")[2]

    def header_values(self, name: str) -> list[str]:
        return [str(value) for value in self.message.get_all(name, [])]


class PostfixInstance:
    """A throwaway Postfix: ``start()``, deliver, ``stop()``; ``close()`` removes its folder."""

    def __init__(
        self,
        *,
        tls_cert_file: Path | None = None,
        tls_key_file: Path | None = None,
        domains: Iterable[str] = DEFAULT_DOMAINS,
        relayhost: tuple[str, int] | None = None,
        host: str = "127.0.0.1",
        extra_main_cf: dict[str, str] | None = None,
    ) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="conduct-postfix-"))
        self.root.chmod(0o755)
        self.config_directory = self.root / "etc"
        self.queue_directory = self.root / "queue"
        self.data_directory = self.root / "data"
        self.mailbox_base = self.root / "mail"
        self.maillog = self.root / "maillog"
        self.host = host
        self.port = 0
        self.tls_port = 0
        self.domains = tuple(domains)
        self.relayhost = relayhost
        self.tls_cert_file = tls_cert_file
        self.tls_key_file = tls_key_file
        self.extra_main_cf = dict(extra_main_cf or {})
        if self.config_directory.resolve() == SYSTEM_CONFIG_DIRECTORY:
            raise PostfixError("refusing to drive the system Postfix instance")

    @property
    def maildir(self) -> Path:
        return self.mailbox_base / "inbox"

    # --- configuration -----------------------------------------------------------------------------

    def _main_cf(self) -> dict[str, str]:
        mailbox = pwd.getpwnam(MAILBOX_OWNER)
        settings = {
            "compatibility_level": "3.6",
            "config_directory": str(self.config_directory),
            "queue_directory": str(self.queue_directory),
            "data_directory": str(self.data_directory),
            "mail_owner": "postfix",
            "setgid_group": "postdrop",
            "syslog_name": f"postfix-e2e-{self.root.name}",
            # No syslog daemon here, and the log must stay with the instance: postlogd writes it.
            "maillog_file": str(self.maillog),
            "maillog_file_prefixes": str(self.root),
            "inet_interfaces": self.host,
            "inet_protocols": "ipv4",
            "myhostname": "upstream.example.test",
            "mydomain": "example.test",
            "myorigin": "$myhostname",
            "mydestination": "",
            "mynetworks": "127.0.0.0/8",
            "smtpd_relay_restrictions": "permit_mynetworks, reject_unauth_destination",
            # A real 5xx on demand: recipients whose local part starts with "refuse-" are refused.
            "smtpd_recipient_restrictions": f"check_recipient_access regexp:{self.config_directory}/refuse",
            "alias_maps": "",
            "alias_database": "",
            "local_recipient_maps": "",
            "biff": "no",
            "append_dot_mydomain": "no",
            "smtp_dns_support_level": "disabled",
            "smtpd_peername_lookup": "no",
            "smtp_tls_security_level": "none",
            "message_size_limit": str(50 * 1024 * 1024),
            # Retry promptly after a restart so "upstream down, then up" tests stay fast.
            "queue_run_delay": "1s",
            "minimal_backoff_time": "1s",
            "maximal_backoff_time": "5s",
        }
        if self.relayhost is None:
            settings.update(
                {
                    "virtual_mailbox_domains": " ".join(self.domains),
                    "virtual_mailbox_base": str(self.mailbox_base),
                    # One Maildir for every address: any recipient in the test domains is valid.
                    "virtual_mailbox_maps": "static:inbox/",
                    "virtual_uid_maps": f"static:{mailbox.pw_uid}",
                    "virtual_gid_maps": f"static:{mailbox.pw_gid}",
                    "virtual_minimum_uid": "1",
                    "virtual_mailbox_limit": "0",
                }
            )
        else:
            relay_host, relay_port = self.relayhost
            settings.update({"relayhost": f"[{relay_host}]:{relay_port}", "relay_domains": ""})
        if self.tls_cert_file is not None and self.tls_key_file is not None:
            settings.update(
                {
                    "smtpd_tls_security_level": "may",
                    "smtpd_tls_chain_files": f"{self.tls_key_file}, {self.tls_cert_file}",
                    "smtpd_tls_received_header": "yes",
                }
            )
        settings.update(self.extra_main_cf)
        return settings

    def _master_cf(self) -> str:
        services = [f"{self.host}:{self.port} inet n - n - - smtpd"]
        if self.tls_port:
            services.append(
                f"{self.host}:{self.tls_port} inet n - n - - smtpd\n"
                "  -o smtpd_tls_wrappermode=yes\n  -o smtpd_tls_security_level=encrypt"
            )
        # Debian's master.cf chroots daemons into /var/spool/postfix; nothing here is chrooted.
        services += [
            "pickup unix n - n 60 1 pickup",
            "cleanup unix n - n - 0 cleanup",
            "qmgr unix n - n 300 1 qmgr",
            "tlsmgr unix - - n 1000? 1 tlsmgr",
            "rewrite unix - - n - - trivial-rewrite",
            "bounce unix - - n - 0 bounce",
            "defer unix - - n - 0 bounce",
            "trace unix - - n - 0 bounce",
            "verify unix - - n - 1 verify",
            "flush unix n - n 1000? 0 flush",
            "proxymap unix - - n - - proxymap",
            "smtp unix - - n - - smtp",
            "relay unix - - n - - smtp",
            "showq unix n - n - - showq",
            "error unix - - n - - error",
            "retry unix - - n - - error",
            "discard unix - - n - - discard",
            "local unix - n n - - local",
            "virtual unix - n n - - virtual",
            "lmtp unix - - n - - lmtp",
            "anvil unix - - n - 1 anvil",
            "scache unix - - n - 1 scache",
            "postlog unix-dgram n - n - 1 postlogd",
        ]
        return "\n".join(services) + "\n"

    def write_config(self) -> None:
        for folder in (self.config_directory, self.queue_directory):
            folder.mkdir(exist_ok=True)
        self.data_directory.mkdir(exist_ok=True)
        shutil.chown(self.data_directory, user="postfix")
        self.mailbox_base.mkdir(exist_ok=True)
        shutil.chown(self.mailbox_base, user=MAILBOX_OWNER, group=pwd.getpwnam(MAILBOX_OWNER).pw_gid)
        main_cf = "".join(f"{key} = {value}\n" for key, value in self._main_cf().items())
        (self.config_directory / "main.cf").write_text(main_cf)
        (self.config_directory / "master.cf").write_text(self._master_cf())
        (self.config_directory / "refuse").write_text(f"/^{REFUSED_PREFIX}/ 550 5.1.1 {REFUSAL_TEXT}\n")

    # --- lifecycle ---------------------------------------------------------------------------------

    def _postfix(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "MAIL_CONFIG": str(self.config_directory)}
        return subprocess.run(
            [POSTFIX, "-c", str(self.config_directory), *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL,
        )

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.maillog.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no maillog written)"

    def _failure(self, what: str, result: subprocess.CompletedProcess[str] | None = None) -> PostfixError:
        output = f"\n{result.stdout}{result.stderr}" if result is not None else ""
        return PostfixError(
            f"{what} (instance {self.config_directory}){output}\n--- maillog tail ---\n{self.log_tail()}"
        )

    def start(self, timeout: float = 20) -> None:
        """Start master (choosing ports on first start, keeping them on restarts) and wait for 220."""
        if os.geteuid() != 0:
            raise PostfixError(
                "the end-to-end suite runs a private Postfix whose master must start as root; "
                "run the suite as root (scripts/test does on CI)"
            )
        if not Path(POSTFIX).exists():
            raise PostfixError(f"{POSTFIX} not found: install Postfix (scripts/test does it)")
        first_start = self.port == 0
        for attempt in range(3):
            if first_start:  # ports no outgoing connection can take while Postfix is stopped
                self.port = restartable_port(self.host)
                if self.tls_cert_file is not None:
                    self.tls_port = restartable_port(self.host)
            self.write_config()
            result = self._postfix("start")
            if result.returncode != 0:
                raise self._failure("`postfix start` failed", result)
            try:
                wait_for_banner(self.host, self.port, timeout)
                if self.tls_port:
                    self._wait_listening(self.tls_port, timeout)
                return
            except TimeoutError as exc:
                self.stop()
                if not first_start or attempt == 2:
                    raise self._failure(f"Postfix did not answer on {self.host}:{self.port}: {exc}") from exc
        raise self._failure("Postfix could not start")  # pragma: no cover - the loop returns or raises

    def _wait_listening(self, port: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with socket.create_connection((self.host, port), timeout=2):
                    return
            except OSError as exc:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"nothing listens on {self.host}:{port}: {exc}") from exc
                time.sleep(0.05)

    @property
    def running(self) -> bool:
        # `postfix status` reads the master's lock and pid file in this instance's queue directory.
        return self._postfix("status").returncode == 0

    def stop(self) -> None:
        """Stop master and its children; wait until the listening port is closed."""
        if not self.queue_directory.exists() or not self.running:
            return
        result = self._postfix("stop", timeout=30)
        if result.returncode != 0 and self.running:
            raise self._failure("`postfix stop` failed", result)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    pass
            except OSError:
                return
            time.sleep(0.05)
        raise self._failure(f"Postfix still listens on {self.host}:{self.port} after stop")

    def close(self) -> None:
        """Stop and remove the instance's folder."""
        try:
            self.stop()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    # --- the Maildir -------------------------------------------------------------------------------

    def messages(self) -> list[DeliveredMessage]:
        """Every delivered message; the virtual agent renames finished files into new/ atomically."""
        found: list[DeliveredMessage] = []
        for sub in ("new", "cur"):
            folder = self.maildir / sub
            if folder.is_dir():
                for path in sorted(folder.iterdir()):
                    found.append(DeliveredMessage(path=path, raw=path.read_bytes()))
        return found

    def queue_is_empty(self) -> bool:
        """Nothing waiting in Postfix's own queue (every accepted message delivered or bounced)."""
        return not any(
            path.is_file()
            for folder in ("maildrop", "incoming", "active", "deferred")
            for path in (self.queue_directory / folder).rglob("*")
        )

    def messages_to(self, recipient: str) -> list[DeliveredMessage]:
        wanted = recipient.lower()
        return [message for message in self.messages() if message.delivered_to == wanted]

    def wait_for(
        self,
        match: Callable[[list[DeliveredMessage]], bool],
        timeout: float = 20,
        what: str = "messages",
    ) -> list[DeliveredMessage]:
        """Poll the Maildir until ``match(all messages)`` holds; fail with the maillog if it never does."""
        deadline = time.monotonic() + timeout
        while True:
            current = self.messages()
            if match(current):
                return current
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out after {timeout:.0f}s waiting for {what} in {self.maildir} "
                    f"({len(current)} message(s) there)\n--- Postfix maillog tail ---\n{self.log_tail()}"
                )
            time.sleep(0.05)

    def wait_for_recipient(
        self, recipient: str, count: int = 1, timeout: float = 20
    ) -> list[DeliveredMessage]:
        """Wait until at least ``count`` messages were delivered to ``recipient``; return them."""
        wanted = recipient.lower()
        self.wait_for(
            lambda messages: sum(message.delivered_to == wanted for message in messages) >= count,
            timeout=timeout,
            what=f"{count} message(s) to {recipient}",
        )
        return self.messages_to(recipient)
