"""Regenerate the README sections that are built from the code (configuration and policy references).

    .venv/bin/python scripts/update_readme.py

Each generated section sits between ``<!-- generated: NAME -->`` and ``<!-- end: NAME -->``;
tests/test_readme.py fails when a section is stale.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from pathlib import Path

from gateway.cli.config import reference_markdown
from gateway.policy.config import policy_reference_markdown

README = Path(__file__).resolve().parent.parent / "README.md"
SECTIONS: dict[str, Callable[[], str]] = {
    "config-reference": reference_markdown,
    "policy-reference": policy_reference_markdown,
}


def render(text: str) -> str:
    """Return ``text`` with every generated section replaced by its current output."""
    for name, generate in SECTIONS.items():
        pattern = re.compile(rf"(<!-- generated: {name} -->\n).*?(<!-- end: {name} -->)", re.DOTALL)
        if not pattern.search(text):
            raise SystemExit(f"README.md has no '<!-- generated: {name} -->' section")
        text = pattern.sub(
            lambda match, g=generate: match.group(1) + g().rstrip("\n") + "\n" + match.group(2), text
        )
    return text


def main() -> None:
    text = README.read_text(encoding="utf-8")
    updated = render(text)
    if updated != text:
        README.write_text(updated, encoding="utf-8")
        print("README.md updated", file=sys.stderr)


if __name__ == "__main__":
    main()
