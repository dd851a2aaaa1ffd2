"""What several rule modules share. A rule module imports from here, never from another rule module."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from diagnose import curves
from diagnose.run import Run

# Codes of the findings a blocked update explains: a loss stuck at chance, a
# stall, a slow straight decline. Dead, saturated or collapsed units and
# vanishing or tiny updates all declare `explains = STALLED_LEARNING`.
STALLED_LEARNING = ("CH001", "PLT001", "LR003")


def later_samples(table: pd.DataFrame, fraction: float = 0.5) -> pd.DataFrame:
    """The later ``fraction`` of a layer table's sampled steps (at least one; never the first sample alone
    when there are more): what a layer settled into, not how it was initialised."""
    if len(table) <= 1:
        return table
    count = max(1, int(np.ceil((len(table) - 1) * fraction)))
    return table.iloc[-count:]


def layer_table(run: Run, column: str) -> pd.DataFrame:
    """``run.layer_series(column)`` up to the first NaN/Inf loss: after it every layer statistic is a
    consequence of the NaN (NF001's finding), not a problem of its own. (A non-finite gradient alone
    does not cut: AMP skips such steps on purpose.)"""
    table = run.layer_series(column)
    cut = curves.first_nonfinite_step(run.series("loss", keep_nan=True))
    return table if cut is None else table[table.index < cut]


def events_named(run: Run, name: str) -> pd.DataFrame:
    """The event rows of one kind (``schema.EV_*``), in step order; an empty table when there are none."""
    events = run.events
    if events.empty or "event" not in events.columns:
        return events.iloc[0:0]
    found = events[events["event"] == name]
    return found.sort_values("step", kind="stable") if "step" in found.columns else found


def event_records(run: Run, name: str) -> list[dict[str, Any]]:
    """`events_named` as dicts, each without the columns its record did not set."""
    found = events_named(run, name)
    if found.empty:
        return []  # most runs: no such event, and an empty frame's to_dict costs as much as a full one
    rows = found.to_dict("records")
    return [{key: value for key, value in row.items() if not _absent(value)} for row in rows]


def _absent(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def modules(run: Run, names: Sequence[str], most: int = 4) -> str:
    """Module names as a person finds them in their code (``model.2 (Linear)``), listed as `listing` does."""
    return listing([run.module_label(str(name)) for name in names], most)


def listing(items: Sequence[str], most: int = 4) -> str:
    """``"a, b, c, d and 3 more"``: the first ``most`` items of a list too long to print whole."""
    shown = ", ".join(items[:most])
    return shown + (f" and {len(items) - most} more" if len(items) > most else "")
