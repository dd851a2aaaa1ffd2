"""What every report format says the same way: verdicts, run summaries, where a finding is.

Renderers (terminal, Markdown, JSON, HTML) take a list of `Analysis` objects
and use these helpers, so that a verdict or a step range reads the same in
every format.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from diagnose.rules.base import Category, Finding, Severity
from diagnose.rules.codes import all_rules, prefix_of
from diagnose.rules.engine import Analysis
from diagnose.run import Run
from diagnose.runfile import schema

# How many steps of a finding's step list a text report spells out.
MAX_LISTED_STEPS = 6


@dataclass(frozen=True)
class RunSummary:
    """The few numbers a reader wants before the findings."""

    steps: int
    last_step: int | None
    final_loss: float | None
    best_loss: float | None
    best_loss_step: int | None
    final_val_loss: float | None
    best_val_loss: float | None
    best_val_step: int | None


def summarize(run: Run) -> RunSummary:
    """The run's `RunSummary` (kept while the run is being read)."""
    return run.kept(("summary",), lambda: _summarize(run))


def _summarize(run: Run) -> RunSummary:
    final_loss, best_loss, best_step = _last_and_best(run, "loss")
    final_val, best_val, best_val_step = _last_and_best(run, "val_loss")
    return RunSummary(
        steps=run.n_steps,
        last_step=run.last_step,
        final_loss=final_loss,
        best_loss=best_loss,
        best_loss_step=best_step,
        final_val_loss=final_val,
        best_val_loss=best_val,
        best_val_step=best_val_step,
    )


def _last_and_best(run: Run, column: str) -> tuple[float | None, float | None, int | None]:
    """The last logged value (NaN included) and the lowest finite one with its step."""
    values = run.series(column, keep_nan=True)
    if values.empty:
        return None, None, None
    numbers = values.to_numpy(dtype="float64")
    last = float(numbers[-1])
    finite = np.isfinite(numbers)
    if finite.all():  # the common case: the lowest of them all, without gathering the finite ones first
        best_at = int(np.argmin(numbers))  # the first of equal lowest values, as idxmin takes it
    else:
        positions = np.flatnonzero(finite)
        if not len(positions):
            return last, None, None
        best_at = positions[np.argmin(numbers[positions])]
    return last, float(numbers[best_at]), int(values.index[best_at])


# -- severity counts and verdicts ------------------------------------------------


def problems(analysis: Analysis) -> list[Finding]:
    """Findings that make a run unhealthy (warnings and errors; notes do not)."""
    return [f for f in analysis.findings if f.severity.rank >= Severity.WARNING.rank]


def is_healthy(analysis: Analysis) -> bool:
    """No problem found, on a run that gave the rules a training loss to judge."""
    return not problems(analysis) and coverage(analysis.run).judged


def outcome(analysis: Analysis) -> str:
    """``"problems"``, ``"healthy"`` or ``"not_judged"`` (no problem found, but too little read to say healthy)."""
    if problems(analysis):
        return "problems"
    return "healthy" if coverage(analysis.run).judged else "not_judged"


# -- what a run gave the rules to read ------------------------------------------

# The fewest training-loss points a run is called healthy on: the shortest
# curve the loss-shape rules read (LR001 and OVF001 need 4, a start and an
# end of three points). Fewer points say nothing about how training went.
MIN_JUDGED_POINTS = 4
# How many column names a "no training loss among keys" line spells out.
MAX_LISTED_KEYS = 12
# Probe-recorded quantities, in the words a verdict names them.
_PROBE_FIELDS = (
    ("grad_norm", "gradient norm"),
    ("lr", "learning rate"),
    ("rss", "memory"),
    ("cuda_allocated", "memory"),
    ("gpu_mem_used", "memory"),
    ("loss_scale", "AMP loss scale"),
)


