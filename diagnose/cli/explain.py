"""``diagnose explain CODE``: one rule's documentation and thresholds."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console, Group, RenderableType
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from diagnose.cli.rules import print_rule_list
from diagnose.errors import ConfigError, DiagnoseError
from diagnose.escaping import visible
from diagnose.readers import load_all
from diagnose.rules.base import DOC_SECTIONS, Rule
from diagnose.rules.codes import select_rules
from diagnose.rules.engine import analyze


def explain(
    code: Annotated[
        str, typer.Argument(help="Rule code (LR001), name (loss-diverges), code prefix (LR) or a comma list of them.")
    ],
) -> None:
    """Show what a rule detects, why it matters, how it decides, what to do, and its thresholds.

    A prefix or list that picks several rules lists them instead.
    """
    picked = select_rules(code)
    if not picked:
        raise ConfigError(f"unknown rule {code!r} (`diagnose rules` lists them)")
    if len(picked) > 1:
        print_rule_list(picked)
        return
    console = Console(highlight=False)
    console.print(rule_renderable(picked[0]))
    example = example_renderable(picked[0])
    if example is not None:
        console.print(example)


# The examples sit beside the package in a checkout of the repository; an installed wheel has none.
EXAMPLES = Path(__file__).resolve().parents[2] / "sample_runs" / "examples"


def example_renderable(rule: type[Rule]) -> Group | None:
    """What the rule says on its bad example (``sample_runs/examples/<CODE>/bad*``), when there is one."""
    bad = sorted((EXAMPLES / rule.code).glob("bad*")) if (EXAMPLES / rule.code).is_dir() else []
    if not bad:
        return None
    shown = f"sample_runs/examples/{rule.code}/{bad[0].name}"
    try:
        found = [f for run in load_all(bad[0]) for f in analyze(run) if f.code == rule.code]
    except DiagnoseError:
        return None
    if not found:
        return None
    finding = found[0]
    parts: list[RenderableType] = [
        Text(""),
        Text("Example", style="bold underline"),
        Text(f"On the recorded run {shown}, {rule.code} says:"),
        Padding(Text(visible(finding.message)), (0, 0, 0, 2)),
    ]
    if finding.fixes:
        parts += [Text("Use instead:"), *(Padding(Text(visible(f"- {fix}")), (0, 0, 0, 2)) for fix in finding.fixes)]
    return Group(*parts)


def rule_renderable(rule: type[Rule]) -> Group:
    head = Text.assemble((f"{rule.code} {rule.name}", "bold"), f": {rule.title}")
    facts = f"severity {rule.severity.value}, category {rule.category.value}"
    if rule.requires:
        facts += ", needs " + ", ".join(rule.requires)
    if rule.live:
        facts += ", judged live while the run trains"
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
    table = Table(
        title="Thresholds (override with --set CODE.name=value)", title_justify="left", show_edge=False, pad_edge=False
    )
    for header in ("name", "default", "description", "source"):
        table.add_column(header, overflow="fold")
    for t in rule.thresholds:
        table.add_row(Text(t.name), f"{t.default:g}", Text(t.description), Text(t.source or "-"))
    return table
