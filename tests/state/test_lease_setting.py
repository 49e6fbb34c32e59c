"""`state.postgresql.lease_seconds`: validated, and the queue's claims last as long as it says."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.errors import ConfigError
from gateway.settings import GatewaySettings, load_settings
from gateway.state.opening import open_state


def _settings(tmp_path: Path, postgresql: str) -> GatewaySettings:
    config = tmp_path / "gateway.yaml"
    config.write_text(
        "state:\n  backend: postgresql\n  postgresql:\n    dsn: host=db.example.org dbname=conduct\n"
        + "".join(f"    {line}\n" for line in postgresql.splitlines())
    )
    return load_settings(config)


@pytest.mark.parametrize(
    ("given", "lease"),
    [
        pytest.param("", 60.0, id="default"),
        pytest.param("lease_seconds: 2m", 120.0, id="with-a-unit"),
        pytest.param("lease_seconds: 10\nconnect_timeout: 5s", 10.0, id="twice-the-timeout"),
    ],
)
def test_the_lease_reaches_the_queue(tmp_path: Path, given: str, lease: float) -> None:
    settings = _settings(tmp_path, given)
    assert settings.state.postgresql.lease_seconds == lease
    queue = open_state(settings).queue  # nothing connects until the queue is opened
    assert getattr(queue, "lease_seconds") == lease  # noqa: B009 - the PostgreSQL opener's field


@pytest.mark.parametrize(
    ("given", "complaint"),
    [
        pytest.param("lease_seconds: 1s", "between 2 and 3600 seconds", id="too-short"),
        pytest.param("lease_seconds: 2h", "between 2 and 3600 seconds", id="too-long"),
        pytest.param("lease_seconds: 15s", "at least twice connect_timeout", id="shorter-than-a-wait"),
    ],
)
def test_a_lease_that_cannot_work_is_refused_naming_the_key(
    tmp_path: Path, given: str, complaint: str
) -> None:
    with pytest.raises(ConfigError, match=complaint) as raised:
        _settings(tmp_path, given)
    assert "state.postgresql" in str(raised.value)