@dataclass(frozen=True)
class Coverage:
    """What a run held for the rules to read, and whether that is enough for a verdict."""

    train_points: int
    validation: tuple[str, ...]
    evaluations: int
    probes: tuple[str, ...]
    keys: tuple[str, ...]
    preflight: bool = False  # a preflight record: its checks are judged, not a training curve

    @property
    def judged(self) -> bool:
        return self.preflight or self.train_points >= MIN_JUDGED_POINTS

    @property
    def reason(self) -> str | None:
        """Why no verdict can be given (None when one can)."""
        if self.train_points == 0:
            shown = ", ".join(self.keys[:MAX_LISTED_KEYS]) + (", ..." if len(self.keys) > MAX_LISTED_KEYS else "")
            return f"no training loss among keys: {shown or 'none'}"
        if not self.judged:
            return f"{plural(self.train_points, 'training-loss point')}: too short to judge"
        return None

    def describe(self) -> str:
        """``"training loss (400 points); validation: val_loss, val_accuracy (20 evaluations); probes: ..."``."""
        if self.preflight:
            return "preflight experiments"
        parts = [f"training loss ({plural(self.train_points, 'point')})" if self.train_points else "no training loss"]
        if self.validation:
            shown = ", ".join(self.validation[:4]) + (", ..." if len(self.validation) > 4 else "")
            parts.append(f"validation: {shown} ({plural(self.evaluations, 'evaluation')})")
        if self.probes:
            parts.append("also: " + ", ".join(self.probes))
        return "; ".join(parts)


def coverage(run: Run) -> Coverage:
    """What ``run`` gave the rules to read (kept while the run is being read: a report asks for it
    several times per run)."""
    return run.kept(("coverage",), lambda: _coverage(run))


def settle_report_facts(run: Run) -> None:
    """Work out the run's coverage and summary once and keep them with it (see `Run.settle`)."""
    with run.reading():
        coverage(run)
        summarize(run)
        run.settle([("coverage",), ("summary",)])


def _coverage(run: Run) -> Coverage:
    keys = tuple(c for kind in ("steps", "evals") for c in run.columns(kind) if c != "step" and run.has(c))
    validation = tuple(c for c in run.columns("evals") if c.startswith("val_") and run.has(c))
    probes = [word for column, word in _PROBE_FIELDS if run.has(column)]
    if not run.layers.empty:
        probes.append("per-layer statistics")
    if not run.events.empty:
        probes.append("events")
    logged = [run.evals[c].notna().to_numpy() for c in validation]
    evaluations = int(np.logical_or.reduce(logged).sum()) if logged else 0
    return Coverage(
        train_points=len(run.series("loss", keep_nan=True)),
        validation=validation,
        evaluations=evaluations,
        probes=tuple(dict.fromkeys(probes)),
        keys=tuple(dict.fromkeys(keys)),
        preflight=run.meta.get("preflight") is True,
    )


def at_or_above(findings: Sequence[Finding], threshold: Severity) -> list[Finding]:
    return [f for f in findings if f.severity.rank >= threshold.rank]


def count_by_severity(findings: Sequence[Finding]) -> str:
    """``"1 error, 2 warnings"`` (empty when there are none)."""
    parts = []
    for severity in Severity:
        n = sum(1 for f in findings if f.severity is severity)
        if n:
            parts.append(plural(n, severity.value))
    return ", ".join(parts)


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def order_runs(analyses: Sequence[Analysis]) -> list[Analysis]:
    """Worst run first: by its worst finding, then by how many problems it has.

    Runs that could not be judged come after those with problems.
    """

    def key(analysis: Analysis) -> tuple[Any, ...]:
        found = problems(analysis)  # once: a report of a thousand runs sorts them by this
        worst_key = found[0].sort_key() if found else (1 if coverage(analysis.run).judged else 0,)
        return (worst_key, -len(found), analysis.run.name)

    return sorted(analyses, key=key)


def worst_finding(analyses: Sequence[Analysis]) -> Finding | None:
    found = [problems(a)[0] for a in analyses if problems(a)]
    return min(found, key=Finding.sort_key) if found else None


def verdict(analyses: Sequence[Analysis]) -> str:
    """The one line a report opens with."""
    if len(analyses) == 1:
        return _run_verdict(analyses[0])
    outcomes = [outcome(a) for a in analyses]
    head = (
        f"{plural(len(analyses), 'run')}: {outcomes.count('healthy')} healthy, "
        f"{outcomes.count('problems')} with problems"
    )
    if "not_judged" in outcomes:
        head += f", {outcomes.count('not_judged')} not judged (too little read)"
    worst = worst_finding(analyses)
    if worst is None:
        return head
    every = [f for a in analyses for f in problems(a)]
    return f"{head} ({count_by_severity(every)}); worst: {describe(worst)} in run '{worst.run}'"


