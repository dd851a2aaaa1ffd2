"""``diagnose explain CODE``: one rule's documentation and thresholds."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console, Group, RenderableType
from rich.rule import Rule as Divider
from rich.table import Table
from rich.text import Text

from diagnose.errors import ConfigError
from diagnose.rules.base import DOC_SECTIONS, Rule
from diagnose.rules.config import matching_rules, split_patterns


def explain(code: Annotated[str, typer.Argument(
        help="Rule code (LR001), code prefix (LR), name (loss-diverges), or several separated by commas.")]) -> None:
    """Show what a rule detects, why it matters, how it decides, what to do, and its thresholds."""
    rules: list[type[Rule]] = []
    for pattern in split_patterns([code]) or [code]:
        found = matching_rules(pattern)
        if not found:
            raise ConfigError(f"unknown rule {pattern!r} (`diagnose rules` lists them)")
        rules += [rule for rule in found if rule not in rules]
    console = Console(highlight=False)
    for index, rule in enumerate(rules):
        if index:
            console.print(Divider())
        console.print(rule_renderable(rule))


def rule_renderable(rule: type[Rule]) -> Group:
    head = Text.assemble((f"{rule.code} {rule.name}", "bold"), f": {rule.title}")
    facts = f"severity {rule.severity.value}, category {rule.category.value}"
    if rule.requires:
        facts += ", needs " + ", ".join(rule.requires)
    parts: list[RenderableType] = [head, Text(facts, style="dim")]
    doc = rule.doc()
    for section in (*DOC_SECTIONS, *(k for k in doc if k not in DOC_SECTIONS)):
        if section in doc:
            parts += [Text(""), Text(section, style="bold underline"), _prose(doc[section])]
    parts += [Text(""), _thresholds(rule)]
    return Group(*parts)


def _prose(text: str) -> Text:
    """Documentation text with `inline code` shown in bold instead of between backticks."""
    pieces = text.split("`")
    return Text.assemble(*((piece, "bold") if i % 2 else piece for i, piece in enumerate(pieces)))


def _thresholds(rule: type[Rule]) -> RenderableType:
    if not rule.thresholds:
        return Text("No thresholds.", style="dim")
    table = Table(title="Thresholds (override with --set CODE.name=value)", title_justify="left",
                  show_edge=False, pad_edge=False)
    for header in ("name", "default", "description", "source"):
        table.add_column(header, overflow="fold")
    for t in rule.thresholds:
        table.add_row(Text(t.name), f"{t.default:g}", Text(t.description), Text(t.source or "-"))
    return table
