"""Fixtures for the command-line tests: a throwaway settings file in a temporary folder."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

SHIPPED_POLICY = Path(__file__).resolve().parents[2] / "gateway" / "data" / "default-policy.yaml"


def write_config(folder: Path, extra: str = "") -> Path:
    """A settings file whose state, users file and ports are all private to ``folder``."""
    path = folder / "gateway.yaml"
    text = """\
        state_dir: state
        server:
          hostname: gateway.test
          submission:
            port: 0
          submissions:
            port: 0
        auth:
          users_file: users.passwd
        metrics:
          port: 0
        shutdown_grace: 5
        """
    body = textwrap.dedent(text) + textwrap.dedent(extra)
    if "\npolicy:" not in "\n" + textwrap.dedent(extra):
        body += f"policy:\n  path: {SHIPPED_POLICY}\n"
    path.write_text(body, encoding="utf-8")
    return path


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    return write_config(tmp_path)
