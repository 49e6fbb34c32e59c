"""The `ha` profile's settings, run as processes on this machine: what Docker would start, without Docker.

Each service's CONDUCT_GATEWAY_* variables (the image's and the compose file's) are used as they are,
with each path inside the container mapped to a folder here by the service's own mounts and secrets
(a named volume is one folder whichever service mounts it; a secret is the file scripts/ha-secrets
made), the host names mapped to the private PostgreSQL and a closed port, and the listeners moved to
loopback port 0. Then, as Compose would: `state migrate` on an empty database, the two gateways
started on it, a user added through one and a message submitted through the other.
"""

from __future__ import annotations

import re
import ssl
import subprocess
import time
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path, PurePosixPath
from typing import Any

import aiosmtplib
import pytest

from gateway.policy.loader import read_policy
from tests.cli.test_compose import COMPOSE, DOCKERFILE, REPO, container_env, mounts
from tests.cli.test_compose_ha import SECRETS_SCRIPT, secret_targets
from tests.e2e.gateway_process import LISTENING, conduct_gateway_command
from tests.e2e.postfix import free_port
from tests.postgresql import ScratchDatabase

CONTAINER_CONFIG = "/etc/conduct-gateway/config/gateway.yaml"


def image_copies() -> dict[str, Path]:
    """Where the Dockerfile's COPY lines put repository files in the image (the shipped policy)."""
    found = re.findall(r"^COPY (\S+) (\S+)$", DOCKERFILE.read_text(encoding="utf-8"), re.MULTILINE)
    return {target: REPO / source for source, target in found if (REPO / source).is_file()}


class Host:
    """The Docker host, simulated: named volumes and the secrets folder under one temporary folder."""

    def __init__(self, root: Path, compose: dict[str, Any], database: ScratchDatabase) -> None:
        self.root = root
        self.compose = compose
        self.database = database
        subprocess.run(["bash", str(SECRETS_SCRIPT), str(root / "secrets")], check=True, capture_output=True)
        # The server exists already: its password stands in for the one the script made.
        (root / "secrets" / "postgresql-password").write_text(database.password + "\n")
        self.closed_port = free_port("127.0.0.1")

    def path(self, name: str, inside: str) -> Path:
        """The host path behind ``inside``, by the service's mounts and secrets (deepest target wins);
        elsewhere, the container's own file system (one folder per service, lost with it)."""
        service = self.compose["services"][name]
        places: dict[str, Path] = {"/": self.root / "containers" / name}
        for mount in mounts(service):
            if mount["type"] == "volume":
                folder = self.root / "volumes" / mount["source"]
                folder.mkdir(parents=True, exist_ok=True, mode=0o700)
                places[mount["target"]] = folder
            else:
                places[mount["target"]] = REPO / mount["source"]
        for target, secret in secret_targets(service).items():
            places[target] = self.root / PurePosixPath(self.compose["secrets"][secret]["file"])
            # A secret mounted inside a volume shows through it, as Docker's bind mount on top does.
            holder = max(
                (t for t in places if t != target and PurePosixPath(target).is_relative_to(t)), key=len
            )
            if holder != "/":
                seen = places[holder] / PurePosixPath(target).relative_to(holder)
                if not seen.is_symlink():
                    seen.symlink_to(places[target])
        places.update(image_copies())
        target = max((t for t in places if PurePosixPath(inside).is_relative_to(t)), key=len)
        local = places[target] / PurePosixPath(inside).relative_to(target)
        if target == "/":  # the image has the folders the settings name (Dockerfile: mkdir -p)
            local.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        return local

    def environment(self, name: str) -> dict[str, str]:
        service = self.compose["services"][name]
        env = {k: v for k, v in container_env(service).items() if k.startswith("CONDUCT_GATEWAY_")}
        env["CONDUCT_GATEWAY_CONFIG"] = str(self.path(name, env["CONDUCT_GATEWAY_CONFIG"]))
        for key, value in env.items():
            if value.startswith("/") and key != "CONDUCT_GATEWAY_CONFIG":
                env[key] = str(self.path(name, value))
        # The compose network's names, as this machine reaches them.
        dsn = env["CONDUCT_GATEWAY_STATE__POSTGRESQL__DSN"]
        assert dsn.startswith("host=postgresql ")
        env["CONDUCT_GATEWAY_STATE__POSTGRESQL__DSN"] = self.database.dsn
        if "CONDUCT_GATEWAY_DELIVERY__UPSTREAM__HOST" in env:
            env["CONDUCT_GATEWAY_DELIVERY__UPSTREAM__HOST"] = "127.0.0.1"
            env["CONDUCT_GATEWAY_DELIVERY__UPSTREAM__PORT"] = str(self.closed_port)
        for listener in ("SERVER__SUBMISSION", "SERVER__SUBMISSIONS", "METRICS"):
            env[f"CONDUCT_GATEWAY_{listener}__HOST"] = "127.0.0.1"
            env[f"CONDUCT_GATEWAY_{listener}__PORT"] = "0"
        # The image keeps the shipped policy where the shipped settings point (test_compose checks it).
        env["CONDUCT_GATEWAY_POLICY__PATH"] = str(
            self.path(name, "/etc/conduct-gateway/policies/default.yaml")
        )
        return {"PATH": "/usr/bin:/bin", "HOME": str(self.root), **env}

    def run(self, name: str, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*conduct_gateway_command(), *args],
            env=self.environment(name),
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )


