"""Reader for JSON Lines run files: ours (format v1) and the minimal form.

Tolerant by design: a cut last line, a line that is not JSON, unknown keys and
strings where numbers belong are skipped or converted with a warning on the
``Run``; only a file with nothing usable in it is an error.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from diagnose.errors import InputError
from diagnose.run import Run
from diagnose.runfile import schema


def _parse_std(line: bytes) -> Any:
    # Bare NaN/Infinity tokens (Python's default output) are kept as strings so
    # that a logged NaN stays distinguishable from a value that was not logged.
    return json.loads(line, parse_constant=str)


try:  # orjson is an optional speed-up for very long runs
    import orjson

    def _parse(line: bytes) -> Any:
        try:
            return orjson.loads(line)
        except orjson.JSONDecodeError:
            return _parse_std(line)  # orjson rejects bare NaN/Infinity tokens

except ImportError:  # pragma: no cover - depends on the environment
    _parse = _parse_std

_MAX_WARNINGS_PER_KIND = 3


class _Segment:
    """Records of one run inside a file (a file may hold several appended runs)."""

    def __init__(self) -> None:
        self.meta: dict[str, Any] = {}
        self.steps: list[dict[str, Any]] = []
        self.evals: list[dict[str, Any]] = []
        self.layers: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []
        self.last_step: float | None = None
        self.first_step: float | None = None

    def empty(self) -> bool:
        return not (self.steps or self.evals or self.layers or self.events)


class _Warnings:
    def __init__(self) -> None:
        self.messages: list[str] = []
        self._counts: dict[str, int] = {}

    def add(self, kind: str, message: str) -> None:
        count = self._counts.get(kind, 0) + 1
        self._counts[kind] = count
        if count <= _MAX_WARNINGS_PER_KIND:
            self.messages.append(message)

    def summary(self) -> list[str]:
        extra = [
            f"... and {count - _MAX_WARNINGS_PER_KIND} more like it ({kind})"
            for kind, count in self._counts.items()
            if count > _MAX_WARNINGS_PER_KIND
        ]
        return self.messages + extra


def read_jsonl(path: str | Path, *, name: str | None = None) -> list[Run]:
    """Read every run in a JSON Lines file (several when runs were appended)."""
    path = Path(path)
    warnings = _Warnings()
    segments = _split_segments(_records(path, warnings), warnings)
    runs = [s for s in segments if not s.empty()]
    if not runs:
        raise InputError(f"{path}: no step, evaluation or event records found (expected JSON lines like "
                         '{"step": 1, "loss": 0.5})')
    base = name or path.stem
    result = []
    for index, segment in enumerate(runs):
        run_name = base if len(runs) == 1 else f"{base}#{index + 1}"
        result.append(_build_run(segment, run_name, str(path), warnings.summary()))
    if len(runs) > 1:
        for run in result:
            run.warnings.append(f"{path.name} holds {len(runs)} runs appended one after another "
                                "(the step counter restarts); they are read as separate runs")
    return result


def _records(path: Path, warnings: _Warnings) -> Iterator[dict[str, Any]]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a folder, expected a run file") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror})") from None
    if not raw.strip():
        raise InputError(f"{path}: file is empty")
    lines = raw.split(b"\n")
    last_index = len(lines) - 1
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = _parse(line)
        except (ValueError, UnicodeDecodeError):
            if number >= last_index:
                warnings.add("truncated", f"line {number}: cut off (the writer was probably killed); ignored")
            else:
                warnings.add("not-json", f"line {number}: not JSON; ignored")
            continue
        if not isinstance(record, dict):
            warnings.add("not-object", f"line {number}: not a JSON object; ignored")
            continue
        yield record


def _split_segments(records: Iterable[dict[str, Any]], warnings: _Warnings) -> list[_Segment]:
    segments = [_Segment()]
    for record in records:
        kind = record.get("kind")
        current = segments[-1]
        if kind == schema.META:
            # A meta record opens a session. Whether it is a new run or a
            # resumed one is decided by the step counter (below).
            if not current.meta:
                current.meta = dict(record)
            else:
                current.meta.setdefault("resumed", []).append(record.get("started"))
            continue
        step = schema.to_number(record.get("step"))
        if step is not None and not math.isfinite(step):
            step = None
        if kind in (None, schema.STEP) and step is not None and _restarts(current, step):
            fresh = _Segment()
            fresh.meta = dict(current.meta)
            segments.append(fresh)
            current = fresh
        _add(current, kind, record, step, warnings)
    return segments


def _restarts(segment: _Segment, step: float) -> bool:
    """A step counter that goes back to (or below) the segment's first step starts a new run."""
    if not segment.steps or segment.first_step is None or segment.last_step is None:
        return False
    return step <= segment.first_step and segment.last_step > segment.first_step


def _add(segment: _Segment, kind: Any, record: dict[str, Any], step: float | None, warnings: _Warnings) -> None:
    if kind is None:
        _add_minimal(segment, record, step, warnings)
        return
    if kind not in schema.KINDS:
        warnings.add("unknown-kind", f"record kind {kind!r} is not known; ignored")
        return
    if step is None and kind != schema.EVENT:
        warnings.add("no-step", f"a {kind} record has no usable step; ignored")
        return
    body = {k: v for k, v in record.items() if k != "kind"}
    body["step"] = step
    if kind == schema.STEP:
        segment.steps.append(body)
        segment.first_step = step if segment.first_step is None else segment.first_step
        segment.last_step = step
    elif kind == schema.EVAL:
        segment.evals.append({schema.canonical_eval_key(k) if k != "step" else k: v for k, v in body.items()})
    elif kind == schema.LAYER:
        segment.layers.append(body)
    else:
        segment.events.append(body)


