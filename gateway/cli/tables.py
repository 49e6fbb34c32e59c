"""How listing commands print: aligned columns for people, or JSON (``--json``) for scripts."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import click

COLUMN_GAP = "  "

json_option = click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print JSON (one array of objects) for scripts instead of a table.",
)


def table_lines(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Header and rows with every column padded to its widest cell and two spaces between columns."""
    every = [tuple(header), *(tuple(row) for row in rows)]
    widths = [max(len(row[i]) for row in every) for i in range(len(header))]
    return [
        COLUMN_GAP.join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in every
    ]


def emit(
    header: Sequence[str], rows: Sequence[Sequence[str]], records: Sequence[Mapping[str, Any]], as_json: bool
) -> None:
    """Print ``rows`` as a table (nothing when empty), or ``records`` as JSON with ``as_json``."""
    if as_json:
        click.echo(json.dumps(list(records), indent=2, sort_keys=True))
        return
    if rows:
        for line in table_lines(header, rows):
            click.echo(line)
