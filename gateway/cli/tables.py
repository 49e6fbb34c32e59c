"""How commands print for people (aligned columns, sentences) or for scripts (``--json``, ``--quiet``)."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
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


def output_option(command: Callable[..., None]) -> Callable[..., None]:
    """--quiet (the new code name alone) or --json (one object), for scripts; text otherwise."""
    for option in (
        click.option("--text", "output", flag_value="text", default=True, hidden=True),
        click.option("--quiet", "output", flag_value="quiet", help="Print only the new code name."),
        click.option("--json", "output", flag_value="json", help="Print one JSON object, for scripts."),
    ):
        command = option(command)
    return command


def print_created(output: str, code: str, summary: dict[str, object]) -> bool:
    """Print what a script wants (--quiet: the code name alone; --json: an object); whether it did."""
    if output == "quiet":
        click.echo(code)
        return True
    if output == "json":
        click.echo(json.dumps(summary))
        return True
    return False
