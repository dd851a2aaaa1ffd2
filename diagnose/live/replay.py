"""Replay a finished run through the live monitor: what would have been announced, and at which step.

Used to check the live rules against recorded runs: a live finding that the
analysis of the whole run does not confirm is a false alarm.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import pandas as pd

from diagnose.live.monitor import LiveMonitor
from diagnose.live.sketch import Record
from diagnose.rules.base import Finding
from diagnose.run import Run
from diagnose.runfile import schema


def _rows(frame: pd.DataFrame, kind: str, nan_steps: dict[str, Any]) -> Iterator[Record]:
    """Rows as records; a NaN stays only where the source really held one (``Run.nan_steps``)."""
    real_nans = {column: set(steps.tolist()) for column, steps in nan_steps.items()}
    for row in frame.to_dict("records"):
        step = row.get("step")
        values = {
            k: v for k, v in row.items() if not (isinstance(v, float) and math.isnan(v)) or step in real_nans.get(k, ())
        }
        if isinstance(step, float) and math.isfinite(step):
            values["step"] = int(step)
        yield {"kind": kind, **values}


def records_of(run: Run) -> list[Record]:
    """The run as the records a watch would have written, in step order (meta first)."""
    ordered: list[tuple[float, int, Record]] = []
    for order, (frame, kind) in enumerate(
        ((run.steps, schema.STEP), (run.layers, schema.LAYER), (run.evals, schema.EVAL), (run.events, schema.EVENT))
    ):
        nans = run.nan_steps if kind in (schema.STEP, schema.EVAL) else {}
        ordered += [(float(r.get("step", math.inf)), order, r) for r in _rows(frame, kind, nans)]
    ordered.sort(key=lambda item: (item[0], item[1]))
    return [{"kind": schema.META, **run.meta}] + [record for _, _, record in ordered]


def replay(run: Run, judgements: int = 20, **options: Any) -> list[tuple[int, Finding]]:
    """Feed ``run`` to a `LiveMonitor`, judging it at steps 8, 16, 32, ... and ``judgements`` evenly spaced
    points; returns (step first announced, finding) for each live finding."""
    written: list[Record] = []
    monitor = LiveMonitor(run.name, written.append, **options)
    steps = run.steps["step"].dropna().to_numpy() if "step" in run.steps.columns else []
    if not len(steps):
        return []
    spacing = max(1, len(steps) // judgements)
    powers_of_two = {int(s) for s in steps if s >= 8 and not int(s) & int(s - 1)}
    due = {int(s) for s in steps[spacing - 1 :: spacing]} | powers_of_two
    last_step = None
    for record in records_of(run):
        step = record.get("step")
        if record["kind"] == schema.STEP and last_step is not None and step != last_step and last_step in due:
            monitor.flushed(final=True)
        monitor.observe(record)
        if record["kind"] == schema.STEP:
            last_step = step
    monitor.flushed(final=True)
    return [(monitor.first_seen[f.code], f) for f in monitor.findings]
