"""What several rule modules share. A rule module imports from here, never from another rule module."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from diagnose import curves
from diagnose.rules import bug_signatures as sig
from diagnose.run import Run

# Codes of the findings a blocked update explains: a loss stuck at chance, a
# stall, a short run that learned nothing, a slow straight decline. Dead, saturated or collapsed units and
# vanishing or tiny updates all declare `explains = STALLED_LEARNING`.
STALLED_LEARNING = ("CH001", "CH003", "PLT001", "PLT002", "LR003")


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


# Module types whose gradient is a weight matrix: the layers depth is counted in.
_WEIGHT_LAYERS = ("Linear", "Conv", "Bilinear")


def weight_layers(run: Run, columns: pd.Index) -> list[str]:
    """Modules among ``columns`` that hold a weight matrix (Linear/Conv), in model order; all when types are unknown."""
    types = {
        name: kind
        for name, kind in (
            (m[0], m[1])
            for m in (run.meta.get("model") or {}).get("modules", [])
            if isinstance(m, (list, tuple)) and len(m) == 2
        )
    }
    if not types:
        return list(columns)
    return [c for c in columns if any(k in str(types.get(c, "")) for k in _WEIGHT_LAYERS)]


def vanishing_gradient(run: Run, max_ratio: float, min_layers: int) -> dict | None:
    """The first quarter of the weight layers (model order) gets under ``max_ratio`` of the last
    quarter's gradient norm (medians over the later half of the layer samples); None otherwise."""
    table = later_samples(layer_table(run, "grad_norm"))
    layers = [m for m in weight_layers(run, table.columns) if table[m].notna().any()]
    if len(layers) < min_layers:
        return None
    quarter = max(1, len(layers) // 4)
    first, last = layers[:quarter], layers[-quarter:]
    first_norm = float(table[first].median().median())
    last_norm = float(table[last].median().median())
    if last_norm <= 0 or first_norm / last_norm >= max_ratio:
        return None
    return {
        "ratio": first_norm / last_norm,
        "first_layers": first,
        "last_layers": last,
        "first_norm": first_norm,
        "last_norm": last_norm,
        "per_layer": table[layers].median().to_dict(),
    }


# Activation module types: a layer right after one of them is judged by the activation rules, not as
# the input of a functional activation.
ACTIVATION_TYPES = {
    "tanh": ("Tanh", "Hardtanh", "Softsign"),
    "relu": ("ReLU", "ReLU6", "LeakyReLU", "PReLU"),
    "sigmoid": ("Sigmoid", "Hardsigmoid"),
}
_INPUT_STATS = ("in_min", "in_absmax", "in_sat_frac", "in_dead_frac", "in_zero_frac")


def functional_activations(run: Run, min_share: float) -> list[tuple[str, str, dict]]:
    """(layer, ``"tanh"`` or ``"relu"``, evidence) for each layer after the first whose input looks like
    the output of a functional activation (``torch.tanh``, ``F.relu`` inside ``forward``) that saturates
    or dies, at ``min_share`` or more (medians over the sampled steps of the ``in_*`` statistics); layers
    right after an activation module are left out. Model order; at most one kind per layer."""
    order = run.module_order()
    types = dict((run.meta.get("model") or {}).get("modules") or [])
    activation_modules = sum(ACTIVATION_TYPES.values(), ())
    medians = {c: run.layer_series(c).median() for c in _INPUT_STATS}
    found = []
    for module in list(run.layer_series("in_sat_frac").columns)[1:]:
        before = order[order.index(module) - 1] if module in order and order.index(module) > 0 else None
        if before is not None and types.get(before) in activation_modules:
            continue
        stats = {c: float(medians[c].get(module, math.nan)) for c in _INPUT_STATS}
        for kind in ("tanh", "relu"):
            evidence = sig.functional_activation(kind, *(stats[c] for c in _INPUT_STATS), min_share)
            if evidence is not None:
                found.append((module, kind, evidence))
                break
    return found


def validation_loss(run: Run) -> tuple[str, pd.Series]:
    """``val_loss``, or else the first validation column that is a loss (``val_g0_loss``, ...)."""
    columns = ["val_loss"] + sorted(c for c in run.columns("evals") if c.startswith("val_") and c.endswith("loss"))
    for column in columns:
        if run.has(column):
            return column, curves.finite(run.series(column))
    return "val_loss", pd.Series(dtype="float64")


def constant_guess_loss(accuracy: float) -> float:
    """The entropy of a share ``accuracy``: the lowest cross-entropy one constant guess reaches when the
    commonest class is that share of the examples, and the loss of a model right on that share of them
    that gives its answer that same probability every time (more classes only raise both). A loss under
    it proves the model tells examples apart, and that it is not confident where it is wrong."""
    if accuracy >= 1:
        return 0.0
    return float(-(accuracy * np.log(accuracy) + (1 - accuracy) * np.log(1 - accuracy)))
