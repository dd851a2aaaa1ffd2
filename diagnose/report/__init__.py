"""Reports: render `Analysis` objects (a run and its findings) as text, JSON, Markdown or HTML.

Renderers only read analyses; they never call readers or rules. HTML pulls in
matplotlib, so each format is imported when it is asked for.
"""

from __future__ import annotations

from collections.abc import Sequence

from diagnose.rules.engine import Analysis
from diagnose.run import reading

FORMATS = ("terminal", "json", "md", "html")


def render(analyses: Sequence[Analysis], format: str) -> str:
    """The report in ``format`` (one of `FORMATS`) as a string."""
    with reading(analysis.run for analysis in analyses):
        return _render(analyses, format)


def _render(analyses: Sequence[Analysis], format: str) -> str:
    if format == "terminal":
        from diagnose.report.terminal import render_terminal

        return render_terminal(analyses)
    if format == "json":
        from diagnose.report.json_report import render_json

        return render_json(analyses)
    if format == "md":
        from diagnose.report.markdown import render_markdown

        return render_markdown(analyses)
    if format == "html":
        from diagnose.report.html import render_html

        return render_html(analyses)
    raise ValueError(f"unknown report format {format!r} (expected one of {', '.join(FORMATS)})")
