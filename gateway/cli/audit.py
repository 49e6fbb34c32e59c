"""`conduct-gateway audit` (placeholder until implemented)."""

from __future__ import annotations

import click


@click.group()
def audit() -> None:
    """Not implemented yet."""
