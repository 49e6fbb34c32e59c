"""docker-compose.yml and Dockerfile wiring, checked without a Docker engine.

The compose file is read as YAML; every CONDUCT_GATEWAY_* variable it (or the image) sets must be a
real settings key with a valid value, proved by loading the shipped settings with that environment;
published ports, volumes and the upstream must agree with the settings that result.
"""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version
from ruamel.yaml import YAML

from gateway.errors import ConfigError
from gateway.settings import ENV_PREFIX, GatewaySettings, apply_environment, load_settings
from gateway.yamlsource import load_yaml_file, validate_yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "Dockerfile"
MAILPIT_SMTP_PORT = 1025  # Mailpit's SMTP port unless MP_SMTP_BIND_ADDR says otherwise


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded = YAML(typ="safe", pure=True).load(COMPOSE.read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


@pytest.fixture(scope="module")
def gateway(compose: dict[str, Any]) -> dict[str, Any]:
    service = compose["services"]["gateway"]
    assert isinstance(service, dict)
    return service


def environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment in either Compose form (mapping, or list of NAME=value)."""
    raw = service.get("environment", {})
    if isinstance(raw, list):
        return dict(item.split("=", 1) for item in raw)
    return {name: "" if value is None else str(value) for name, value in raw.items()}


def dockerfile_env() -> dict[str, str]:
    """The ENV instructions of the Dockerfile (``ENV A=1 \\`` continuation lines joined)."""
    text = DOCKERFILE.read_text(encoding="utf-8").replace("\\\n", " ")
    found: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("ENV "):
            for word in shlex.split(line[4:]):
                name, _, value = word.partition("=")
                found[name] = value
    return found


def container_env(service: dict[str, Any]) -> dict[str, str]:
    return {**dockerfile_env(), **environment(service)}


def mounts(service: dict[str, Any]) -> list[dict[str, Any]]:
    """Volumes in long form, whichever form the file uses."""
    found = []
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            parts = volume.split(":")
            source, target = parts[0], parts[1]
            kind = "bind" if source.startswith((".", "/")) else "volume"
            found.append({"type": kind, "source": source, "target": target, "read_only": "ro" in parts[2:]})
        else:
            found.append(volume)
    return found


def mount_holding(service: dict[str, Any], path: str) -> dict[str, Any]:
    """The mount whose target is the deepest folder containing ``path``."""
    candidates = [m for m in mounts(service) if PurePosixPath(path).is_relative_to(m["target"])]
    assert candidates, f"{path} is on no volume: it would be lost with the container"
    return max(candidates, key=lambda m: len(m["target"]))


def settings_in_container(service: dict[str, Any]) -> GatewaySettings:
    """The settings the container runs with: the shipped file plus the image's and compose's variables,
    with relative paths resolved where the file sits inside the container."""
    env = gateway_variables(service)
    loaded = load_yaml_file(REPO / "config" / "gateway.yaml")
    apply_environment(loaded, env)
    settings = validate_yaml(GatewaySettings, loaded)
    return settings.resolve(Path(env["CONDUCT_GATEWAY_CONFIG"]).parent)


def published(service: dict[str, Any]) -> dict[int, tuple[str, int]]:
    """container port -> (host address, host port), from "[host:]hport:cport" or the long form."""
    found = {}
    for port in service.get("ports", []):
        if isinstance(port, dict):
            host_ip, host_port, target = port.get("host_ip", ""), port["published"], port["target"]
        else:
            parts = str(port).split(":")
            assert len(parts) in (2, 3), f"port {port}: give the host port (and address) explicitly"
            host_ip, host_port, target = ("", *parts) if len(parts) == 2 else parts
        found[int(target)] = (host_ip or "0.0.0.0", int(host_port))
    return found


# --- every variable is a real setting ----------------------------------------------------------------


def gateway_variables(service: dict[str, Any]) -> dict[str, str]:
    return {k: v for k, v in container_env(service).items() if k.startswith(ENV_PREFIX)}


def test_there_are_variables_to_check(gateway: dict[str, Any]) -> None:
    assert len(gateway_variables(gateway)) >= 10


def test_every_variable_names_a_settings_key_and_takes_effect(gateway: dict[str, Any]) -> None:
    settings = settings_in_container(gateway)
    for name, value in gateway_variables(gateway).items():
        if name == "CONDUCT_GATEWAY_CONFIG":
            continue
        node: Any = settings
        for part in name.removeprefix(ENV_PREFIX).lower().split("__"):
            assert hasattr(node, part), f"{name}: no settings key {part!r}"
            node = getattr(node, part)
        if isinstance(node, Path):
            assert node == Path(value), name
        elif isinstance(node, bool):
            assert node is (value.lower() in ("1", "true", "yes", "on")), name
        elif isinstance(node, int | float) and re.fullmatch(r"\d+(\.\d+)?", value):
            assert node == float(value), name
        elif isinstance(node, str):
            assert node == value, name


def test_a_misspelt_variable_would_be_caught(gateway: dict[str, Any]) -> None:
    # The check above relies on load_settings refusing unknown keys; prove that it does.
    env = {**gateway_variables(gateway), "CONDUCT_GATEWAY_DELIVERY__UPSTREAM__HOTS": "mailpit"}
    env.pop("CONDUCT_GATEWAY_CONFIG", None)
    with pytest.raises(ConfigError, match="CONDUCT_GATEWAY_DELIVERY__UPSTREAM__HOTS"):
        load_settings(REPO / "config" / "gateway.yaml", environ=env)


def test_config_file_given_to_serve_is_on_the_config_mount(gateway: dict[str, Any]) -> None:
    command = gateway["command"]
    args = command if isinstance(command, list) else shlex.split(command)
    assert args[0] == "serve"
    config_path = args[args.index("--config") + 1]
    mount = mount_holding(gateway, config_path)
    assert mount["type"] == "bind"
    assert (REPO / mount["source"] / PurePosixPath(config_path).relative_to(mount["target"])).is_file()
    assert dockerfile_env()["CONDUCT_GATEWAY_CONFIG"] == config_path  # `exec ... user add` finds it too


# --- ports ---------------------------------------------------------------------------------------------


def test_listeners_are_published_on_host_loopback_only(gateway: dict[str, Any]) -> None:
    settings = settings_in_container(gateway)
    ports = published(gateway)
    for listener in (settings.server.submission, settings.server.submissions):
        assert listener.enabled
        assert listener.host == "0.0.0.0", "inside a container, loopback is unreachable from the host"
        assert listener.port in ports, f"listener port {listener.port} is not published"
        assert ports[listener.port][0] == "127.0.0.1"
    assert ports[settings.server.submission.port][1] == 2587
    assert ports[settings.server.submissions.port][1] == 2465


def test_metrics_published_on_host_loopback_and_health_checked(gateway: dict[str, Any]) -> None:
    settings = settings_in_container(gateway)
    assert settings.metrics.enabled
    assert published(gateway)[settings.metrics.port][0] == "127.0.0.1"
    test = " ".join(gateway["healthcheck"]["test"])
    assert f"http://127.0.0.1:{settings.metrics.port}/healthz" in test


def test_the_image_exposes_the_listener_ports(gateway: dict[str, Any]) -> None:
    settings = settings_in_container(gateway)
    exposed = re.search(r"^EXPOSE (.+)$", DOCKERFILE.read_text(), re.MULTILINE)
    assert exposed is not None
    wanted = {settings.server.submission.port, settings.server.submissions.port, settings.metrics.port}
    assert {int(p) for p in exposed.group(1).split()} == wanted


# --- upstream ------------------------------------------------------------------------------------------


def test_upstream_is_the_mailpit_service(compose: dict[str, Any], gateway: dict[str, Any]) -> None:
    settings = settings_in_container(gateway)
    upstream = settings.delivery.upstream
    assert upstream is not None
    assert upstream.host in compose["services"]
    mailpit = compose["services"][upstream.host]
    assert mailpit["image"].startswith("axllent/mailpit:")
    assert not mailpit["image"].endswith(":latest"), "pin the image so the try-out keeps working"
    bind = environment(mailpit).get("MP_SMTP_BIND_ADDR", f"0.0.0.0:{MAILPIT_SMTP_PORT}")
    assert upstream.port == int(bind.rsplit(":", 1)[1])
    assert upstream.security == "none"  # Mailpit without MP_SMTP_TLS_* speaks plain SMTP only
    assert upstream.host in gateway["depends_on"]


def test_mailpit_web_ui_is_on_host_loopback(compose: dict[str, Any]) -> None:
    mailpit = compose["services"]["mailpit"]
    ui = environment(mailpit).get("MP_UI_BIND_ADDR", "0.0.0.0:8025")
    assert published(mailpit)[int(ui.rsplit(":", 1)[1])] == ("127.0.0.1", 8025)
    assert all(host == "127.0.0.1" for host, _ in published(mailpit).values())


# --- volumes -------------------------------------------------------------------------------------------


def test_state_spool_and_users_file_are_on_named_volumes(
    compose: dict[str, Any], gateway: dict[str, Any]
) -> None:
    settings = settings_in_container(gateway)
    state = mount_holding(gateway, str(settings.state_dir))
    spool = mount_holding(gateway, str(settings.state_dir / "spool"))
    users = mount_holding(gateway, str(settings.auth.users_file))
    for mount in (state, spool, users):
        assert mount["type"] == "volume"
        assert not mount.get("read_only", False)
        assert mount["source"] in compose["volumes"], f"volume {mount['source']} is not declared"
    assert spool["target"] == str(settings.state_dir / "spool")


def test_config_is_a_read_only_bind_of_the_repository(gateway: dict[str, Any]) -> None:
    config_mount = mount_holding(gateway, dockerfile_env()["CONDUCT_GATEWAY_CONFIG"])
    assert config_mount["type"] == "bind"
    assert config_mount["read_only"] is True
    assert (REPO / config_mount["source"]).resolve() == REPO / "config"


def test_the_image_holds_the_shipped_policy_where_the_settings_look(gateway: dict[str, Any]) -> None:
    settings = settings_in_container(gateway)
    copies = re.findall(r"^COPY (\S+) (\S+)$", DOCKERFILE.read_text(encoding="utf-8"), re.MULTILINE)
    assert ("gateway/data/default-policy.yaml", str(settings.policy.path)) in copies
    # A policy of one's own is mounted read-only over it (commented out in the compose file).
    assert "#   source: ./policies" in COMPOSE.read_text(encoding="utf-8")


def test_every_named_volume_is_declared(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for mount in mounts(service):
            if mount["type"] == "volume":
                assert mount["source"] in compose["volumes"], f"{name}: {mount['source']}"


# --- lifecycle -----------------------------------------------------------------------------------------


def test_docker_waits_longer_than_the_shutdown_grace(gateway: dict[str, Any]) -> None:
    settings = settings_in_container(gateway)
    grace = re.fullmatch(r"(\d+)s", gateway["stop_grace_period"])
    assert grace is not None
    assert int(grace.group(1)) > settings.shutdown_grace
    assert gateway.get("stop_signal", "SIGTERM") == "SIGTERM"


def test_dockerfile_builds_from_python_311_slim_and_installs_the_package() -> None:
    text = DOCKERFILE.read_text()
    # Pinned by version: an exact Python 3.11 release on a named Debian release, never a moving tag.
    assert re.search(r"^FROM python:3\.11\.[0-9]+-slim-[a-z]+$", text, re.MULTILINE)
    assert re.search(r"^RUN pip install -c constraints\.txt \. ", text, re.MULTILINE)
    assert re.search(r"^USER gateway$", text, re.MULTILINE), "run unprivileged"
    assert '"conduct-gateway"' in text


def test_build_context_holds_what_the_dockerfile_copies(gateway: dict[str, Any]) -> None:
    context = REPO / gateway["build"]["context"]
    ignored = (REPO / ".dockerignore").read_text().split()
    for line in DOCKERFILE.read_text().splitlines():
        if line.startswith("COPY "):
            for source in shlex.split(line)[1:-1]:
                assert (context / source).exists(), f"COPY {source}: not in the build context"
                assert source not in ignored, f"COPY {source}: excluded by .dockerignore"


def test_the_image_installs_pinned_versions_of_every_runtime_dependency() -> None:
    pinned = {}
    for line in (REPO / "constraints.txt").read_text(encoding="utf-8").splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"constraints.txt pins exact versions only: {line!r}"
            pinned[canonicalize_name(name)] = Version(version)
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    for dependency in project["dependencies"]:
        requirement = Requirement(dependency)
        name = canonicalize_name(requirement.name)
        assert name in pinned, f"{requirement.name} is not pinned: run bash scripts/lock"
        assert requirement.specifier.contains(pinned[name]), f"{name} {pinned[name]} breaks {requirement}"
