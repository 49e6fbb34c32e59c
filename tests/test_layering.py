"""The import contracts of pyproject's [tool.importlinter]: kept by the code, and able to fail.

import-linter checks them (``lint-imports`` runs the same contracts by hand): the policy core is pure,
the shell helpers sit below every layer, state below the layers that use it, intake and delivery meet
only through the queue, review and decision never reach up, the CLI acts through decision and the
state package. Each contract is then broken on purpose, on a copy of the package with one import
added, to prove it detects what it names. The lists of top-level modules in the contracts are
explicit, so a test checks that a new module is placed in them. What imports cannot show (a call to
``open``, the clock or the environment through a module the core may import) is checked with ``ast``.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE_DIR = REPO / "gateway"
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
LAYERS = {"intake", "decision", "review", "mail", "state", "delivery", "policy", "cli", "milter"}
# Top-level modules the policy core may use: pure helpers with nothing of the shell in them.
POLICY_MAY_USE = {"errors", "yamlsource"}
# The wiring and test support: above every layer, so no contract limits what they import.
ABOVE_THE_LAYERS = {"__init__", "__main__", "app", "milter_app", "testing", "fake_upstream"}


def contracts() -> dict[str, dict[str, Any]]:
    config = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    return {contract["id"]: contract for contract in config["tool"]["importlinter"]["contracts"]}


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    """Run the contracts of ``root/pyproject.toml`` on the package ``gateway`` found in ``root``."""
    # A wide terminal keeps each contract's name and verdict on one line of the summary.
    env = {**os.environ, "PYTHONPATH": str(root), "COLUMNS": "1000", "NO_COLOR": "1"}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def broken_contracts(output: str) -> set[str]:
    names = {contract["name"]: contract_id for contract_id, contract in contracts().items()}
    verdicts = dict(re.findall(r"^(.+) (KEPT|BROKEN)(?: \(\d+ ignored imports?\))?$", output, re.MULTILINE))
    assert set(verdicts) == set(names), output
    return {names[name] for name, verdict in verdicts.items() if verdict == "BROKEN"}


def test_the_package_keeps_every_import_contract() -> None:
    result = lint_imports(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert broken_contracts(result.stdout) == set()


def top_level_modules() -> set[str]:
    return {path.stem for path in PACKAGE_DIR.glob("*.py")} | {
        path.parent.name for path in PACKAGE_DIR.glob("*/__init__.py")
    }


def test_every_top_level_module_has_a_place_in_the_contracts() -> None:
    """A new module at the top of gateway/ must be named: the contracts list modules explicitly."""
    named = contracts()
    forbidden_to_policy = {
        module.removeprefix("gateway.") for module in named["policy-pure"]["forbidden_modules"]
    }
    helpers = {module.removeprefix("gateway.") for module in named["helpers-below-layers"]["source_modules"]}
    modules = top_level_modules() - {"policy", "__init__"}
    assert modules, "gateway/ is missing: the contracts would check nothing"
    assert sorted(modules - forbidden_to_policy - POLICY_MAY_USE) == []
    assert sorted(forbidden_to_policy & POLICY_MAY_USE) == []
    assert sorted(modules - helpers - LAYERS - ABOVE_THE_LAYERS) == []
    assert sorted(helpers & (LAYERS | ABOVE_THE_LAYERS)) == []


# --- each contract can fail -------------------------------------------------------------------------

TYPE_CHECKING_IMPORT = """
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.decision.screening import Outgoing
"""


@pytest.mark.parametrize(
    ("module", "added", "expected"),
    [
        pytest.param("policy/model.py", "import asyncio\n", {"policy-pure"}, id="policy-imports-asyncio"),
        pytest.param(
            "yamlsource.py", "import asyncio.locks\n", {"policy-pure"}, id="policy-reaches-asyncio-indirectly"
        ),
        pytest.param(
            "policy/engine.py",
            "from gateway import replies\n",
            {"policy-pure"},
            id="policy-imports-the-shell",
        ),
        pytest.param(
            "replies.py", "import gateway.state.spool\n", {"helpers-below-layers"}, id="helper-imports-state"
        ),
        pytest.param(
            "state/registry.py",
            TYPE_CHECKING_IMPORT,
            # review and delivery reach the registry through open_state, so they break too (indirectly)
            {"state-layer", "review-layer", "delivery-layer"},
            id="state-imports-decision-for-types",
        ),
        pytest.param(
            "delivery/maildir.py",
            "from gateway.intake import admission\n",
            {"intake-delivery-independent", "delivery-layer"},
            id="delivery-imports-intake",
        ),
        pytest.param(
            "intake/admission.py",
            "from gateway import delivery as _delivery\n",
            {"intake-delivery-independent", "intake-layer"},
            id="intake-imports-delivery",
        ),
        pytest.param(
            "review/desk.py",
            "from gateway.intake import admission\n",
            {"review-layer", "decision-layer"},
            id="review-imports-intake",
        ),
        pytest.param(
            "mail/messages.py",
            "from gateway.review import tokens\n",
            {"mail-layer"},
            id="mail-imports-review",
        ),
        pytest.param(
            "decision/screening.py",
            "from gateway.cli import tables\n",
            {"decision-layer", "intake-layer", "milter-layer"},  # intake and the milter screen through it
            id="decision-imports-the-cli",
        ),
        pytest.param(
            "intake/admission.py",
            "from gateway.review import desk\n",
            {"intake-through-decision"},
            id="intake-imports-review",
        ),
        pytest.param(
            "delivery/worker.py",
            "from gateway.testing import CaptureUpstream\n",
            {"test-support-apart"},
            id="delivery-imports-test-support",
        ),
        pytest.param(
            "cli/tables.py",
            "from gateway.delivery import model\n",
            {"cli-through-decision"},
            id="cli-imports-delivery",
        ),
        pytest.param(
            "milter/actions.py",
            "from gateway.intake import commands\n",
            {"milter-layer"},
            id="milter-imports-intake",
        ),
        pytest.param(
            "cli/tables.py",
            "from gateway.state import spool\n",
            {"state-through-its-entry-point"},
            id="cli-imports-a-store-module",
        ),
    ],
)
def test_contract_detects_an_added_import(
    tmp_path: Path, module: str, added: str, expected: set[str]
) -> None:
    shutil.copytree(PACKAGE_DIR, tmp_path / "gateway", ignore=shutil.ignore_patterns("__pycache__", "data"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    target = tmp_path / "gateway" / module
    target.write_text(target.read_text(encoding="utf-8") + added, encoding="utf-8")

    result = lint_imports(tmp_path)

    assert result.returncode == 1, result.stdout + result.stderr
    assert broken_contracts(result.stdout) == expected


# --- what import contracts cannot see ------------------------------------------------------------

# Calls that reach files, the clock or the environment without importing anything the contracts forbid
# (os and time are forbidden imports; datetime, pathlib, sys and builtins are not: dates and paths are
# plain values, but reading the clock or a file through them is I/O all the same).
BUILTIN_IO = {"open", "input", "print"}
IO_METHODS = {"now", "today", "utcnow", "read_text", "read_bytes", "write_text", "write_bytes"}
IO_ATTRIBUTES = {"environ", "stdin", "stdout", "stderr"}
# The one file the core reads: the policy file it is asked to load.
POLICY_MAY_READ = {("gateway/policy/loader.py", "path.read_bytes()")}


def io_call(node: ast.AST) -> bool:
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        return node.func.id in BUILTIN_IO
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
        return node.func.attr in IO_METHODS
    return isinstance(node, ast.Attribute) and node.attr in IO_ATTRIBUTES


def io_calls(source: str) -> list[str]:
    return [ast.unparse(node) for node in ast.walk(ast.parse(source)) if io_call(node)]


def test_policy_core_reads_no_file_clock_or_environment() -> None:
    modules = sorted((PACKAGE_DIR / "policy").rglob("*.py"))
    assert modules, "gateway/policy is missing: the test would check nothing"
    found = {
        (path.relative_to(REPO).as_posix(), call)
        for path in modules
        for call in io_calls(path.read_text(encoding="utf-8"))
    }
    assert sorted(found - POLICY_MAY_READ) == []


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        pytest.param(
            "import datetime\nstamp = datetime.datetime.now()\n", ["datetime.datetime.now()"], id="clock"
        ),
        pytest.param(
            "from pathlib import Path\ntext = Path('x').read_text()\n", ["Path('x').read_text()"], id="file"
        ),
        pytest.param("handle = open('x')\n", ["open('x')"], id="builtin-open"),
        pytest.param("import sys\nsys.stdout.write('x')\n", ["sys.stdout"], id="standard-output"),
        pytest.param("import zipfile\nmember = archive.open('x')\n", [], id="an-archive-member-is-no-file"),
    ],
)
def test_io_call_checker_finds_what_it_names(source: str, expected: list[str]) -> None:
    assert io_calls(source) == expected
