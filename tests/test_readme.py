"""The README's generated sections match the code they document."""

from __future__ import annotations

import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _updater():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("update_readme", REPO / "scripts" / "update_readme.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_sections_are_current() -> None:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    assert _updater().render(text) == text, (
        "README.md is stale: run `.venv/bin/python scripts/update_readme.py`"
    )


def test_the_two_setup_commands_are_at_the_top() -> None:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    top = text[: text.index("\n## ")]
    assert "conduct-gateway serve" in top
    assert "bash scripts/test" in top
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    assert "scripts/test" in ci


def test_every_rule_is_documented() -> None:
    from gateway.policy.registry import RULES

    text = (REPO / "README.md").read_text(encoding="utf-8")
    for rule in RULES:
        assert f"### {rule.NAME}" in text, f"README.md does not document the rule {rule.NAME}"
