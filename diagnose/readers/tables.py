"""Tables of metrics: CSV files (Lightning CSVLogger, Keras CSVLogger, Ultralytics
YOLO ``results.csv``, any CSV with a step column) and Keras ``history.json``.

They differ only in which column is the step and how columns are named; the
rest is `frames.build_runs`.
"""

from __future__ import annotations

import ast
import csv
import io
import json
import re
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from diagnose.errors import InputError
from diagnose.readers import frames
from diagnose.run import Run
from diagnose.runfile import schema

# Python's repr of a history dict, bare or inside a JSON string: {'loss': [...
PYTHON_HISTORY = re.compile(r"""^\s*"?\{\s*'[^']+'\s*:\s*\[""")
# repr writes a non-finite float as a bare name, which literal_eval refuses; as a string it is read as NaN/Inf.
_NON_FINITE_NAME = re.compile(r"(?<![\w'])(-?(?:nan|inf))\b")
_JSON_SPACE = re.compile(r"[ \t\r\n]*")


def preamble_lines(lines: list[str]) -> int:
    """How many lines before a CSV's header are comments (``# Learning Rate: 0.01``, as C and shell
    trainers write their configuration) or blank."""
    count = 0
    for line in lines:
        if line.strip() and not line.lstrip().startswith("#"):
            break
        count += 1
    return count


def read_csv_table(path: Path, warnings: frames.WarningLog) -> pd.DataFrame:
    """A CSV file as strings (empty cells missing, ``nan`` kept as text), headers stripped; comment lines
    before the header are skipped with a note."""
    text = frames.read_text(path)
    lines = text.splitlines()
    skipped = preamble_lines(lines)
    if skipped:
        if any(line.strip() for line in lines[:skipped]):
            warnings.add("preamble", f"{skipped} comment or blank line(s) before the header skipped")
        text = "\n".join(lines[skipped:])
    try:
        table = pd.read_csv(
            io.StringIO(text),
            dtype=str,
            keep_default_na=False,
            na_values=[""],
            skipinitialspace=True,
            on_bad_lines="skip",
        )
    except (pd.errors.ParserError, pd.errors.EmptyDataError, csv.Error) as exc:
        raise InputError(f"{path}: not a readable CSV table ({str(exc).splitlines()[0]})") from None
    table.columns = [str(c).strip() for c in table.columns]
    data_lines = sum(1 for line in text.splitlines()[1:] if line.strip())
    if data_lines > len(table):
        warnings.add("bad-rows", f"{data_lines - len(table)} row(s) have more cells than the header; ignored")
    if table.empty:
        raise InputError(f"{path}: the CSV has a header but no rows")
    return table


def table_runs(
    raw: pd.DataFrame,
    path: Path,
    *,
    format: str,
    mapping: Mapping[str, str] | None,
    warnings: frames.WarningLog,
    namer: Callable[[str], str] = frames.default_name,
    meta: dict | None = None,
) -> list[Run]:
    """Rows of a table to runs: the step column (or the row number), canonical names."""
    meta = dict(meta or {})
    rows = frames.name_table(raw, path, mapping=mapping, namer=namer, meta=meta)
    if "step_from" not in meta:
        rows["step"] = np.arange(len(rows), dtype="float64")
        meta["step_from"] = "row number (the file has no step or epoch column)"
    return frames.build_runs(rows, path=path, format=format, meta=meta, warnings=warnings)


# -- Lightning -------------------------------------------------------------------


def lightning_namer(columns: list[str]) -> Callable[[str], str]:
    """Lightning names: ``*_step`` is the per-step series and takes the plain name;
    ``*_epoch`` keeps its suffix unless it is the only series of that metric;
    ``lr-Adam`` (LearningRateMonitor) is the learning rate."""
    norms = {schema.normalise_key(c) for c in columns}

    def name(raw: str) -> str:
        norm = schema.normalise_key(raw)
        if raw.lower().startswith("lr-"):
            return "lr"
        if norm.endswith("_step") and norm[:-5] not in norms:
            norm = norm[:-5]
        elif norm.endswith("_epoch") and norm[:-6] not in norms and norm[:-6] + "_step" not in norms:
            norm = norm[:-6]
        return frames.default_name(norm)

    return name


