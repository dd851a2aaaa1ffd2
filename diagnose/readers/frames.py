"""What every reader shares: numbers from raw values, NaN tracking, names,
splitting appended runs, and turning a table of rows into `Run` objects.

A reader's job ends with a *rows table*: a DataFrame in file order with a
``step`` column and one column per metric under its canonical name (train
fields like ``loss``/``lr``, evaluation fields ``val_*``). Values may still be
raw (strings from a CSV, ``"NaN"`` from JSON); `build_runs` does the rest the
same way for every format.
"""

from __future__ import annotations

import codecs
import itertools
import json
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from diagnose import ordering
from diagnose.errors import InputError
from diagnose.readers import arrow_lines
from diagnose.run import Columns, Run
from diagnose.runfile import schema

MAX_WARNINGS_PER_KIND = 3
# A reader's column of each row's position among the file's records (to split appended runs);
# never a metric, so `numeric_frame` leaves it out.
POSITION = "_pos"
NAN_WORDS = ("nan", "+nan", "-nan")
# Columns that say where a row sits rather than what was measured: they never
# make a row a training row on their own.
BOOKKEEPING = ("step", "epoch")
# Column names that hold the step, most specific first (compared normalised).
STEP_COLUMNS = ("step", "global_step", "_step", "iteration", "iter", "it", "steps", "epoch")
# Names that say nothing about the run: a run read from one takes its folder's name.
GENERIC_STEMS = {
    "metrics",
    "trainer_state",
    "results",
    "log",
    "history",
    "training",
    "train",
    "training_log",
    "train_log",
    "events",
    "output",
    "outputs",
    "stdout",
}


class WarningLog:
    """Warnings for one read, at most a few of each kind, then a count."""

    def __init__(self) -> None:
        self.messages: list[str] = []
        self._counts: dict[str, int] = {}

    def add(self, kind: str, message: str) -> None:
        count = self._counts.get(kind, 0) + 1
        self._counts[kind] = count
        if count <= MAX_WARNINGS_PER_KIND:
            self.messages.append(message)

    def summary(self) -> list[str]:
        extra = [
            f"... and {count - MAX_WARNINGS_PER_KIND} more like it ({kind})"
            for kind, count in self._counts.items()
            if count > MAX_WARNINGS_PER_KIND
        ]
        return self.messages + extra


# -- numbers -------------------------------------------------------------------


def to_numbers(values: pd.Series) -> tuple[np.ndarray, np.ndarray, int]:
    """Raw values as float64, which entries were logged as NaN, and how many are not numbers.

    Missing entries (None, empty) become NaN without counting as logged NaN.
    Lists and dicts (e.g. per-group learning rates) are read as missing
    without a complaint.
    """
    if values.dtype.kind in "fiub":
        numbers = values.to_numpy(dtype="float64")
        return numbers, np.zeros(len(values), dtype=bool), 0
    numbers = pd.to_numeric(values, errors="coerce").to_numpy(dtype="float64")
    unread = np.isnan(numbers) & values.notna().to_numpy()
    logged_nan = np.zeros(len(values), dtype=bool)
    if unread.any():
        candidates = values[unread]
        words = candidates.map(lambda v: v.strip().lower() if isinstance(v, str) else v)
        is_nan_word = words.isin(NAN_WORDS).to_numpy()
        is_container = candidates.map(lambda v: isinstance(v, (list, dict))).to_numpy(dtype=bool)
        logged_nan[np.flatnonzero(unread)] = is_nan_word
        return numbers, logged_nan, int((~(is_nan_word | is_container)).sum())
    return numbers, logged_nan, 0


