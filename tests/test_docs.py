"""The README keeps its promises, and the documentation site matches the code it documents."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
DOCS = REPO / "docs"
README_MAX_LINES = 250


def _updater() -> ModuleType:
    spec = importlib.util.spec_from_file_location("update_docs", REPO / "scripts" / "update_docs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("section", ["config-reference", "policy-reference", "metrics-reference"])
def test_generated_sections_are_current(section: str) -> None:
    updater = _updater()
    page, _generate = updater.SECTIONS[section]
    text = page.read_text(encoding="utf-8")
    assert updater.render(section, text) == text, (
        f"{page} is stale: run .venv/bin/python scripts/update_docs.py"
    )


def test_the_two_setup_commands_are_at_the_top() -> None:
    text = README.read_text(encoding="utf-8")
    top = text[: text.index("\n## ")]
    assert "conduct-gateway serve" in top
    assert "bash scripts/test" in top
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    assert "scripts/test" in ci


def test_the_readme_is_short_and_maps_the_docs() -> None:
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= README_MAX_LINES
    linked = set(re.findall(r"\]\((docs/[^)#]+)", text))
    for page in linked:
        assert (REPO / page).is_file(), f"README links to {page}, which does not exist"
    guides = {f"docs/{path.relative_to(DOCS)}" for path in (DOCS / "guides").glob("*.md")}
    assert guides <= linked, f"README does not link every guide: {sorted(guides - linked)}"


def test_every_rule_is_documented() -> None:
    from gateway.policy.registry import RULES

    text = (DOCS / "reference" / "policy.md").read_text(encoding="utf-8")
    for rule in RULES:
        assert f"### {rule.NAME}" in text, f"docs/reference/policy.md does not document the rule {rule.NAME}"


def test_every_page_is_in_the_site_navigation() -> None:
    nav = (REPO / "mkdocs.yml").read_text(encoding="utf-8")
    for page in DOCS.rglob("*.md"):
        assert str(page.relative_to(DOCS)) in nav, f"{page} is not in mkdocs.yml's nav"


def test_the_site_builds_strictly(tmp_path: Path) -> None:
    # --strict: a broken link, a missing anchor or a page outside the nav fails the build.
    mkdocs = shutil.which("mkdocs", path=str(Path(sys.executable).parent))
    assert mkdocs, "mkdocs is missing: pip install -e '.[test]'"
    result = subprocess.run(
        [mkdocs, "build", "--strict", "--config-file", str(REPO / "mkdocs.yml"), "--site-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
        env={"NO_MKDOCS_2_WARNING": "1", "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "guides" / "senders" / "index.html").is_file()
