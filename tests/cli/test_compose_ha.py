"""docker-compose.yml's `ha` profile (two gateways, one PostgreSQL), checked without a Docker engine.

Every CONDUCT_GATEWAY_* variable of the profile's services is loaded through the settings model (an
unknown key is refused); the password reaches PostgreSQL and the gateways only as a secret file; the
migration runs once before the gateways; both gateways mount the same keys and users file; every
file mounted is in the repository or made by ``scripts/ha-secrets``, whose keys the gateway accepts.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
from psycopg import conninfo

from gateway.errors import ConfigError
from gateway.settings import ENV_PREFIX, GatewaySettings, load_settings
from gateway.state.fingerprints import KEY_BYTES, key_path, load_or_create_key
from gateway.state.registry import CaseRegistry
from tests.cli.test_compose import (
    COMPOSE,
    DOCKERFILE,
    REPO,
    container_env,
    environment,
    mount_holding,
    mounts,
    published,
)

HA = ("postgresql", "state-migrate", "gateway-a", "gateway-b")
GATEWAYS = ("gateway-a", "gateway-b")
SECRETS_SCRIPT = REPO / "scripts" / "ha-secrets"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    from ruamel.yaml import YAML

    loaded = YAML(typ="safe", pure=True).load(COMPOSE.read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


def settings_of(service: dict[str, Any]) -> GatewaySettings:
    """The settings a container of ``service`` runs with: the shipped file and its variables, loaded
    as ``serve`` loads them (an unknown CONDUCT_GATEWAY_* key is an error)."""
    env = {k: v for k, v in container_env(service).items() if k.startswith(ENV_PREFIX)}
    env.pop("CONDUCT_GATEWAY_CONFIG")
    return load_settings(REPO / "config" / "gateway.yaml", environ=env)


def secret_targets(service: dict[str, Any]) -> dict[str, str]:
    """Path inside the container -> secret name (short form mounts at /run/secrets/NAME)."""
    found = {}
    for secret in service.get("secrets", []):
        if isinstance(secret, str):
            found[f"/run/secrets/{secret}"] = secret
        else:
            target = secret.get("target", secret["source"])
            found[target if target.startswith("/") else f"/run/secrets/{target}"] = secret["source"]
    return found


def test_the_ha_services_are_in_the_profile_and_the_default_ones_are_not(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in HA:
        assert services[name]["profiles"] == ["ha"], name
    for name in ("gateway", "mailpit"):  # `docker compose up` starts what it always did
        assert "profiles" not in services[name], name
        assert "secrets" not in services[name], name
    assert services["gateway"]["depends_on"] == {"mailpit": {"condition": "service_started"}}


@pytest.mark.parametrize("name", ["state-migrate", *GATEWAYS])
def test_every_variable_names_a_settings_key_and_takes_effect(compose: dict[str, Any], name: str) -> None:
    service = compose["services"][name]
    settings = settings_of(service)
    variables = {k: v for k, v in environment(service).items() if k.startswith(ENV_PREFIX)}
    assert len(variables) >= 7
    for variable, value in variables.items():
        node: Any = settings
        for part in variable.removeprefix(ENV_PREFIX).lower().split("__"):
            assert hasattr(node, part), f"{name}: {variable}: no settings key {part!r}"
            node = getattr(node, part)
        if isinstance(node, Path):
            assert node == Path(value), variable
        elif isinstance(node, int | float) and re.fullmatch(r"\d+(\.\d+)?", value):
            assert node == float(value), variable
        elif isinstance(node, str):
            assert node == value, variable
    assert settings.state.backend == "postgresql"


def test_a_misspelt_state_variable_would_be_caught(compose: dict[str, Any]) -> None:
    service = dict(compose["services"]["gateway-a"])
    service["environment"] = {**environment(service), "CONDUCT_GATEWAY_STATE__POSTGRESQL__DNS": "x"}
    with pytest.raises(ConfigError, match="CONDUCT_GATEWAY_STATE__POSTGRESQL__DNS"):
        settings_of(service)


def test_the_password_is_a_secret_file_never_a_setting(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, service in services.items():
        for variable, value in environment(service).items():
            assert "password=" not in value.lower(), f"{name}: {variable} holds a password"
            assert variable != "POSTGRES_PASSWORD", f"{name}: use POSTGRES_PASSWORD_FILE"
    server = services["postgresql"]
    server_file = environment(server)["POSTGRES_PASSWORD_FILE"]
    secret = secret_targets(server)[server_file]
    for name in ("state-migrate", *GATEWAYS):
        password_file = settings_of(services[name]).state.postgresql.password_file
        assert password_file is not None
        assert secret_targets(services[name])[str(password_file)] == secret, name
    assert compose["secrets"][secret]["file"].startswith("./secrets/")


def test_the_gateways_reach_the_database_the_server_creates(compose: dict[str, Any]) -> None:
    server = compose["services"]["postgresql"]
    image = server["image"]
    assert re.fullmatch(r"postgres:\d+\.\d+-[a-z]+", image), f"{image}: pin a release"
    dsn = conninfo.conninfo_to_dict(settings_of(compose["services"]["gateway-a"]).state.postgresql.dsn)
    assert dsn["host"] == "postgresql"
    assert dsn["dbname"] == environment(server)["POSTGRES_DB"]
    assert dsn["user"] == environment(server)["POSTGRES_USER"]
    data = mount_holding(server, "/var/lib/postgresql/data")
    assert data["type"] == "volume" and data["source"] in compose["volumes"]
    assert not published(server), "the database is reached on the compose network only"


def test_migrate_runs_once_after_the_server_is_up_and_before_either_gateway(compose: dict[str, Any]) -> None:
    services = compose["services"]
    migrate = services["state-migrate"]
    assert migrate["command"][:2] == ["state", "migrate"]
    assert migrate["restart"] == "no"
    assert migrate["depends_on"] == {"postgresql": {"condition": "service_healthy"}}
    assert "pg_isready" in services["postgresql"]["healthcheck"]["test"]
    for name in GATEWAYS:
        gateway = services[name]
        assert gateway["command"][0] == "serve"
        assert gateway["depends_on"]["state-migrate"] == {"condition": "service_completed_successfully"}
        assert settings_of(gateway).state == settings_of(migrate).state, name
        assert gateway["image"] == migrate["image"]


def test_both_gateways_share_the_keys_and_users_file_but_keep_their_own_state(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    seen: dict[str, set[str]] = {"fingerprints": set(), "registry": set(), "users": set(), "state": set()}
    for name in GATEWAYS:
        gateway = services[name]
        settings = settings_of(gateway)
        secrets = secret_targets(gateway)
        # The fingerprints key is read from state_dir/fingerprints.key: the secret is mounted there.
        seen["fingerprints"].add(secrets[str(key_path(settings.state_dir))])
        assert settings.registry.key_file is not None
        seen["registry"].add(secrets[str(settings.registry.key_file)])
        users = mount_holding(gateway, str(settings.auth.users_file))
        assert users["type"] == "volume" and not users.get("read_only", False)
        seen["users"].add(users["source"])
        state = mount_holding(gateway, str(settings.state_dir / "audit"))
        assert state["type"] == "volume"
        seen["state"].add(state["source"])
    assert {k: len(v) for k, v in seen.items()} == {"fingerprints": 1, "registry": 1, "users": 1, "state": 2}
    assert seen["fingerprints"] != seen["registry"]
    # The users file's folder exists in the image, owned by the gateway user, so a new volume is too.
    folder = str(PurePosixPath(str(settings_of(services["gateway-a"]).auth.users_file)).parent)
    build = DOCKERFILE.read_text(encoding="utf-8").replace("\\\n", " ")
    assert re.search(rf"mkdir -p [^&]*{re.escape(folder)}\b", build)
    assert re.search(rf"chown -R gateway:gateway [^&]*{re.escape(folder)}\b", build)


def test_the_ha_gateways_listen_on_host_loopback_ports_of_their_own(compose: dict[str, Any]) -> None:
    host_ports: list[int] = []
    for service in compose["services"].values():
        for address, port in published(service).values():
            assert address == "127.0.0.1"
            host_ports.append(port)
    assert len(host_ports) == len(set(host_ports)), "a host port is published twice"
    for name in GATEWAYS:
        settings = settings_of(compose["services"][name])
        ports = published(compose["services"][name])
        for port in (
            settings.server.submission.port,
            settings.server.submissions.port,
            settings.metrics.port,
        ):
            assert port in ports, f"{name}: {port} is not published"


def test_every_mounted_file_is_in_the_repository_or_made_by_the_secrets_script(
    compose: dict[str, Any], tmp_path: Path
) -> None:
    for name in HA:
        for mount in mounts(compose["services"][name]):
            if mount["type"] == "bind":
                assert (REPO / mount["source"]).exists(), f"{name}: {mount['source']}"
        for secret in secret_targets(compose["services"][name]).values():
            assert secret in compose["secrets"], f"{name}: secret {secret} is not declared"
    files = {PurePosixPath(entry["file"]) for entry in compose["secrets"].values()}
    assert {path.parent for path in files} == {PurePosixPath("secrets")}
    assert "/secrets/" in (REPO / ".gitignore").read_text().split()
    assert "secrets" in (REPO / ".dockerignore").read_text().split()

    made = subprocess.run(
        ["bash", str(SECRETS_SCRIPT), str(tmp_path / "secrets")], capture_output=True, text=True
    )
    assert made.returncode == 0, made.stderr
    folder = tmp_path / "secrets"
    assert {path.name for path in folder.iterdir()} == {path.name for path in files}
    assert folder.stat().st_mode & 0o777 == 0o700
    password = (folder / "postgresql-password").read_text()
    assert len(password.strip()) >= 24 and password.count("\n") == 1
    assert len(CaseRegistry.key_from_file(folder / "registry.key").secret) == 32
    key = (folder / "fingerprints.key").read_bytes()
    assert len(key) == KEY_BYTES and load_or_create_key(folder / "fingerprints.key") == key

    again = subprocess.run(["bash", str(SECRETS_SCRIPT), str(folder)], capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert (folder / "fingerprints.key").read_bytes() == key, "a key is never replaced"
    assert (folder / "postgresql-password").read_text() == password