class Service:
    """``serve`` as one compose service runs it, until ``event=ready``."""

    def __init__(self, host: Host, name: str) -> None:
        command = host.compose["services"][name]["command"]
        assert command == ["serve", "--config", CONTAINER_CONFIG]
        self.log = host.root / f"{name}.log"
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [*conduct_gateway_command(), "serve"],
                env=host.environment(name),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 60
        while "event=ready" not in (text := self.log.read_text(errors="replace")):
            assert self.process.poll() is None, f"{name} exited:\n{text}"
            assert time.monotonic() < deadline, f"{name} was not ready:\n{text}"
            time.sleep(0.1)
        self.ports = {m.group(1): int(m.group(3)) for m in LISTENING.finditer(text)}

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)


@pytest.fixture
def host(tmp_path: Path, pg_empty_database: ScratchDatabase) -> Host:
    from ruamel.yaml import YAML

    compose = YAML(typ="safe", pure=True).load(COMPOSE.read_text(encoding="utf-8"))
    return Host(tmp_path, compose, pg_empty_database)


@pytest.fixture
def services() -> Iterator[list[Service]]:
    started: list[Service] = []
    yield started
    for service in started:
        service.stop()


async def test_the_ha_profile_migrates_then_two_gateways_share_the_database_keys_and_users(
    host: Host, services: list[Service]
) -> None:
    migrated = host.run("state-migrate", *host.compose["services"]["state-migrate"]["command"][:2])
    assert migrated.returncode == 0, migrated.stderr
    assert "applied 0001" in migrated.stdout

    services.append(Service(host, "gateway-a"))
    services.append(Service(host, "gateway-b"))
    secret_key = (host.root / "secrets" / "fingerprints.key").read_bytes()
    for name in ("gateway-a", "gateway-b"):
        state_dir = Path(host.environment(name)["CONDUCT_GATEWAY_STATE_DIR"])
        assert (state_dir / "fingerprints.key").read_bytes() == secret_key, name
    assert (
        len({Path(host.environment(n)["CONDUCT_GATEWAY_STATE_DIR"]) for n in ("gateway-a", "gateway-b")}) == 2
    )

    policy, _ = read_policy(Path(host.environment("gateway-a")["CONDUCT_GATEWAY_POLICY__PATH"]))
    member = str(policy.organisation.members[0].addresses[0])
    conduct = str(policy.organisation.conduct_address)
    added = host.run("gateway-a", "user", "add", "--password-stdin", member, stdin="a long test password\n")
    assert added.returncode == 0, added.stderr

    mail = EmailMessage()
    mail["From"], mail["To"], mail["Cc"] = member, "someone@example.net", conduct
    mail["Subject"], mail["Message-ID"] = "through the second gateway", "<ha-profile-1@example.org>"
    mail.set_content("Accepted by gateway-b with the account added through gateway-a.\n")
    tls = ssl.create_default_context()
    tls.check_hostname, tls.verify_mode = False, ssl.CERT_NONE  # each gateway's own first-start certificate
    async with aiosmtplib.SMTP(
        hostname="127.0.0.1",
        port=services[1].ports["submission"],
        start_tls=True,
        tls_context=tls,
        timeout=30,
    ) as client:
        await client.login(member, "a long test password")
        errors, reply = await client.send_message(mail, recipients=["someone@example.net", conduct])
    assert errors == {} and reply.startswith("2"), reply

    checked = host.run("gateway-a", "state", "check")
    assert checked.returncode == 0, checked.stderr
    assert "schema:   current" in checked.stdout
    assert re.search(r"audit:    chain head at entry \d+", checked.stdout), checked.stdout
    for service in services:
        service.stop()
        assert "Traceback" not in service.log.read_text(errors="replace")
