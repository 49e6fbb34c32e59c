"""The import contracts of pyproject's [tool.importlinter], checked from the source with ``ast``.

The policy core stays pure (never the I/O shell, asyncio or sockets, not even through another module),
and SMTP intake and delivery meet only through the spool (neither imports the other, even indirectly).
"""

from __future__ import annotations

import ast
import textwrap
from collections.abc import Iterable
from pathlib import Path

import pytest

PACKAGE_DIR = Path(__file__).resolve().parents[1] / "gateway"

SHELL = (
    "gateway.intake",
    "gateway.decision",
    "gateway.review",
    "gateway.state",
    "gateway.delivery",
    "gateway.app",
    "gateway.cli",
    "gateway.metrics",
)
IMPURE = ("asyncio", "socket", "ssl", "selectors", "subprocess", "aiosmtpd", "aiosmtplib")


def module_name(package_dir: Path, path: Path) -> str:
    parts = [package_dir.name, *path.relative_to(package_dir).with_suffix("").parts]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, name: str) -> set[str]:
    """Every module ``path`` imports (relative imports resolved), including ``from x import module``."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = name.split(".")
                anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
                base = ".".join([*anchor, node.module] if node.module else anchor)
            else:
                base = node.module or ""
            found.add(base)
            if within(base, [name.split(".")[0]]):
                found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def import_graph(package_dir: Path) -> dict[str, set[str]]:
    raw = {module_name(package_dir, path): path for path in sorted(package_dir.rglob("*.py"))}
    graph: dict[str, set[str]] = {}
    for name, path in raw.items():
        # ``from gateway import spool`` names a module, ``from gateway.spool import Spool`` does not:
        # keep a dotted candidate only when it is a module of the package (or outside it entirely).
        graph[name] = {
            imported
            for imported in imports_of(path, name)
            if imported in raw or not within(imported, [package_dir.name])
        }
    return graph


def within(module: str, prefixes: Iterable[str]) -> bool:
    return any(module == prefix or module.startswith(prefix + ".") for prefix in prefixes)


def import_chains(graph: dict[str, set[str]], sources: Iterable[str], forbidden: Iterable[str]) -> list[str]:
    """Each forbidden module reachable from ``sources``, as the chain of imports that reaches it."""
    forbidden = tuple(forbidden)
    chains: list[str] = []
    for source in sources:
        seen = {source}
        queue: list[tuple[str, tuple[str, ...]]] = [(source, (source,))]
        while queue:
            module, chain = queue.pop(0)
            for imported in sorted(graph.get(module, ())):
                if imported in seen:
                    continue
                seen.add(imported)
                if within(imported, forbidden):
                    chains.append(" -> ".join((*chain, imported)))
                elif imported in graph:
                    queue.append((imported, (*chain, imported)))
    return chains


def modules_under(graph: dict[str, set[str]], prefix: str) -> list[str]:
    return [name for name in graph if within(name, [prefix])]


def test_policy_core_never_reaches_the_shell_or_io() -> None:
    graph = import_graph(PACKAGE_DIR)
    policy = modules_under(graph, "gateway.policy")
    assert policy, "gateway.policy is missing: the layering test would check nothing"
    assert import_chains(graph, policy, SHELL + IMPURE) == []


@pytest.mark.parametrize(
    ("one", "other"), [("gateway.intake", "gateway.delivery"), ("gateway.delivery", "gateway.intake")]
)
def test_intake_and_delivery_meet_only_through_the_spool(one: str, other: str) -> None:
    graph = import_graph(PACKAGE_DIR)
    assert import_chains(graph, modules_under(graph, one), [other]) == []


# --- the checker itself can fail ------------------------------------------------------------------


def fake_package(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "gateway"
    for relative, text in {"__init__.py": "", **files}.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")
    return root


def test_checker_finds_an_indirect_import_of_asyncio(tmp_path: Path) -> None:
    root = fake_package(
        tmp_path,
        {
            "policy/__init__.py": "",
            "policy/engine.py": "from . import helpers\n",
            "policy/helpers.py": "from gateway import timing\n",
            "timing.py": "import asyncio.locks\n",
        },
    )
    graph = import_graph(root)
    assert import_chains(graph, ["gateway.policy.engine"], IMPURE) == [
        "gateway.policy.engine -> gateway.policy.helpers -> gateway.timing -> asyncio.locks"
    ]
    assert len(import_chains(graph, modules_under(graph, "gateway.policy"), IMPURE)) == 2


def test_checker_finds_from_package_import_module(tmp_path: Path) -> None:
    root = fake_package(
        tmp_path,
        {"smtp.py": "from gateway import delivery as d\n", "delivery.py": ""},
    )
    graph = import_graph(root)
    assert import_chains(graph, modules_under(graph, "gateway.smtp"), ["gateway.delivery"]) == [
        "gateway.smtp -> gateway.delivery"
    ]


def test_checker_counts_imports_under_type_checking(tmp_path: Path) -> None:
    root = fake_package(
        tmp_path,
        {
            "delivery.py": """\
                from typing import TYPE_CHECKING
                if TYPE_CHECKING:
                    from .smtp import SubmissionService
            """,
            "smtp.py": "",
        },
    )
    graph = import_graph(root)
    assert import_chains(graph, ["gateway.delivery"], ["gateway.smtp"]) == [
        "gateway.delivery -> gateway.smtp"
    ]
