"""`conduct-gateway serve` (placeholder until implemented)."""

from __future__ import annotations

import click


@click.group()
def serve() -> None:
    """Not implemented yet."""
