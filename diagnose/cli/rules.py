"""``diagnose rules``: every rule in the code table, one line each."""

from __future__ import annotations

from collections.abc import Sequence

import typer
from rich.console import Console
from rich.table import Table

from diagnose.rules.base import Rule
from diagnose.rules.codes import all_rules

COLUMNS = ("code", "name", "severity", "category", "title")


def rules() -> None:
    """List every rule: code, name, severity, category and what it detects."""
    print_rule_list(all_rules())


def print_rule_list(listed: Sequence[type[Rule]]) -> None:
    rows = [(r.code, r.name, r.severity.value, r.category.value, r.title) for r in listed]
    console = Console(highlight=False)
    if console.is_terminal:
        console.print(_table(rows))
    else:
        # Piped into grep or a file: one unwrapped line per rule, whatever the width.
        typer.echo(_aligned(rows))
    console.print(
        f"{len(rows)} rules; `diagnose explain CODE` shows one in full.", style="dim", markup=False, soft_wrap=True
    )


def _table(rows: list[tuple[str, ...]]) -> Table:
    table = Table(show_edge=False, pad_edge=False)
    for header in COLUMNS[:-1]:
        table.add_column(header, no_wrap=True)
    table.add_column(COLUMNS[-1], overflow="fold")
    for row in rows:
        table.add_row(*row)
    return table


def _aligned(rows: list[tuple[str, ...]]) -> str:
    table = [COLUMNS, *rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(COLUMNS) - 1)]
    return "\n".join(
        "  ".join([*(cell.ljust(w) for cell, w in zip(row, widths, strict=False)), row[-1]]) for row in table
    )
