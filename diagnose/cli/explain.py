"""``diagnose explain CODE``: one rule's documentation and thresholds."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from diagnose.cli.rules import print_rule_list
from diagnose.errors import ConfigError
from diagnose.rules.base import DOC_SECTIONS, Rule
from diagnose.rules.codes import select_rules


def explain(code: Annotated[str, typer.Argument(
        help="Rule code (LR001), name (loss-diverges), code prefix (LR) or a comma list of them.")]) -> None:
    """Show what a rule detects, why it matters, how it decides, what to do, and its thresholds.

    A prefix or list that picks several rules lists them instead.
    """
    picked = select_rules(code)
    if not picked:
        raise ConfigError(f"unknown rule {code!r} (`diagnose rules` lists them)")
    if len(picked) > 1:
        print_rule_list(picked)
        return
    Console(highlight=False).print(rule_renderable(picked[0]))


def rule_renderable(rule: type[Rule]) -> Group:
    head = Text.assemble((f"{rule.code} {rule.name}", "bold"), f": {rule.title}")
    facts = f"severity {rule.severity.value}, category {rule.category.value}"
    if rule.requires:
        facts += ", needs " + ", ".join(rule.requires)
    parts: list[RenderableType] = [head, Text(facts, style="dim")]
    doc = rule.doc()
    for section in (*DOC_SECTIONS, *(k for k in doc if k not in DOC_SECTIONS)):
        if section in doc:
            parts += [Text(""), Text(section, style="bold underline"), Text(doc[section])]
    parts += [Text(""), _thresholds(rule)]
    return Group(*parts)


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