def numeric_frame(
    frame: pd.DataFrame,
    label: str,
    warnings: WarningLog,
    nan_steps: dict[str, np.ndarray] | None = None,
    text_columns: Iterable[str] = (),
    *,
    own: bool = True,
) -> pd.DataFrame:
    """Every column but ``text_columns`` as float64; columns with no number at all are dropped.

    Steps where a column was logged as NaN go into ``nan_steps`` when given.
    The frame comes back sorted by step. Without ``own`` it may hold read-only views of
    ``frame``'s columns: for a run given its `Columns`, whose frame copies them when it is built.
    """
    keep_text = set(text_columns)
    columns: dict[str, Any] = {}
    steps = to_numbers(frame["step"])[0]
    for column in frame.columns:
        if column == POSITION:
            continue
        if column in keep_text:
            columns[column] = frame[column].to_numpy()
            continue
        numbers, logged_nan, bad = to_numbers(frame[column])
        if np.isnan(numbers).all() and not logged_nan.any():
            if bad and _is_known_field(column):
                warnings.add(
                    f"not-number-{label}-{column}", f"{label} field {column!r}: no value is a number; column ignored"
                )
            continue
        if bad:
            warnings.add(
                f"not-number-{label}-{column}",
                f"{label} field {column!r}: {bad} value(s) are not numbers; read as missing",
            )
        if nan_steps is not None and column != "step" and logged_nan.any():
            nan_steps[column] = np.sort(steps[logged_nan])
        columns[column] = numbers
    columns.setdefault("step", steps)
    result = Columns(columns, len(frame)).frame(own=own)
    if _in_order(steps):  # what our writer and most loggers write: no sort needed
        return result
    return result.sort_values("step", kind="stable").reset_index(drop=True)


def _in_order(steps: np.ndarray) -> bool:
    """True when the steps are numbers that never go down."""
    return ordering.never_falls(steps)


def _is_known_field(column: str) -> bool:
    """A canonical field: text there is a broken value; elsewhere it is a text column."""
    return column in schema.STEP_FIELDS or column in schema.LAYER_FIELDS or column.startswith("val_loss")


def merge_duplicate_steps(frame: pd.DataFrame, repeated: dict[str, int] | None = None) -> pd.DataFrame:
    """Several rows for one step (values logged in separate calls, or again) become one row.

    Per column the last value logged at that step wins. How many values of a
    column were replaced that way (a step logged twice, or again after a resume
    from a checkpoint) is added to ``repeated``.
    """
    if frame.empty:
        return frame
    steps = to_numbers(frame["step"])[0]
    repeats = ordering.repeats(steps) if _in_order(steps) else frame["step"].duplicated().any()
    if not repeats:
        return frame
    numeric = frame.select_dtypes(include="number")
    shared = numeric[numeric["step"].duplicated(keep=False)]
    logged = shared.drop(columns="step").notna()
    replaced = logged.sum() - logged.groupby(shared["step"]).any().sum()
    if repeated is not None:
        repeated.update({c: int(n) for c, n in replaced.items() if n})
    return numeric.groupby("step", sort=True).last().reset_index()


# -- names ---------------------------------------------------------------------


def default_name(raw: str) -> str:
    """Canonical name of a metric whose name says whether it is training or evaluation."""
    if schema.is_eval_key(raw):
        return schema.canonical_eval_key(raw)
    return schema.canonical_step_key(raw)


def rename_columns(
    raw: pd.DataFrame, path: Path, mapping: Mapping[str, str] | None = None, namer: Callable[[str], str] = default_name
) -> pd.DataFrame:
    """Raw columns under canonical names.

    ``mapping`` (canonical name -> raw column) wins over the guess; a mapping
    that names a column the file does not have is the user's typo and gets one
    clear line. Two columns that take one name are one series when they never
    hold a value in the same row (``val_loss`` here, ``eval_loss`` there);
    otherwise the later one keeps its own normalised name, and a reading note
    (in the result's ``attrs["reading_notes"]``) says which one was taken.
    """
    chosen = {column: target for target, column in (mapping or {}).items()}
    missing = sorted(set(chosen) - set(raw.columns))
    if missing:
        shown = ", ".join(map(str, list(raw.columns)[:12])) + (", ..." if len(raw.columns) > 12 else "")
        raise InputError(
            f"{path}: the mapping names column(s) {', '.join(map(repr, missing))}, "
            f"which the file does not have (it has: {shown})"
        )
    if not chosen and all(namer(str(c)) == c for c in raw.columns):  # already canonical, as our writer writes
        result = raw.copy(deep=False)
        result.attrs["reading_notes"] = []
        return result
    columns: dict[str, pd.Series] = {}
    taken_from: dict[str, str] = {}
    notes: list[str] = []
    for column in raw.columns:
        values = raw[column]
        name = chosen.get(column) or namer(str(column))
        if column not in chosen and name in chosen.values():
            name = schema.normalise_key(str(column))
        if name in columns and not (columns[name].notna() & values.notna()).any():
            values = columns[name].where(columns[name].notna(), values)
        elif name in columns:
            wanted, name = name, schema.normalise_key(str(column))
            while name in columns:
                name += "_"
            if wanted in ("loss", "val_loss"):
                notes.append(
                    f"{wanted} read from {taken_from[wanted]!r}; {str(column)!r} also names one and is "
                    f"kept as {name} (name the column in a mapping to choose it)"
                )
        taken_from.setdefault(name, str(column))
        columns[name] = values
    result = pd.DataFrame(columns, index=raw.index)
    result.attrs["reading_notes"] = notes
    return result


