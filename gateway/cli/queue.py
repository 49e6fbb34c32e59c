"""`conduct-gateway queue` (placeholder until implemented)."""

from __future__ import annotations

import click


@click.group()
def queue() -> None:
    """Not implemented yet."""
