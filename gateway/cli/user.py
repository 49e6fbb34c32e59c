"""`conduct-gateway user` (placeholder until implemented)."""

from __future__ import annotations

import click


@click.group()
def user() -> None:
    """Not implemented yet."""