def find_step_column(columns: list[str], mapping: Mapping[str, str] | None = None) -> str | None:
    """The column that holds the step: the mapping's choice, else the first of `STEP_COLUMNS`."""
    if mapping and "step" in mapping:
        return mapping["step"]
    by_norm = {schema.normalise_key(str(c)): c for c in columns}
    return next((by_norm[name] for name in STEP_COLUMNS if name in by_norm), None)


def name_table(
    raw: pd.DataFrame,
    path: Path,
    *,
    mapping: Mapping[str, str] | None = None,
    namer: Callable[[str], str] = default_name,
    meta: dict[str, Any],
) -> pd.DataFrame:
    """A raw table as rows: ``step`` first (NaN when there is no step column), then canonical names.

    Which column gave the step goes into ``meta["step_from"]``; an epoch column
    used as the step is kept as ``epoch`` too.
    """
    step_column = find_step_column(list(raw.columns), mapping)
    if step_column is not None and step_column not in raw.columns:
        raise InputError(f"{path}: the mapping names step column {step_column!r}, which the file does not have")
    rest = {k: v for k, v in (mapping or {}).items() if k != "step"}
    rows = rename_columns(raw.drop(columns=[step_column] if step_column else []), path, rest, namer)
    # A logged metric whose name reduces to "step" (Lightning's train_step_step) is not the step column.
    rows = rows.rename(columns={"step": "step_"})
    if step_column is None:
        rows.insert(0, "step", np.nan)
        return rows
    rows.insert(0, "step", raw[step_column])
    if schema.normalise_key(str(step_column)) == "epoch" and "epoch" not in rows.columns:
        rows["epoch"] = raw[step_column]
    meta["step_from"] = str(step_column)
    return rows


def is_eval_column(name: str) -> bool:
    return name.startswith("val_")


def add_primary_losses(rows: pd.DataFrame, meta: dict[str, Any], warnings: WarningLog) -> pd.DataFrame:
    """A file with no plain loss (``critic_loss``, ``eval_g0_loss``, ...): the first loss it has stands in.

    Which column stood in is recorded in ``meta["loss_from"]`` / ``meta["val_loss_from"]``
    and said in a reading note.
    """
    for target, candidates in (
        ("loss", [c for c in rows.columns if c.endswith("_loss") and not is_eval_column(c)]),
        ("val_loss", [c for c in rows.columns if c.endswith("_loss") and is_eval_column(c)]),
    ):
        if target in rows.columns or not candidates:
            continue
        rows = rows.assign(**{target: rows[candidates[0]]})
        others = f"first of {len(candidates)} losses" if len(candidates) > 1 else "the only loss"
        meta[f"{target}_from"] = f"{candidates[0]} ({others}; the file has no plain {target})"
        warnings.add(f"{target}-from", f"{target} read from {meta[f'{target}_from']}")
    return rows


def run_name(path: Path) -> str:
    """A run's name from its file, or its folder when the file name is generic."""
    stem = path.name.split(".")[0] if path.name.startswith("events.out.tfevents") else path.stem
    if stem.lower() in GENERIC_STEMS and path.parent.name:
        return path.parent.name
    return stem


# -- appended runs ---------------------------------------------------------------


def restart_positions(steps: np.ndarray) -> list[int]:
    """Positions where the step counter restarts, i.e. where another run begins.

    A step that goes back to (or below) the current run's first step, after that
    run got past its first step, starts a new run. A step that goes back less
    far is a resume from a checkpoint and stays in the same run.
    """
    if len(steps) < 2:
        return []
    drops = np.flatnonzero(steps[1:] < steps[:-1]) + 1
    starts: list[int] = []
    first = steps[0]
    for pos in drops:
        if steps[pos] <= first < steps[pos - 1]:
            starts.append(int(pos))
            first = steps[pos]
    return starts


def segment_ids(order: np.ndarray, boundaries: np.ndarray) -> np.ndarray:
    """Which run each row belongs to, given the file positions where runs begin."""
    return np.searchsorted(boundaries, order, side="right")


# -- rows table -> runs ----------------------------------------------------------


