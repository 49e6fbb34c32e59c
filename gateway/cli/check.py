"""`conduct-gateway check` (placeholder until implemented)."""

from __future__ import annotations

import click


@click.group()
def check() -> None:
    """Not implemented yet."""
