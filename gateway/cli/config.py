"""`conduct-gateway config` (placeholder until implemented)."""

from __future__ import annotations

import click


@click.group()
def config() -> None:
    """Not implemented yet."""
