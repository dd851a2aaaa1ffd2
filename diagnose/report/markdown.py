"""The Markdown report, sized for a pull-request comment.

Every string that comes from a run or a rule is escaped, so a run name like
``<img src=x>`` or ``*bold*`` shows as written and cannot break the layout.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from diagnose.escaping import visible
from diagnose.report import summary as s
from diagnose.rules.base import Finding, Severity
from diagnose.rules.engine import Analysis

MARKS = {
    Severity.ERROR: "\N{LARGE RED CIRCLE}",
    Severity.WARNING: "\N{LARGE ORANGE CIRCLE}",
    Severity.INFO: "\N{LARGE BLUE CIRCLE}",
}
_SPECIAL = re.compile(r"([\\`*_\[\]|~<>&])")


def escape(text: str) -> str:
    """Markdown-inert text on one line, control characters shown as escapes."""
    return _SPECIAL.sub(r"\\\1", visible(" ".join(str(text).split())))


def render_markdown(analyses: Sequence[Analysis]) -> str:
    ordered = s.order_runs(analyses)
    lines = [f"### diagnose: {escape(s.verdict(ordered))}", ""]
    if len(ordered) > 1:
        lines += runs_table(ordered) + [""]
    for analysis in ordered:
        lines += _run_section(analysis)
    return "\n".join(lines).rstrip() + "\n"


def runs_table(ordered: Sequence[Analysis]) -> list[str]:
    rows = [s.RUN_COLUMNS, tuple("---" for _ in s.RUN_COLUMNS)]
    rows += [tuple(escape(cell) for cell in s.run_row(a)) for a in ordered]
    return ["| " + " | ".join(row) + " |" for row in rows]


def _run_section(analysis: Analysis) -> list[str]:
    lines = [f"#### {escape(s.run_summary_line(analysis))}", ""]
    for index, (root, symptoms) in enumerate(analysis.root_causes, 1):
        lines += finding_lines(index, root, symptoms, s.supersedes_text(analysis, root, symptoms)) + [""]
    if s.relevant_not_evaluated(analysis):
        lines += [
            f"<details><summary>Not evaluated: {escape(s.not_evaluated_short(analysis))}</summary>",
            "",
            escape(s.not_evaluated(analysis)),
            "",
            "</details>",
            "",
        ]
    lines += [f"- **Rule error** {escape(code)}: {escape(error)}" for code, error in analysis.errors]
    lines += [f"- Reading: {escape(warning)}" for warning in analysis.run.warnings]
    return lines + [""] if analysis.errors or analysis.run.warnings else lines


def finding_lines(index: int, finding: Finding, symptoms: Sequence[Finding] = (), supersedes: str = "") -> list[str]:
    head = (
        f"{index}. {MARKS[finding.severity]} **{finding.severity.value}** "
        f"**{escape(finding.code)}** {escape(finding.title)}"
    )
    place = s.where(finding)
    lines = [head + (f" ({escape(place)})" if place else ""), "", f"   {escape(finding.message)}", ""]
    if finding.evidence:
        lines.append("   - Evidence: " + escape(", ".join(s.evidence_items(finding.evidence))))
    if finding.confidence < 1:
        lines.append(f"   - Confidence: {finding.confidence:.0%}")
    lines += _list("Likely causes", finding.causes) + _list("What to do", finding.fixes)
    lines += _list(f"Symptoms it explains ({len(symptoms)})", [s.symptom_line(f) for f in symptoms])
    if supersedes:
        lines.append(f"   - Supersedes: {escape(supersedes)}")
    return lines


def _list(label: str, items: Sequence[str]) -> list[str]:
    if not items:
        return []
    return [f"   - {label}:"] + [f"     - {escape(item)}" for item in items]
