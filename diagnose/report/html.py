"""The HTML report: one self-contained file, plots embedded as base64 PNG, nothing fetched.

Every string from a run or a rule goes through ``html.escape``, and a
Content-Security-Policy forbids scripts and any network access, so a run named
``<script>...`` is shown, never run.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence

from diagnose import __version__
from diagnose.escaping import visible
from diagnose.report import summary as s
from diagnose.rules.base import Finding
from diagnose.rules.engine import Analysis
from diagnose.workers import map_in_workers

# Up to this many runs each gets its own section with its figure; more are
# summarised (see `_many_runs`) so that a sweep of 1,000 runs stays a page.
FULL_SECTIONS = 10
# From this many sections on their figures are drawn in worker processes (about a second each on
# the benchmark machine, against ~0.1 s to start a worker and send it the run).
PARALLEL_FIGURES = 3
_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 70em; padding: 0 1em; color: #222; }
.verdict { font-size: 1.3em; font-weight: bold; }
.error { color: #b00; } .warning { color: #b60; } .info { color: #06c; } .healthy { color: #080; }
table { border-collapse: collapse; } td, th { border: 1px solid #ccc; padding: .3em .6em; text-align: left; }
section { border-top: 2px solid #ddd; margin-top: 2em; } img.plot { width: 100%; height: auto; }
.finding { margin: 1em 0; padding: .5em 1em; border-left: 4px solid #ccc; background: #fafafa; }
.finding.error { border-color: #b00; } .finding.warning { border-color: #b60; } .finding.info { border-color: #06c; }
.finding p, .finding ul { color: #222; } .dim { color: #777; font-size: .9em; }
"""


def escape(text: object) -> str:
    """HTML-inert text; control characters shown as escapes (the page may be printed to a terminal)."""
    return html.escape(visible(text))


def render_html(analyses: Sequence[Analysis], *, plots: bool = True) -> str:
    ordered = s.order_runs(analyses)
    worst = s.worst_finding(ordered)
    verdict_class = worst.severity.value if worst else ("healthy" if all(s.is_healthy(a) for a in ordered) else "")
    body = [f'<h1>diagnose report</h1>\n<p class="verdict {verdict_class}">{escape(s.verdict(ordered))}</p>']
    if len(ordered) > 1:
        body.append(runs_table(ordered))
    if len(ordered) > FULL_SECTIONS:
        body += _many_runs(ordered, plots)
    else:
        body += [_run_section(a, plots) for a in ordered]
    body.append(f'<p class="dim">diagnose {escape(__version__)}</p>')
    return _page(s.verdict(ordered), "\n".join(body))


def _many_runs(ordered: Sequence[Analysis], plots: bool) -> list[str]:
    """More than `FULL_SECTIONS` runs: the figure of small multiples, then a section for each of
    the worst `FULL_SECTIONS` runs with problems; every run is in the table above."""
    worst = [a for a in ordered if not s.is_healthy(a)][:FULL_SECTIONS]
    parts, images = [], [""] * len(worst)
    if plots:  # a second or so per figure: the sections' figures are drawn in workers, the summary here
        images, summary = map_in_workers(
            plot_img, worst, parallel_from=PARALLEL_FIGURES, meanwhile=lambda: _summary_img(ordered)
        )
        parts.append(summary)
    parts.append(
        f'<p class="dim">{len(ordered)} runs: a section for each of the {len(worst)} worst with problems '
        "below; the table above lists every run.</p>"
    )
    return parts + [_run_section(a, plots, image) for a, image in zip(worst, images, strict=True)]


def _summary_img(ordered: Sequence[Analysis]) -> str:
    from diagnose.report.plots import image_bytes, summary_figure

    data = base64.b64encode(image_bytes(summary_figure(ordered))).decode("ascii")
    alt = escape(f"loss curves of the worst of {len(ordered)} runs with their findings marked")
    return f'<img alt="{alt}" src="data:image/png;base64,{data}">'


def _page(title: str, body: str) -> str:
    return (
        f'<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">\n'
        f"<title>diagnose: {escape(title)}</title>\n<style>{_STYLE}</style>\n</head>\n"
        f"<body>\n{body}\n</body>\n</html>\n"
    )