def _run_verdict(analysis: Analysis) -> str:
    found = problems(analysis)
    name = analysis.run.name
    read = coverage(analysis.run)
    if found:
        symptoms = next((members for root, members in analysis.root_causes if root is found[0]), [])
        explained = f", which {explains_text(symptoms)}" if symptoms else ""
        return (
            f"{plural(len(found), 'problem')} in run '{name}' ({count_by_severity(found)}); "
            f"worst: {describe(found[0])}{explained}; read: {read.describe()}"
        )
    notes = len(analysis.findings)
    extra = f"; {plural(notes, 'note')}" if notes else ""
    if not read.judged:
        return f"not judged: run '{name}': {read.reason}; read: {read.describe()}{extra}"
    return f"healthy: no problems found in run '{name}'; read: {read.describe()}{extra}"


def explains_text(symptoms: Sequence[Finding]) -> str:
    """``"explains 2 other findings: LR001, SPK001"`` (empty without symptoms)."""
    if not symptoms:
        return ""
    return f"explains {plural(len(symptoms), 'other finding')}: {', '.join(f.code for f in symptoms)}"


def symptom_line(finding: Finding) -> str:
    """A symptom under its root cause, on one line: code, title, where, what was seen."""
    place = where(finding)
    return (
        f"{finding.code} {finding.title} ({finding.severity.value}{', ' + place if place else ''}): {finding.message}"
    )


def supersedes_text(analysis: Analysis, root: Finding, symptoms: Sequence[Finding] = ()) -> str:
    """What a root cause (or one of its symptoms) set aside as redundant, so that nothing vanishes silently:
    ``"PLT001 Loss stopped improving (warning, steps 20-300)"`` (empty when nothing was)."""
    shown = {id(f): f for f in (root, *symptoms)}
    by = {(f.run, f.code): f for f in shown.values()}
    parts = []
    for gone, code in analysis.superseded:
        finding = by.get((gone.run, code))
        if finding is not None:
            parts.append(describe(gone) + ("" if finding is root else f", via {code}"))
    return "; ".join(parts)


def describe(finding: Finding) -> str:
    """``"LR001 Loss rises from the start (error, steps 10-80)"``."""
    place = where(finding)
    detail = f"{finding.severity.value}, {place}" if place else finding.severity.value
    return f"{finding.code} {finding.title} ({detail})"


RUN_COLUMNS = ("run", "steps", "final loss", "lowest loss (step)", "lowest val (step)", "findings")


def run_row(analysis: Analysis) -> list[str]:
    """One summary row: run, steps, final loss, lowest loss, lowest validation loss, findings."""
    summary = summarize(analysis.run)
    counts = count_by_severity(analysis.findings) or outcome(analysis).replace("_", " ")
    return [
        analysis.run.name,
        str(summary.steps),
        number(summary.final_loss),
        loss_cell(summary.best_loss, summary.best_loss_step),
        loss_cell(summary.best_val_loss, summary.best_val_step),
        counts,
    ]


def run_summary_line(analysis: Analysis) -> str:
    """``"run 'x': 600 steps, final loss 0.12, lowest loss 0.1 at step 580, ..."``."""
    summary = summarize(analysis.run)
    parts = [f"run '{analysis.run.name}': {plural(summary.steps, 'step')}"]
    if summary.final_loss is not None:
        parts.append(f"final loss {number(summary.final_loss)}")
        parts.append(f"lowest loss {_at_step(summary.best_loss, summary.best_loss_step)}")
    if summary.best_val_loss is not None:
        parts.append(f"lowest validation loss {_at_step(summary.best_val_loss, summary.best_val_step)}")
    elif summary.final_val_loss is not None:
        parts.append(f"validation loss {number(summary.final_val_loss)}")
    return ", ".join(parts)


def relevant_not_evaluated(analysis: Analysis) -> list[tuple[str, str]]:
    """The rules worth saying were not evaluated on this kind of run.

    A training run is not expected to hold preflight experiments, nor a preflight
    run a training curve: rules of the other kind are left out.
    """
    preflight = {rule.code for rule in all_rules() if rule.category is Category.PREFLIGHT}
    events = analysis.run.events
    is_preflight_run = (
        len(events) > 0 and "event" in events.columns and bool((events["event"] == schema.EV_PREFLIGHT).any())
    )  # without event records (most runs) no frame comparison is made for each report line
    return [(code, reason) for code, reason in analysis.not_evaluated if (code in preflight) == is_preflight_run]