def read_lightning_csv(path: str | Path, *, mapping: Mapping[str, str] | None = None) -> list[Run]:
    """Lightning's ``metrics.csv``. Early versions wrote no ``step`` column, only ``epoch``, with a row per
    logging call: the row number is then the step (merging the rows of an epoch would keep one point an epoch)."""
    path = Path(path)
    warnings = frames.WarningLog()
    raw = read_csv_table(path, warnings)
    meta = {}
    if several_rows_per_epoch(raw, mapping):
        raw.insert(0, "step", np.arange(len(raw)))
        meta["step_from"] = "row number (the file has no step column, and several rows per epoch)"
        warnings.add("step-from", "no step column and several rows per epoch: the row number is read as the step")
    return table_runs(
        raw,
        path,
        format="lightning",
        mapping=mapping,
        warnings=warnings,
        namer=lightning_namer(list(raw.columns)),
        meta=meta,
    )


def several_rows_per_epoch(raw: pd.DataFrame, mapping: Mapping[str, str] | None = None) -> bool:
    """The table's step column is ``epoch`` and an epoch value repeats: rows are logging calls, not epochs."""
    column = frames.find_step_column(list(raw.columns), mapping)
    if column is None or schema.normalise_key(str(column)) != "epoch":
        return False
    epochs = pd.to_numeric(raw[column], errors="coerce").dropna()
    return bool(epochs.duplicated().any())


# -- Keras -----------------------------------------------------------------------


def read_keras_csv(path: str | Path, *, mapping: Mapping[str, str] | None = None) -> list[Run]:
    path = Path(path)
    warnings = frames.WarningLog()
    return table_runs(read_csv_table(path, warnings), path, format="keras", mapping=mapping, warnings=warnings)


def read_generic_csv(path: str | Path, *, mapping: Mapping[str, str] | None = None) -> list[Run]:
    path = Path(path)
    warnings = frames.WarningLog()
    return table_runs(read_csv_table(path, warnings), path, format="csv", mapping=mapping, warnings=warnings)


def read_keras_history(path: str | Path, *, mapping: Mapping[str, str] | None = None) -> list[Run]:
    """``{"loss": [...], "val_loss": [...], ...}``: one value per epoch, epochs counted from 0."""
    path = Path(path)
    warnings = frames.WarningLog()
    doc = _history_document(path, warnings)
    series = history_series(doc) if isinstance(doc, dict) else {}
    if not series:
        raise InputError(f'{path}: no metric lists; expected a Keras history.json ({{"loss": [...], ...}})')
    others = [str(k) for k in doc if k not in series and not nested_series(doc[k])]
    if others:
        warnings.add("not-series", f"{len(others)} key(s) that are not per-epoch series ignored: {_listed(others)}")
    raw = pd.DataFrame({k: pd.Series(v, dtype=object) for k, v in series.items()})
    if frames.find_step_column(list(raw.columns), mapping) is None:
        raw.insert(0, "epoch", np.arange(len(raw)))
    return table_runs(raw, path, format="keras", mapping=mapping, warnings=warnings)


def _listed(names: list[str], most: int = 8) -> str:
    return ", ".join(names[:most]) + (", ..." if len(names) > most else "")


def _history_document(path: Path, warnings: frames.WarningLog) -> object:
    """The history as a dict. ``json.dump(str(history.history))`` saves Python's repr of it inside a
    JSON string, and ``f.write(str(history.history))`` saves the repr bare: both are read as the
    Python literal they hold (``ast.literal_eval`` evaluates literals only, never code). A JSON
    history cut off part way (a job killed while writing it) keeps the series written whole."""
    expected = 'a Keras history.json ({"loss": [...], "val_loss": [...]})'
    text = frames.read_text(path)
    if not PYTHON_HISTORY.match(text):
        try:
            return frames.read_json_document(path, expected, text)
        except InputError:
            whole = _whole_pairs(text)
            if not history_series(whole):
                raise
            warnings.add("cut-off", f"cut off or damaged after the key(s) {_listed(list(whole))}: the rest is ignored")
            return whole
    try:
        literal = json.loads(text) if text.lstrip().startswith('"') else text
        return ast.literal_eval(_NON_FINITE_NAME.sub(r"'\1'", literal))
    except (ValueError, TypeError, SyntaxError, RecursionError, MemoryError):
        raise InputError(f"{path}: not a readable Python dict of metric lists; expected {expected}") from None


def _whole_pairs(text: str) -> dict[str, object]:
    """The key/value pairs at the top of a JSON object that are complete, up to where the text
    stops parsing."""
    decoder = json.JSONDecoder(parse_constant=str)
    pairs: dict[str, object] = {}
    position = _JSON_SPACE.match(text).end()
    if not text.startswith("{", position):
        return pairs
    separator = "{"
    while text.startswith(separator, position):
        try:
            key, position = decoder.raw_decode(text, _JSON_SPACE.match(text, position + 1).end())
            position = _JSON_SPACE.match(text, position).end()
            if not isinstance(key, str) or not text.startswith(":", position):
                break
            value, position = decoder.raw_decode(text, _JSON_SPACE.match(text, position + 1).end())
        except ValueError:
            break
        pairs[key] = value
        position, separator = _JSON_SPACE.match(text, position).end(), ","
    return pairs