def runs_table(ordered: Sequence[Analysis]) -> str:
    head = "".join(f"<th>{escape(c)}</th>" for c in s.RUN_COLUMNS)
    rows = ["<tr>" + "".join(f"<td>{escape(cell)}</td>" for cell in s.run_row(a)) + "</tr>" for a in ordered]
    return f"<table>\n<tr>{head}</tr>\n" + "\n".join(rows) + "\n</table>"


def _run_section(analysis: Analysis, plots: bool, image: str | None = None) -> str:
    """The run's section; ``image``: its figure's tag, when already drawn."""
    parts = [f"<section>\n<h2>{escape(analysis.run.name)}</h2>", f"<p>{escape(s.run_summary_line(analysis))}</p>"]
    if plots:
        parts.append(plot_img(analysis) if image is None else image)
    parts += [
        finding_html(i, root, symptoms, s.supersedes_text(analysis, root, symptoms))
        for i, (root, symptoms) in enumerate(analysis.root_causes, 1)
    ]
    parts += _footnotes(analysis)
    return "\n".join(parts) + "\n</section>"


def plot_img(analysis: Analysis) -> str:
    from diagnose.report.plots import figure, image_bytes

    data = base64.b64encode(image_bytes(figure([analysis]))).decode("ascii")
    alt = escape(f"curves of run {analysis.run.name} with its findings marked")
    return f'<img class="plot" alt="{alt}" src="data:image/png;base64,{data}">' + _module_key(analysis)


def _module_key(analysis: Analysis) -> str:
    """The full name of every module whose heat-map label the figure had to shorten."""
    from diagnose.report.plots import module_labels

    run = analysis.run
    modules = list(dict.fromkeys(run.layers["module"].dropna())) if "module" in run.layers else []
    names = [run.module_label(m).removeprefix("model.") for m in modules]
    shortened = [(short, name) for short, name in zip(module_labels(names), names, strict=True) if short != name]
    if not shortened:
        return ""
    rows = "".join(f"<tr><td>{escape(short)}</td><td>model.{escape(name)}</td></tr>" for short, name in shortened)
    return (
        f'\n<details><summary class="dim">Shortened module names in the heat maps ({len(shortened)})</summary>'
        f"<table><tr><th>label</th><th>module</th></tr>{rows}</table></details>"
    )


def finding_html(index: int, finding: Finding, symptoms: Sequence[Finding] = (), supersedes: str = "") -> str:
    sev = finding.severity.value
    place = s.where(finding)
    lines = [
        f'<div class="finding {sev}">',
        f'<h3>{index}. <span class="{sev}">{sev.upper()}</span> {escape(finding.code)} {escape(finding.title)} '
        f'<span class="dim">{escape(finding.name)}</span></h3>',
    ]
    if place:
        lines.append(f"<p><b>Where:</b> {escape(place)}</p>")
    lines.append(f"<p>{escape(finding.message)}</p>")
    if finding.evidence:
        lines.append(f"<p><b>Evidence:</b> {escape(', '.join(s.evidence_items(finding.evidence)))}</p>")
    if finding.confidence < 1:
        lines.append(f"<p><b>Confidence:</b> {finding.confidence:.0%}</p>")
    lines += _list("Likely causes", finding.causes) + _list("What to do", finding.fixes)
    lines += _list(f"Symptoms it explains ({len(symptoms)})", [s.symptom_line(f) for f in symptoms])
    if supersedes:
        lines.append(f'<p class="dim"><b>Supersedes:</b> {escape(supersedes)}</p>')
    return "\n".join(lines + ["</div>"])


def _list(label: str, items: Sequence[str]) -> list[str]:
    if not items:
        return []
    return [f"<p><b>{label}:</b></p>\n<ul>" + "".join(f"<li>{escape(i)}</li>" for i in items) + "</ul>"]


def _footnotes(analysis: Analysis) -> list[str]:
    notes = []
    if s.relevant_not_evaluated(analysis):
        notes.append(
            f'<details class="dim"><summary>Not evaluated: {escape(s.not_evaluated_short(analysis))}'
            f"</summary><p>{escape(s.not_evaluated(analysis))}</p></details>"
        )
    notes += [f'<p class="error">Rule error: {escape(code)} failed: {escape(err)}</p>' for code, err in analysis.errors]
    notes += [f'<p class="dim">Reading: {escape(w)}</p>' for w in analysis.run.warnings]
    return notes
