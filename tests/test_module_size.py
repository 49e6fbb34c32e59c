"""Every module of the package stays small enough to read in one sitting (house style: under ~600 lines)."""

from __future__ import annotations

from pathlib import Path

import pytest

PACKAGE_DIR = Path(__file__).resolve().parents[1] / "gateway"
MAX_LINES = 600


def module_lengths(package_dir: Path) -> dict[str, int]:
    return {
        str(path.relative_to(package_dir.parent)): len(path.read_text(encoding="utf-8").splitlines())
        for path in sorted(package_dir.rglob("*.py"))
    }


def test_no_module_is_over_the_limit() -> None:
    lengths = module_lengths(PACKAGE_DIR)
    assert len(lengths) > 50, "the package was not found: the test would check nothing"
    assert {name: lines for name, lines in lengths.items() if lines > MAX_LINES} == {}


@pytest.mark.parametrize("lines", [MAX_LINES + 1, 5 * MAX_LINES])
def test_the_check_finds_a_long_module(tmp_path: Path, lines: int) -> None:
    package = tmp_path / "gateway"
    package.mkdir()
    (package / "short.py").write_text("x = 1\n" * MAX_LINES, encoding="utf-8")
    (package / "long.py").write_text("x = 1\n" * lines, encoding="utf-8")
    lengths = module_lengths(package)
    assert {name for name, count in lengths.items() if count > MAX_LINES} == {"gateway/long.py"}