def history_series(doc: dict) -> dict[str, list]:
    """The metric lists of a history: top-level ones, and those one level down in a dict
    (``history.__dict__`` saved whole keeps them under ``"history"``; others use ``"metrics"``).
    A top-level list wins over a nested one of the same name."""
    nested = {k: v for inner in doc.values() for k, v in nested_series(inner).items()}
    return nested | {k: v for k, v in doc.items() if is_series(v)}


def nested_series(value: object) -> dict[str, list]:
    return {k: v for k, v in value.items() if is_series(v)} if isinstance(value, dict) else {}


def is_series(value: object) -> bool:
    """A list of numbers (NaN/Infinity spelled as strings allowed): one metric, one value per epoch."""
    return (
        isinstance(value, list)
        and bool(value)
        and all(schema.to_number(v) is not None and not isinstance(v, bool) for v in value)
    )


def read_json_records(path: str | Path, *, mapping: Mapping[str, str] | None = None) -> list[Run]:
    """A JSON array of records, ``[{"step": 1, "loss": 0.5}, ...]``: JSON Lines in one document."""
    path = Path(path)
    doc = frames.read_json_document(path, 'a JSON array of records ([{"step": 1, "loss": 0.5}, ...])')
    records = [r for r in doc if isinstance(r, dict)] if isinstance(doc, list) else []
    if not records:
        raise InputError(f'{path}: no records; expected a JSON array like [{{"step": 1, "loss": 0.5}}, ...]')
    raw = pd.DataFrame.from_records(records)
    return table_runs(raw, path, format="json", mapping=mapping, warnings=frames.WarningLog())


# -- Ultralytics YOLO ----------------------------------------------------------------


def yolo_name(raw: str) -> str:
    """``train/box_loss`` -> ``box_loss``, ``val/box_loss`` -> ``val_box_loss``,
    ``metrics/mAP50(B)`` -> ``val_map50(b)`` and ``metrics/accuracy_top1`` -> ``val_accuracy``
    (measured on the validation set), ``lr/pg0`` or ``x/lr0`` -> ``lr``."""
    group, _, leaf = raw.partition("/")
    group = group.lower()
    if group == "metrics":
        return schema.canonical_eval_key(leaf)
    if group in ("lr", "x") and leaf.lower() in ("pg0", "lr0"):
        return "lr"
    return frames.default_name(raw)


_LOSS_PART_ENDINGS = ("_loss", "_om", "_oo")


def read_yolo_results(path: str | Path, *, mapping: Mapping[str, str] | None = None) -> list[Run]:
    """Ultralytics ``results.csv``, one row per epoch.

    YOLO logs its loss in parts (box, cls, dfl, obj). The run's ``loss`` is
    their sum, ``val_loss`` likewise; the parts are kept as ``box_loss``,
    ``val_box_loss``, ... YOLOv10 names its parts by head instead (``box_om``
    for the one-to-many head, ``box_oo`` for the one-to-one head); it trains on
    the sum of both heads' parts, which is the run's ``loss`` here too.
    Ultralytics' classification logs ``train/loss`` whole.
    """
    path = Path(path)
    warnings = frames.WarningLog()
    raw = read_csv_table(path, warnings)
    meta: dict = {}
    for prefix, target in (("train/", "loss"), ("val/", "val_loss")):
        parts = [c for c in raw.columns if c.lower().startswith(prefix) and c.lower().endswith(_LOSS_PART_ENDINGS)]
        if parts and not (mapping and target in mapping):
            raw[f"{prefix}loss"] = _sum_of_parts(raw, parts)
            meta[f"{target}_from"] = "sum of " + ", ".join(parts)
    return table_runs(raw, path, format="yolo", mapping=mapping, warnings=warnings, namer=yolo_name, meta=meta)


def _sum_of_parts(raw: pd.DataFrame, parts: list[str]) -> pd.Series:
    """Row sums of the loss parts; a row where a part was logged as NaN stays a logged ``"NaN"``, never a gap."""
    read = [frames.to_numbers(raw[c]) for c in parts]
    total = pd.Series(np.column_stack([numbers for numbers, _, _ in read]).sum(axis=1), index=raw.index, dtype=object)
    logged_nan = np.column_stack([nan for _, nan, _ in read]).any(axis=1)
    total[logged_nan] = "NaN"
    return total
