"""The terminal report: a verdict line, a run summary, then each finding worst first.

Built from rich ``Text`` objects, never from markup strings, so a run name or
message holding ``[bold]`` prints as written; control characters in them are
shown as escapes (`diagnose.escaping.visible`). Colour follows the console:
none when the output is not a terminal or ``NO_COLOR`` is set.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

from rich.console import Console, Group, RenderableType
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from diagnose.escaping import visible
from diagnose.report import summary as s
from diagnose.rules.base import Finding, Severity
from diagnose.rules.engine import Analysis
from diagnose.run import reading

STYLES = {Severity.ERROR: "bold red", Severity.WARNING: "bold yellow", Severity.INFO: "cyan"}


def print_report(analyses: Sequence[Analysis], console: Console, *, show_skipped: bool = False) -> None:
    with reading(analysis.run for analysis in analyses):
        console.print(report_renderable(analyses, show_skipped=show_skipped))


def render_terminal(
    analyses: Sequence[Analysis], *, width: int = 100, color: bool = False, show_skipped: bool = False
) -> str:
    """The report as text (for a file or a test); ANSI colours only when asked."""
    buffer = io.StringIO()
    console = Console(
        file=buffer,
        width=width,
        force_terminal=color,
        no_color=not color,
        color_system="standard" if color else None,
        highlight=False,
    )
    print_report(analyses, console, show_skipped=show_skipped)
    return "".join(line.rstrip() + "\n" for line in buffer.getvalue().splitlines())


def report_renderable(analyses: Sequence[Analysis], *, show_skipped: bool = False) -> RenderableType:
    ordered = s.order_runs(analyses)
    parts: list[RenderableType] = [_verdict(analyses)]
    if len(ordered) > 1:
        parts.append(runs_table(ordered))
    for analysis in ordered:
        parts.extend(_run_section(analysis, single=len(ordered) == 1, show_skipped=show_skipped))
    return Group(*parts)


def _verdict(analyses: Sequence[Analysis]) -> Text:
    worst = s.worst_finding(analyses)
    judged = all(s.coverage(a.run).judged for a in analyses)
    style = STYLES[worst.severity] if worst else ("bold green" if judged else "bold")
    return Text(visible(s.verdict(analyses)), style=style)


def runs_table(ordered: Sequence[Analysis]) -> Table:
    table = Table(title=None, show_edge=False, pad_edge=False, expand=False)
    for header in s.RUN_COLUMNS:
        table.add_column(header, overflow="fold", min_width=len("healthy") if header == "findings" else None)
    for analysis in ordered:
        table.add_row(*[Text(visible(cell)) for cell in s.run_row(analysis)])
    return table


def _run_section(analysis: Analysis, *, single: bool, show_skipped: bool) -> list[RenderableType]:
    parts: list[RenderableType] = [Text("")]
    parts.append(Text(visible(s.run_summary_line(analysis)), style="bold" if not single else "dim"))
    for index, (root, symptoms) in enumerate(analysis.root_causes, 1):
        parts.append(finding_block(index, root, symptoms, s.supersedes_text(analysis, root, symptoms)))
    parts.extend(_footnotes(analysis, show_skipped))
    return parts


def finding_block(index: int, finding: Finding, symptoms: Sequence[Finding] = (), supersedes: str = "") -> Group:
    head = Text.assemble(
        f"{index}. ",
        (finding.severity.value.upper(), STYLES[finding.severity]),
        " ",
        (visible(finding.code), "bold"),
        visible(f" {finding.title}"),
        (visible(f"  [{finding.name}]"), "dim"),
    )
    lines: list[RenderableType] = [Text(""), head]
    place = s.where(finding)
    if place:
        lines.append(_field("where", place))
    lines.append(_indented(Text(visible(finding.message)), 3))
    if finding.evidence:
        lines.append(_field("evidence", ", ".join(s.evidence_items(finding.evidence))))
    if finding.confidence < 1:
        lines.append(_field("confidence", f"{finding.confidence:.0%}"))
    lines.extend(_bullets("likely causes", finding.causes))
    lines.extend(_bullets("what to do", finding.fixes))
    if symptoms:
        lines.extend(_bullets(f"symptoms it explains ({len(symptoms)})", [s.symptom_line(f) for f in symptoms]))
    if supersedes:
        lines.append(_field("supersedes", supersedes))
    return Group(*lines)


def _indented(text: Text, left: int) -> Padding:
    """Text whose wrapped lines keep the indent."""
    return Padding(text, (0, 0, 0, left), expand=False)


def _field(label: str, value: str) -> Padding:
    return _indented(Text.assemble((label + ": ", "dim"), visible(value)), 3)


def _bullets(label: str, items: Sequence[str]) -> list[RenderableType]:
    if not items:
        return []
    return [_indented(Text(label + ":", style="dim"), 3)] + [_indented(Text(visible(f"- {item}")), 5) for item in items]


def _footnotes(analysis: Analysis, show_skipped: bool) -> list[Text]:
    notes = []
    if show_skipped and s.relevant_not_evaluated(analysis):
        notes.append(Text(visible(f"not evaluated: {s.not_evaluated(analysis)}"), style="dim"))
    elif s.relevant_not_evaluated(analysis):
        notes.append(
            Text(visible(f"not evaluated: {s.not_evaluated_short(analysis)} (--show-skipped lists them)"), style="dim")
        )
    for code, error in analysis.errors:
        notes.append(Text(visible(f"rule error: {code} failed: {error}"), style="red"))
    for warning in analysis.run.warnings:
        notes.append(Text(visible(f"reading: {warning}"), style="dim"))
    return ([Text("")] + notes) if notes else []