def not_evaluated(analysis: Analysis) -> str:
    """Rules that did not run, grouped by what they lack: ``"ACT001-ACT003 (3 rules need layers)"``."""
    groups: dict[str, list[str]] = {}
    for code, reason in relevant_not_evaluated(analysis):
        groups.setdefault(_missing_root(reason), []).append(code)
    return "; ".join(_codes(codes, what) for what, codes in groups.items())


def not_evaluated_short(analysis: Analysis, most: int = 3) -> str:
    """One line: ``"5 rules, for lack of accuracy, layers.act_sat_frac, events"`` (empty when none)."""
    relevant = relevant_not_evaluated(analysis)
    if not relevant:
        return ""
    missing = list(dict.fromkeys(f for _, reason in relevant for f in _missing_root(reason).split(", ")))
    shown = ", ".join(missing[:most]) + (f" and {len(missing) - most} more" if len(missing) > most else "")
    return f"{plural(len(relevant), 'rule')}, for lack of {shown}"


def _missing_root(reason: str) -> str:
    """``"needs preflight.labels, loss"`` -> ``"preflight, loss"`` (``layers.x`` kept whole)."""
    fields = reason.removeprefix("needs ").split(", ")
    roots = [f if f.startswith("layers.") else f.split(".")[0] for f in fields]
    return ", ".join(dict.fromkeys(roots))


def _codes(codes: Sequence[str], missing: str) -> str:
    if len(codes) > 3:
        return f"{_code_spans(codes)} ({len(codes)} rules need {missing})"
    return f"{', '.join(codes)} ({'needs' if len(codes) == 1 else 'need'} {missing})"


def _code_spans(codes: Sequence[str]) -> str:
    """``BUG016-BUG018, BUG023``: a span only of one prefix, with no rule of the code table between its ends."""
    position = {rule.code: index for index, rule in enumerate(all_rules())}
    spans: list[list[str]] = []
    for code in sorted(codes, key=lambda c: position.get(c, len(position))):
        last = spans[-1][-1] if spans else None
        if last and prefix_of(code) == prefix_of(last) and position.get(code) == position.get(last, -2) + 1:
            spans[-1].append(code)
        else:
            spans.append([code])
    return ", ".join(f"{s[0]}-{s[-1]}" if len(s) > 2 else ", ".join(s) for s in spans)


# -- where a finding is ------------------------------------------------------------


def where(finding: Finding) -> str:
    """Steps, module and rank of a finding in words (empty when it names none)."""
    steps = _step_list(finding.steps) if tuple(finding.steps) != (finding.onset,) else ""
    parts = [p for p in (_step_span(finding), steps) if p]
    if finding.module:
        parts.append(f"in {finding.module_label or 'module ' + finding.module}")
    if finding.rank is not None:
        parts.append(f"rank {finding.rank}")
    if finding.seen_live is not None:
        parts.append(f"first seen live at step {finding.seen_live}")
    return ", ".join(parts)


def _step_span(finding: Finding) -> str:
    if finding.onset is None:
        return ""
    if finding.end is None:
        return f"from step {finding.onset}"
    if finding.end == finding.onset:
        return f"at step {finding.onset}"
    return f"steps {finding.onset}-{finding.end}"


def _step_list(steps: Sequence[int]) -> str:
    if not steps:
        return ""
    shown = ", ".join(str(s) for s in steps[:MAX_LISTED_STEPS])
    more = len(steps) - MAX_LISTED_STEPS
    label = "step" if len(steps) == 1 else "steps"
    return f"at {label} {shown}" + (f" (+{more} more)" if more > 0 else "")


# -- numbers --------------------------------------------------------------------


def number(value: Any) -> str:
    """A number as a person reads it: 4 significant digits, NaN and inf spelled out."""
    if isinstance(value, bool) or value is None:
        return str(value).lower() if isinstance(value, bool) else "-"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        shown = ", ".join(number(v) for v in value[:MAX_LISTED_STEPS])
        return f"[{shown}{', ...' if len(value) > MAX_LISTED_STEPS else ''}]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k}: {number(v)}" for k, v in value.items()) + "}"
    return str(value)


def evidence_items(evidence: Mapping[str, Any]) -> list[str]:
    """``["first_loss=2.303", "last_loss=9.1"]``."""
    return [f"{key}={number(value)}" for key, value in evidence.items()]


def _at_step(value: float | None, step: int | None) -> str:
    return f"{number(value)} at step {step}" if step is not None else number(value)


def loss_cell(value: float | None, step: int | None = None) -> str:
    text = number(value)
    return f"{text} ({step})" if step is not None and value is not None else text
