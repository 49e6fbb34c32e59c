"""Each gateway's policy version in the shared state: recorded, compared, in /metrics and `status`."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from click.testing import CliRunner
from prometheus_client.exposition import generate_latest

from gateway.cli import main
from gateway.decision.presence import Presence
from gateway.metrics import build_registry
from gateway.settings import GatewaySettings
from gateway.state.opening import State, open_state
from gateway.state.postgresql.opening import close_shared_databases

POLICY = "organisation:\n  conduct_address: conduct@example.org\nrules: []\n"


def _config(settings: GatewaySettings, folder: Path) -> Path:
    (folder / "policy.yaml").write_text(POLICY)
    lines = [
        f"state_dir: {settings.state_dir}",
        f"policy:\n  path: {folder / 'policy.yaml'}",
        f"registry:\n  key_env: null\n  key_file: {settings.registry.key_file}",
    ]
    if settings.state.backend == "postgresql":
        postgresql = settings.state.postgresql
        lines.append(
            "state:\n  backend: postgresql\n  postgresql:\n"
            f'    dsn: "{postgresql.dsn}"\n    password_file: {postgresql.password_file}'
        )
    config = folder / "gateway.yaml"
    config.write_text("\n".join(lines) + "\n")
    return config


def test_two_gateways_on_one_version_then_one_reloads_another(
    postgresql_settings: GatewaySettings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    versions = {"a": "1111aaaa2222bbbb", "b": "1111aaaa2222bbbb"}
    first = Presence(open_state(postgresql_settings).instances, lambda: versions["a"], hostname="gw-a")
    second = Presence(open_state(postgresql_settings).instances, lambda: versions["b"], hostname="gw-b")
    first.beat()
    second.beat()
    assert (second.statistics().instances, second.statistics().policy_versions) == (2, 1)
    config = _config(postgresql_settings, tmp_path)
    agreed = CliRunner().invoke(main, ["status", "--config", str(config)])
    assert agreed.exit_code == 0, agreed.output
    assert first.instance in agreed.output and "gw-b" in agreed.output
    assert "2 live gateway(s), all on policy version 1111aaaa2222bbbb" in agreed.output

    versions["b"] = "3333cccc4444dddd"  # gateway B reloaded an edited policy; A has not
    with caplog.at_level(logging.WARNING, logger="gateway.presence"):
        second.beat()  # at once, nudged by the reload: A may follow within seconds
        assert not any("policy-versions-differ" in r.getMessage() for r in caplog.records)
        second.beat()  # the next heartbeat: still different
    assert any("policy-versions-differ" in record.getMessage() for record in caplog.records)
    assert second.statistics().policy_versions == 2
    differ = CliRunner().invoke(main, ["status", "--config", str(config)])
    assert differ.exit_code == 1
    assert "DIFFERENT policy versions (1111aaaa2222bbbb, 3333cccc4444dddd)" in differ.output

    second.leave()  # a clean stop
    first.beat()
    assert first.statistics().policy_versions == 1
    after = CliRunner().invoke(main, ["status", "--config", str(config), "--json"])
    assert after.exit_code == 0
    assert "gw-b" not in after.output and first.instance in after.output
    close_shared_databases()


def test_a_gateway_not_seen_for_a_minute_is_left_out_of_the_comparison(
    postgresql_settings: GatewaySettings, tmp_path: Path
) -> None:
    state = open_state(postgresql_settings)
    dead = Presence(state.instances, lambda: "0000dead0000dead", hostname="gw-dead")
    dead.beat()
    from gateway.state.postgresql.opening import shared_database

    with shared_database(postgresql_settings.state.postgresql).connection() as connection:
        connection.execute("UPDATE gateway_instances SET seen_at = now() - interval '10 minutes'")
    alive = Presence(state.instances, lambda: "1111aaaa2222bbbb", hostname="gw-alive")
    alive.beat()
    assert alive.statistics().policy_versions == 1
    listed = CliRunner().invoke(main, ["status", "--config", str(_config(postgresql_settings, tmp_path))])
    assert listed.exit_code == 0, listed.output
    assert "not seen for 600s" in listed.output
    close_shared_databases()


def test_metrics_carry_the_instance_and_the_version_and_nothing_else(state: State) -> None:
    presence = Presence(state.instances, lambda: "1111aaaa2222bbbb")
    presence.beat()
    scraped = generate_latest(build_registry({"presence": presence.statistics})).decode()
    labels = f'gateway_instance="{presence.instance}",version="1111aaaa2222bbbb"'
    assert f"conduct_gateway_policy_info{{{labels}}} 1.0" in scraped
    assert "conduct_gateway_instances 1.0" in scraped
    assert "conduct_gateway_instances_policy_versions 1.0" in scraped


def test_a_version_that_is_not_a_digest_never_becomes_a_label(state: State) -> None:
    presence = Presence(state.instances, lambda: "Jin Park's policy")
    scraped = generate_latest(build_registry({"presence": presence.statistics})).decode()
    assert "Jin Park" not in scraped
    assert f'gateway_instance="{presence.instance}"' in scraped


def test_on_files_status_says_there_is_one_gateway(tmp_path: Path) -> None:
    settings = GatewaySettings.model_validate(
        {"state_dir": str(tmp_path / "state"), "registry": {"key_env": None, "key_file": str(tmp_path / "k")}}
    )
    result = CliRunner().invoke(main, ["status", "--config", str(_config(settings, tmp_path))])
    assert result.exit_code == 0, result.output
    assert "state.backend is files" in result.output
    assert "Policy version from the files here:" in result.output