def build_runs(
    rows: pd.DataFrame,
    *,
    path: Path,
    format: str,
    meta: dict[str, Any] | None = None,
    warnings: WarningLog | None = None,
    name: str | None = None,
) -> list[Run]:
    """Turn a rows table (file order, canonical names) into one `Run` per appended run."""
    warnings = warnings or WarningLog()
    meta = dict(meta or {})
    rows = rows.reset_index(drop=True)
    if "step" not in rows.columns:
        rows.insert(0, "step", np.nan)
    for note in rows.attrs.get("reading_notes", ()):
        warnings.add("loss-choice", note)
    rows = add_primary_losses(usable_steps(rows, warnings), meta, warnings)
    train_cols = [c for c in rows.columns if not is_eval_column(c) and c not in BOOKKEEPING]
    eval_cols = [c for c in rows.columns if is_eval_column(c)]
    is_train = rows[train_cols].notna().any(axis=1).to_numpy() if train_cols else np.zeros(len(rows), bool)
    is_eval = rows[eval_cols].notna().any(axis=1).to_numpy() if eval_cols else np.zeros(len(rows), bool)
    counted = np.flatnonzero(is_train) if is_train.any() else np.arange(len(rows))
    steps = rows["step"].to_numpy(dtype="float64")
    starts = counted[restart_positions(steps[counted])]
    seg = segment_ids(np.arange(len(rows)), starts)
    step_cols = ["step"] + [c for c in rows.columns if c not in eval_cols and c != "step"]
    runs = []
    for index in range(len(starts) + 1):
        in_seg = seg == index
        runs.append(
            _run(
                rows.loc[in_seg & is_train, step_cols],
                rows.loc[in_seg & is_eval, ["step", *eval_cols]],
                path=path,
                format=format,
                meta=dict(meta),
                warnings=warnings,
            )
        )
    runs = name_runs(runs, path, name)
    if not runs:
        raise no_values_error(path, f"training or evaluation values in this {format} file", warnings.summary())
    return runs


def usable_steps(rows: pd.DataFrame, warnings: WarningLog, what: str = "row") -> pd.DataFrame:
    """Rows whose step is a finite number (as float64); the others are dropped with a warning."""
    if rows["step"].dtype.kind in "iuf":  # what readers mostly hold: numbers, no conversion to do
        steps = pd.Series(rows["step"].to_numpy(dtype="float64"), index=rows.index)
    else:
        steps = pd.to_numeric(rows["step"], errors="coerce").astype("float64")
    bad = ~np.isfinite(steps.to_numpy())
    if not bad.any():
        return rows if rows["step"].dtype == "float64" else rows.assign(step=steps)
    warnings.add(f"no-step-{what}", f"{int(bad.sum())} {what}(s) have no usable step; ignored")
    return rows.loc[~bad].assign(step=steps[~bad])


def _run(
    train: pd.DataFrame, evals: pd.DataFrame, *, path: Path, format: str, meta: dict[str, Any], warnings: WarningLog
) -> Run:
    nan_steps: dict[str, np.ndarray] = {}
    repeated: dict[str, int] = {}
    steps = merge_duplicate_steps(numeric_frame(train, "step", warnings, nan_steps), repeated)
    steps = epoch_totals(steps, warnings)
    evals = merge_duplicate_steps(numeric_frame(evals, "eval", warnings, nan_steps), repeated)
    notes = warnings.summary() + repeated_warning(repeated)
    if repeated:
        meta["repeated_steps"] = repeated
    return Run(
        name="",
        source=str(path),
        format=format,
        meta=meta,
        steps=steps,
        evals=evals,
        nan_steps=nan_steps,
        warnings=notes,
    )


# A loss summed over an epoch's batches climbs at every logged point and starts again near
# zero at the next epoch. Three epochs of three points each that all do so are no per-batch loss.
_MIN_EPOCHS, _MIN_POINTS_PER_EPOCH = 3, 3


