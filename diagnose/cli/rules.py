"""``diagnose rules``: every rule in the registry, one line each."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from diagnose.rules.base import all_rules


def rules() -> None:
    """List every rule: code, name, severity, category and what it detects."""
    table = Table(show_edge=False, pad_edge=False)
    for header in ("code", "name", "severity", "category"):
        table.add_column(header, no_wrap=True)
    table.add_column("title", overflow="fold")
    for rule in all_rules():
        table.add_row(rule.code, rule.name, rule.severity.value, rule.category.value, rule.title)
    console = Console(highlight=False)
    console.print(table)
    console.print(f"{len(table.rows)} rules; `diagnose explain CODE` shows one in full.", style="dim", markup=False)