def _add_minimal(segment: _Segment, record: dict[str, Any], step: float | None, warnings: _Warnings) -> None:
    if step is None:
        step = float(segment.last_step + 1) if segment.last_step is not None else 0.0
    train: dict[str, Any] = {}
    evals: dict[str, Any] = {}
    for key, value in record.items():
        if key == "step":
            continue
        if schema.is_eval_key(key):
            evals[schema.canonical_eval_key(key)] = value
        else:
            train[schema.canonical_step_key(key)] = value
    if train:
        train["step"] = step
        segment.steps.append(train)
        segment.first_step = step if segment.first_step is None else segment.first_step
        segment.last_step = step
    if evals:
        evals["step"] = step
        segment.evals.append(evals)
    if not train and not evals:
        warnings.add("empty-record", "a record holds only a step; ignored")


_TEXT_COLUMNS = {"module", "type", "event", "where", "tensor", "probe", "error", "message", "origin", "detail", "phase"}


def _numeric_frame(rows: list[dict[str, Any]], warnings: _Warnings, label: str,
                   nan_steps: dict[str, np.ndarray] | None = None) -> pd.DataFrame:
    """Rows to a frame whose number columns are float64, strings converted or dropped."""
    if not rows:
        return pd.DataFrame({"step": pd.Series(dtype="float64")})
    frame = pd.DataFrame.from_records(rows)
    for column in list(frame.columns):
        if column in _TEXT_COLUMNS:
            continue
        values = frame[column]
        if values.dtype.kind in "fiub":
            numbers = values.astype("float64")
        else:
            numbers, bad = _coerce(values)
            if bad:
                warnings.add(f"not-number-{label}-{column}",
                             f"{label} field {column!r}: {bad} value(s) are not numbers; read as missing")
            if numbers.isna().all():
                frame = frame.drop(columns=column)
                continue
        if nan_steps is not None and column != "step":
            real_nan = _real_nans(values)
            if real_nan.any():
                nan_steps[column] = np.sort(frame.loc[real_nan, "step"].to_numpy(dtype="float64"))
        frame[column] = numbers
    return frame.sort_values("step", kind="stable").reset_index(drop=True)


def _coerce(values: pd.Series) -> tuple[pd.Series, int]:
    converted = []
    bad = 0
    for value in values:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            converted.append(math.nan)
            continue
        number = schema.to_number(value)
        if number is None:
            if not isinstance(value, (list, dict)):
                bad += 1
            converted.append(math.nan)
        else:
            converted.append(number)
    return pd.Series(converted, index=values.index, dtype="float64"), bad


def _real_nans(values: pd.Series) -> np.ndarray:
    """Mask of entries that were logged as NaN (not merely absent).

    The parser keeps logged NaNs as strings, so a float column holds no
    logged NaN and only object columns need a look per element.
    """
    if values.dtype.kind == "f":
        return np.zeros(len(values), dtype=bool)
    return np.array([
        (isinstance(v, float) and math.isnan(v)) or (isinstance(v, str) and v.strip().lower() in {"nan", "+nan", "-nan"})
        for v in values
    ], dtype=bool)


def _build_run(segment: _Segment, name: str, source: str, warnings: list[str]) -> Run:
    w = _Warnings()
    nan_steps: dict[str, np.ndarray] = {}
    steps = _numeric_frame([_flatten_lrs(r) for r in segment.steps], w, "step", nan_steps)
    evals = _numeric_frame(segment.evals, w, "eval", nan_steps)
    layers = _numeric_frame(segment.layers, w, "layer")
    events = pd.DataFrame.from_records(segment.events) if segment.events else pd.DataFrame(
        {"step": pd.Series(dtype="float64"), "event": pd.Series(dtype="object")})
    for frame in (steps, evals, layers, events):
        if "step" in frame.columns:
            frame["step"] = frame["step"].astype("float64")
    steps = _merge_duplicate_steps(steps)
    meta = dict(segment.meta)
    run_name = str(meta.get("name") or name)
    return Run(
        name=run_name,
        source=source,
        format="diagnose" if meta else "jsonl",
        meta=meta,
        steps=steps,
        evals=evals,
        layers=layers,
        events=events,
        nan_steps=nan_steps,
        warnings=list(warnings) + w.summary(),
        rank=meta.get("rank"),
    )


def _flatten_lrs(record: dict[str, Any]) -> dict[str, Any]:
    lrs = record.get("lrs")
    if isinstance(lrs, list) and lrs and "lr" not in record:
        record = dict(record, lr=lrs[0])
    return record


def _merge_duplicate_steps(steps: pd.DataFrame) -> pd.DataFrame:
    """Several records for one step (values logged in separate calls) become one row."""
    if steps.empty or not steps["step"].duplicated().any():
        return steps
    numeric = steps.select_dtypes(include="number")
    merged = numeric.groupby("step", sort=True).last().reset_index()
    return merged
