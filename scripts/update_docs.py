"""Regenerate the documentation sections that are built from the code (configuration and policy references).

    .venv/bin/python scripts/update_docs.py

Each generated section sits between ``<!-- generated: NAME -->`` and ``<!-- end: NAME -->`` in the
page named below; tests/test_docs.py fails when a section is stale.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from pathlib import Path

from gateway.cli.config import reference_markdown
from gateway.metric_catalogue import metrics_reference_markdown
from gateway.policy.reference import policy_reference_markdown

DOCS = Path(__file__).resolve().parent.parent / "docs"
SECTIONS: dict[str, tuple[Path, Callable[[], str]]] = {
    "config-reference": (DOCS / "reference" / "configuration.md", reference_markdown),
    "policy-reference": (DOCS / "reference" / "policy.md", policy_reference_markdown),
    "metrics-reference": (DOCS / "operations" / "index.md", metrics_reference_markdown),
}


def render(name: str, text: str) -> str:
    """Return ``text`` with the generated section ``name`` replaced by its current output."""
    _page, generate = SECTIONS[name]
    pattern = re.compile(rf"(<!-- generated: {name} -->\n).*?(<!-- end: {name} -->)", re.DOTALL)
    if not pattern.search(text):
        raise SystemExit(f"the page has no '<!-- generated: {name} -->' section")
    return pattern.sub(lambda match: match.group(1) + generate().rstrip("\n") + "\n" + match.group(2), text)


def main() -> None:
    for name, (page, _generate) in SECTIONS.items():
        text = page.read_text(encoding="utf-8")
        updated = render(name, text)
        if updated != text:
            page.write_text(updated, encoding="utf-8")
            print(f"{page.relative_to(DOCS.parent)} updated", file=sys.stderr)


if __name__ == "__main__":
    main()