def epoch_totals(steps: pd.DataFrame, warnings: WarningLog) -> pd.DataFrame:
    """A loss that is a running sum within each epoch (a sawtooth), kept at each epoch's last row only.

    The end of an epoch's running sum is its total, proportional to the epoch's mean loss when the
    epochs have the same number of batches: that is the curve to judge, one point per epoch. The
    points inside an epoch measure how far into the epoch it is, not how well it trains."""
    if "epoch" not in steps.columns or "loss" not in steps.columns:
        return steps
    loss, epoch = steps["loss"].to_numpy(dtype="float64"), steps["epoch"].to_numpy(dtype="float64")
    rows = np.flatnonzero(np.isfinite(loss) & np.isfinite(epoch))
    ends = np.flatnonzero(np.diff(epoch[rows]) != 0) + 1
    groups = np.split(loss[rows], ends)
    if len(groups) < _MIN_EPOCHS or min(len(g) for g in groups) < _MIN_POINTS_PER_EPOCH:
        return steps
    climbs = all(np.all(np.diff(g) > 0) and g[-1] > 2 * g[0] for g in groups)
    restarts = all(later[0] < earlier[-1] / 2 for earlier, later in itertools.pairwise(groups))
    if not (climbs and restarts):
        return steps
    kept = np.zeros(len(steps), dtype=bool)
    kept[rows[np.r_[ends - 1, len(rows) - 1]]] = True
    warnings.add(
        "running-sum",
        f"loss climbs within every one of {len(groups)} epochs and starts again at the next (a running sum "
        "over the epoch's batches): each epoch's last value, its total, is the loss judged",
    )
    return steps.assign(loss=np.where(kept, loss, np.nan))


def repeated_warning(repeated: dict[str, int]) -> list[str]:
    if not repeated:
        return []
    worst = max(repeated, key=repeated.get)
    return [
        f"{repeated[worst]} {worst} value(s) were logged again for a step already logged (logged twice, "
        "or a resume from a checkpoint); the later value is kept"
    ]


def _holds_values(run: Run) -> bool:
    measured = [c for kind in ("steps", "evals") for c in run.columns(kind) if c not in BOOKKEEPING]
    return bool(measured or run.nan_steps or len(run.layers) or len(run.events))


def no_values_error(path: Path, what: str, warnings: list[str]) -> InputError:
    """The error for a file that parsed but held nothing usable, with the first reason found."""
    reason = f" ({warnings[0]})" if warnings else ""
    return InputError(f"{path}: no usable values found; expected {what}{reason}")


def name_runs(runs: list[Run], path: Path, name: str | None = None) -> list[Run]:
    """Name the runs read from one file and say so when the file held several."""
    runs = [r for r in runs if _holds_values(r)]
    base = name or run_name(path)
    for index, run in enumerate(runs):
        run.name = run.name or (base if len(runs) == 1 else f"{base}#{index + 1}")
        if len(runs) > 1:
            run.warnings.append(
                f"{path.name} holds {len(runs)} runs appended one after another "
                "(the step counter restarts); they are read as separate runs"
            )
    return runs


# -- files ---------------------------------------------------------------------


def read_bytes(path: Path) -> bytes:
    """A file's bytes as UTF-8 (see `as_utf8`), or one clear line when it is missing, a folder, not a
    regular file, unreadable or empty."""
    try:
        if path.exists() and not path.is_dir() and not path.is_file():
            raise InputError(f"{path}: {NOT_REGULAR}")
        raw = arrow_lines.early_bytes(path) or path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a folder, expected a run file") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror})") from None
    raw = as_utf8(raw)
    if not raw or raw.isspace():  # not strip(): that copies a long file
        raise InputError(f"{path}: file is empty")
    return raw


# A pipe would block the read forever, a device may never end: only regular files are opened.
NOT_REGULAR = "not a regular file (a pipe, socket or device); not read"
# Byte-order marks of the encodings Windows tools write (PowerShell 5's `>` writes UTF-16 LE).
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)


def as_utf8(raw: bytes) -> bytes:
    """Text that starts with a UTF-16 or UTF-32 byte-order mark, re-encoded as UTF-8; other bytes as they are."""
    for bom, encoding in _BOMS:  # UTF-32 LE first: its mark begins with UTF-16 LE's
        if raw.startswith(bom):
            return raw[len(bom) :].decode(encoding, errors="replace").encode("utf-8")
    return raw


def read_text(path: Path) -> str:
    """A text file as text; a byte-order mark goes, bytes that are not UTF-8 become U+FFFD."""
    return read_bytes(path).decode("utf-8-sig", errors="replace")


def read_json_document(path: Path, expected: str, text: str | None = None) -> Any:
    """A whole-file JSON document (``text``, when the caller has read the file already); NaN/Infinity
    tokens are kept as strings (see `to_numbers`)."""
    try:
        return json.loads(read_text(path) if text is None else text, parse_constant=str)
    except (ValueError, RecursionError):
        raise InputError(f"{path}: not valid JSON (cut off or damaged?); expected {expected}") from None
