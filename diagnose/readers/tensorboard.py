"""TensorBoard event files (scalars), read with the ``tensorboard`` package's own reader.

A folder of event files is one run (TensorBoard shows it as one); a single
event file may be given too. Needs the optional extra ``diagnose[tensorboard]``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from diagnose.errors import InputError
from diagnose.readers import frames
from diagnose.run import Run

_MISSING = "reading TensorBoard event files needs the tensorboard package: pip install 'diagnose[tensorboard]'"
_SPLITS = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "eval": "eval",
    "test": "test",
}


def read_tensorboard(path: str | Path, *, mapping: Mapping[str, str] | None = None) -> list[Run]:
    path = Path(path)
    series = _scalars(path)
    if not series:
        raise InputError(f"{path}: no scalar values in these TensorBoard event files")
    rows = pd.concat([_tag_rows(tag, points) for tag, points in series.items()], ignore_index=True)
    rows = rows.sort_values("step", kind="stable").reset_index(drop=True)
    step = rows.pop("step")
    table = frames.rename_columns(rows, path, mapping, tag_name)
    table.insert(0, "step", step)
    name = path.name if path.is_dir() else frames.run_name(path)
    return frames.build_runs(table, path=path, format="tensorboard", name=name)


def tag_name(tag: str) -> str:
    """``Loss/train`` -> ``loss``, ``Loss/val`` -> ``val_loss``, ``train/loss`` -> ``loss``."""
    head, _, last = tag.rpartition("/")
    if head and last.lower() in _SPLITS:
        tag = f"{_SPLITS[last.lower()]}/{head}"
    return frames.default_name(tag)


def _scalars(path: Path) -> dict[str, list[tuple[int, float]]]:
    """Tag -> (step, value) points, from scalar summaries and scalar-shaped tensor summaries."""
    try:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
        from tensorboard.util import tensor_util
    except ImportError:
        raise InputError(f"{path}: {_MISSING}") from None
    accumulator = EventAccumulator(str(path), size_guidance={"scalars": 0, "tensors": 0})
    try:
        accumulator.Reload()
    except Exception as exc:  # noqa: BLE001 - the package raises assorted errors on damaged files
        raise InputError(f"{path}: cannot read these TensorBoard event files ({type(exc).__name__})") from None
    tags = accumulator.Tags()
    series = {tag: [(e.step, e.value) for e in accumulator.Scalars(tag)] for tag in tags.get("scalars", [])}
    for tag in tags.get("tensors", []):
        points = [(e.step, tensor_util.make_ndarray(e.tensor_proto)) for e in accumulator.Tensors(tag)]
        if points and all(value.size == 1 and value.dtype.kind in "fiu" for _, value in points):
            series.setdefault(tag, [(step, float(value.item())) for step, value in points])
    return series


def _tag_rows(tag: str, points: list[tuple[int, float]]) -> pd.DataFrame:
    # A NaN stored in an event file was logged; spelled as text it stays apart from "not logged".
    values = ["nan" if math.isnan(value) else value for _, value in points]
    return pd.DataFrame({"step": [step for step, _ in points], tag: pd.Series(values, dtype=object)})
