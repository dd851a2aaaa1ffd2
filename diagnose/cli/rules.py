"""``diagnose rules``: every rule in the code table, one line each."""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Console
from rich.table import Table

from diagnose.rules.base import Rule
from diagnose.rules.codes import all_rules


def rules() -> None:
    """List every rule: code, name, severity, category and what it detects."""
    print_rule_list(all_rules())


def print_rule_list(listed: Sequence[type[Rule]]) -> None:
    table = Table(show_edge=False, pad_edge=False)
    for header in ("code", "name", "severity", "category"):
        table.add_column(header, no_wrap=True)
    table.add_column("title", overflow="fold")
    for rule in listed:
        table.add_row(rule.code, rule.name, rule.severity.value, rule.category.value, rule.title)
    console = Console(highlight=False)
    console.print(table)
    console.print(f"{len(table.rows)} rules; `diagnose explain CODE` shows one in full.", style="dim", markup=False)
