"""The shipped example policy: package data, written where the first start of the embedded default looks."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner

from gateway.cli import main
from gateway.errors import ConfigError
from gateway.example_policy import example_policy_text, write_example_policy
from gateway.policy.loader import parse_policy_text

from .conftest import SHIPPED_POLICY, write_config


def test_the_example_is_the_shipped_policy_and_valid() -> None:
    assert example_policy_text() == SHIPPED_POLICY.read_text(encoding="utf-8")
    document = parse_policy_text(example_policy_text(), Path("example.yaml"))
    assert document.organisation.conduct_address.endswith("example.org")


def test_written_once_private_and_never_over_an_existing_policy(tmp_path: Path) -> None:
    path = tmp_path / "policies" / "default.yaml"
    assert write_example_policy(path)
    assert path.read_text(encoding="utf-8") == example_policy_text()
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    path.write_text("organisation: {}\n", encoding="utf-8")  # the admin's own edit
    assert not write_example_policy(path)
    assert path.read_text(encoding="utf-8") == "organisation: {}\n"
    assert [p.name for p in path.parent.iterdir()] == ["default.yaml"], "no temporary file left behind"


def test_concurrent_writers_never_leave_half_a_policy(tmp_path: Path) -> None:
    path = tmp_path / "default.yaml"
    results: list[bool] = []
    threads = [threading.Thread(target=lambda: results.append(write_example_policy(path))) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results.count(True) == 1
    assert path.read_text(encoding="utf-8") == example_policy_text()


def test_an_unwritable_place_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("", encoding="utf-8")
    with pytest.raises(ConfigError, match="cannot write the example policy"):
        write_example_policy(blocker / "default.yaml")


def test_config_example_policy_prints_it() -> None:
    result = CliRunner().invoke(main, ["config", "example-policy"])
    assert result.exit_code == 0
    assert result.stdout == example_policy_text()


def policy_at(tmp_path: Path, extra: str = "") -> tuple[Path, Path]:
    policy = tmp_path / "policies" / "default.yaml"
    return write_config(tmp_path, f"policy:\n  path: {policy}\n{extra}"), policy


def test_validate_before_the_first_start_checks_the_example_and_writes_nothing(tmp_path: Path) -> None:
    config, policy = policy_at(tmp_path)
    result = CliRunner().invoke(main, ["config", "validate", str(config)])
    assert result.exit_code == 0, result.output
    assert "does not exist yet: the first start writes the shipped example there" in result.stdout
    assert not policy.exists()


def test_with_an_upstream_a_missing_policy_is_refused_with_what_to_do(tmp_path: Path) -> None:
    config, policy = policy_at(tmp_path, "delivery:\n  upstream:\n    host: mail.example.org\n")
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ},
    )
    assert result.returncode == 2, result.stderr
    assert f"{policy}: policy file not found" in result.stderr
    assert "conduct-gateway config example-policy >" in result.stderr
    assert "Traceback" not in result.stderr
    assert not policy.exists(), "never a policy nobody wrote, in front of a real mail server"


def test_the_first_start_of_the_embedded_default_writes_it(tmp_path: Path) -> None:
    config, policy = policy_at(tmp_path)
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stderr is not None
        lines = []
        for line in process.stderr:
            lines.append(line)
            if "event=ready" in line:
                break
        assert any(f"event=example_policy_written path={policy}" in line for line in lines), lines
        assert policy.read_text(encoding="utf-8") == example_policy_text()
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=30)
        assert process.stderr is not None
        process.stderr.close()
    assert code == 0
