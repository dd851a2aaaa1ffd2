"""Generated inputs (hypothesis) through reading, analysis, every report format and the plot: each
example gives runs that render cleanly or one `InputError` line, never another exception (issue 12).

Time is bounded by the number and size of examples, not by a deadline: a wall-clock limit flakes on
a loaded CI machine, and the suite must not assert on wall time.
"""

from __future__ import annotations

import csv
import io
import json
import math
import tempfile
import warnings
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from diagnose.errors import InputError
from diagnose.readers import load_all
from diagnose.report import render
from diagnose.report.plots import figure, image_bytes
from diagnose.rules.engine import analyze

FUZZ = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)
KEYS = [
    "step",
    "loss",
    "val_loss",
    "val_loss_epoch",
    "lr",
    "grad_norm",
    "epoch",
    "kind",
    "module",
    "event",
    "where",
    "name",
    "rank",
    "world_size",
    "eval_accuracy",
    "train/loss",
    "global_step",
    "Loss",
    "\x1b[2J",
]
NUMBERS = st.one_of(
    st.integers(-(10**6), 10**6),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([1.7e308, -1.7e308, 5e-324, 0.0, 1e-30]),
)
TEXT = st.one_of(
    st.sampled_from(["NaN", "Infinity", "-inf", "step", "layer", "event", "meta", "eval", ""]), st.text(max_size=12)
)
SCALAR = st.one_of(NUMBERS, TEXT, st.booleans(), st.none())
VALUE = st.recursive(
    SCALAR, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3), max_leaves=6
)
RECORD = st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=8), VALUE, max_size=6)


def jsonl_text(records: list, garbage: list[str]) -> str:
    lines = [json.dumps(r, default=str) for r in records] + garbage
    return "\n".join(lines) + "\n"


def check_everything(path: Path) -> None:
    """Read, analyse, render every format; only an InputError may stop it."""
    try:
        runs = load_all(path)
    except InputError as exc:
        assert "\n" not in str(exc).strip()
        return
    analyses = [analyze(run) for run in runs]
    for fmt in ("terminal", "json", "md"):  # html draws the plot: the slower plot test covers it
        assert render(analyses, fmt)


def write(text: str | bytes, name: str) -> Path:
    folder = Path(tempfile.mkdtemp(prefix="fuzz-"))
    path = folder / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8", errors="surrogatepass"))
    return path


@FUZZ
@given(st.lists(RECORD, max_size=25), st.lists(st.text(max_size=20), max_size=3))
def test_generated_jsonl(records, garbage) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check_everything(write(jsonl_text(records, garbage), "run.jsonl"))


CURVE = st.lists(st.tuples(st.integers(-5, 10**9), NUMBERS, NUMBERS), min_size=1, max_size=40)


@FUZZ
@given(CURVE, st.sampled_from(["kind", "step", "meta"]))
def test_generated_native_curves(points, key_kind) -> None:
    """Mostly well-formed run files with hostile numbers: what the rules and the reports really see."""
    records = [{"kind": "meta", "schema": "diagnose.run/1", "name": "fuzz"}] if key_kind == "meta" else []
    records += [
        {"kind": "step", "step": s, "loss": a, "grad_norm": b}
        if key_kind != "step"
        else {"step": s, "loss": a, "val_loss": b}
        for s, a, b in points
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check_everything(write(jsonl_text(records, []), "run.jsonl"))


@FUZZ
@given(
    st.lists(st.sampled_from(KEYS[:8]) | st.text(max_size=6), min_size=1, max_size=5),
    st.lists(st.lists(st.one_of(NUMBERS.map(repr), TEXT), max_size=6), max_size=25),
)
def test_generated_csv(header, rows) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows(rows)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check_everything(write(buffer.getvalue(), "metrics.csv"))


@FUZZ
@given(
    st.lists(RECORD, max_size=20),
    st.dictionaries(st.sampled_from(["global_step", "epoch", "best_metric"]), SCALAR, max_size=3),
)
def test_generated_trainer_state(history, extra) -> None:
    state = {"log_history": history, **extra}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check_everything(write(json.dumps(state, default=str), "trainer_state.json"))


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)
@given(CURVE)
def test_generated_curves_plot_and_render_html(points) -> None:
    records = [{"step": s, "loss": a, "grad_norm": b, "lr": abs(b) if math.isfinite(b) else b} for s, a, b in points]
    records += [{"kind": "layer", "step": s, "module": "fc", "grad_norm": a, "act_std": b} for s, a, b in points]
    path = write(jsonl_text(records, []), "run.jsonl")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            analyses = [analyze(run) for run in load_all(path)]
        except InputError:
            return
        assert image_bytes(figure(analyses)).startswith(b"\x89PNG")
        assert "<html" in render(analyses, "html")
