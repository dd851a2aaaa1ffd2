"""Reader for JSON Lines run files: ours (format v1) and the minimal form.

Tolerant by design: a cut last line, a line that is not JSON, unknown keys and
strings where numbers belong are skipped or converted with a warning on the
``Run``; only a file with nothing usable in it is an error.

Built for long runs: lines are parsed in batches, records are sorted by kind
in one pass, and everything after that works on whole columns.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from diagnose import ordering
from diagnose.errors import InputError
from diagnose.readers import columnar, frames
from diagnose.run import Columns, Run
from diagnose.runfile import schema

_BATCH = 20_000
_DATA_KINDS = (schema.STEP, schema.EVAL, schema.LAYER, schema.EVENT)
TEXT_COLUMNS = ("module", "type", "event", "where", "tensor", "probe", "error", "message", "origin", "detail", "phase")


def _loads_std(data: bytes) -> Any:
    # Bare NaN/Infinity tokens (Python's default output) are kept as strings so
    # that a logged NaN stays distinguishable from a value that was not logged.
    return json.loads(data, parse_constant=str)


def _fast_loads() -> Callable[[bytes], Any] | None:
    try:  # orjson is an optional speed-up for very long runs
        import orjson
    except ImportError:
        return None
    return orjson.loads


_loads_fast = _fast_loads()


def read_jsonl(path: str | Path, *, name: str | None = None, mapping: Mapping[str, str] | None = None) -> list[Run]:
    """Read every run in a JSON Lines file (several when runs were appended)."""
    path = Path(path)
    return runs_from_bytes(frames.read_bytes(path), path, name=name, mapping=mapping)


def runs_from_bytes(
    raw: bytes, path: Path, *, name: str | None = None, mapping: Mapping[str, str] | None = None
) -> list[Run]:
    """The runs in run-file content ``raw``; ``path`` names them and their messages (it is not read)."""
    built = _plain_run(raw, path) if mapping is None else None
    if built is None:
        built = _runs_read_in_full(raw, path, mapping)
    runs = frames.name_runs(built, path, name)
    if not runs:
        raise frames.no_values_error(path, 'JSON lines like {"step": 1, "loss": 0.5}', built[0].warnings)
    return runs


def _runs_read_in_full(raw: bytes, path: Path, mapping: Mapping[str, str] | None) -> list[Run]:
    warnings = frames.WarningLog()
    tables, metas = _tables(raw, warnings)
    read: dict[str, Any] = {}  # what reading the minimal form chose (a stand-in loss), for each run's meta
    parts = _parts(tables, mapping, path, warnings, read)
    if all(part.empty for part in parts.values()):
        raise InputError(
            f'{path}: no step, evaluation or event records found (expected JSON lines like {{"step": 1, "loss": 0.5}})'
        )
    boundaries = _run_boundaries(parts["steps"])
    return [_build_run(parts, metas, boundaries, index, path, warnings, read) for index in range(len(boundaries) + 1)]


# -- a plain file: one run of numbers --------------------------------------------------

# Integers that a frame holds as int64 (larger ones take the general path, which reads them as objects).
_INT64 = (-(2**63), 2**63)


def _plain_run(raw: bytes, path: Path) -> list[Run] | None:
    """The run of a small, clean file of the commonest kind, built straight from its columns: an
    optional meta record first, then step and evaluation records holding finite numbers only (a key
    may be absent from a record), steps rising in each kind, evaluation keys in their canonical names.
    A folder of a sweep is mostly such files, and the general path pays a dozen frame operations
    per file for what they do not hold (repeats, restarts, text, logged NaN, other kinds).

    None for any other file, which the general path then reads; `tests/test_readers_native.py`
    holds the two to the same `Run` on every run file of the repository."""
    if len(raw) >= columnar.MIN_BYTES:
        return None
    lines = [line for line in raw.split(b"\n") if line and not line.isspace()]
    if len(lines) > _BATCH:
        return None
    joined = b"[" + b",".join(lines) + b"]"
    records = _try_loads(_loads_fast, joined) or _try_loads(_loads_std, joined)
    if not records or not all(type(record) is dict for record in records):
        return None
    has_meta = records[0].get("kind") == schema.META
    kinds: dict[str, list[dict]] = {schema.STEP: [], schema.EVAL: []}
    for record in records[1:] if has_meta else records:
        kind = record.get("kind")
        found = kinds.get(kind) if type(kind) is str else None  # a list or an object names no kind
        if found is None:
            return None
        found.append(record)
    steps = _plain_frame(kinds[schema.STEP], lambda key: True)
    evals = _plain_frame(kinds[schema.EVAL], lambda key: _eval_name(key) == key)
    if steps is None or evals is None or steps.empty:
        return None
    meta = {key: value for key, value in records[0].items() if key != "kind"} if has_meta else {}
    events = pd.DataFrame({"step": np.zeros(0), "event": np.zeros(0, dtype=object)})
    return [
        Run(
            name=str(meta.get("name") or ""),
            source=str(path),
            format="diagnose" if has_meta else "jsonl",
            meta=meta,
            steps=steps,
            evals=evals,
            layers=pd.DataFrame({"step": np.zeros(0)}),
            events=events,
            nan_steps={},
            warnings=[],
            rank=meta.get("rank"),
        )
    ]


def _plain_frame(records: list[dict], canonical: Callable[[str], bool]) -> pd.DataFrame | None:
    """The records of one kind as float64 columns in the order their keys first appear; None when
    one is not as `_plain_run` takes them."""
    if not records:
        return pd.DataFrame({"step": np.zeros(0)})
    keys = [key for key in dict.fromkeys(itertools.chain.from_iterable(records)) if key != "kind"]
    if "step" not in keys or frames.POSITION in keys or not all(canonical(key) for key in keys):
        return None
    columns = {}
    for key in keys:
        values = [record.get(key) for record in records]
        numbers = _plain_numbers(values)
        if numbers is None:
            return None
        logged = np.array([v is not None for v in values]) if None in values else np.ones(len(values), dtype=bool)
        if not logged.any() or not np.isfinite(numbers[logged]).all() or (key == "step" and not logged.all()):
            return None
        columns[key] = numbers
    if not ordering.rises(columns["step"]):
        return None
    # The frame's one block of float64 columns, stacked here: the same frame as from the dict of
    # columns, without pandas' per-column checks.
    return pd.DataFrame(np.vstack(list(columns.values())).T, index=pd.RangeIndex(len(records)), columns=list(columns))


_NUMBER_TYPES = {float, int, type(None)}


def _plain_numbers(values: list) -> np.ndarray | None:
    """Floats, int64-sized ints and None (NaN) as float64; None when anything else is among them.
    The types are looked at in one pass (`map`), not one Python test per value: a sweep reads a
    few hundred thousand of them."""
    types = set(map(type, values))
    if not types <= _NUMBER_TYPES:
        return None
    if int in types:
        ints = values if types == {int} else [v for v in values if type(v) is int]
        if not (_INT64[0] <= min(ints) and max(ints) < _INT64[1]):
            return None
    return np.array(values, dtype="float64")


# -- lines -> records --------------------------------------------------------------


def _tables(raw: bytes, warnings: frames.WarningLog) -> tuple[dict[Any, pd.DataFrame], tuple[list[dict], list[int]]]:
    """Records in one frame per kind (None: the minimal form), each row's file position in ``_pos``;
    and the meta records with theirs.

    A long file is parsed in columns by pyarrow when it is installed and the
    file is one it reads exactly as the line-by-line parse below does.
    """
    if len(raw) >= columnar.MIN_BYTES and columnar.available():
        parsed = columnar.read_tables(raw, _DATA_KINDS)
        if parsed is not None:
            tables, metas, cut_line = parsed
            if cut_line is not None:
                warnings.add("truncated", f"line {cut_line}: cut off (the writer was probably killed); ignored")
            return tables, metas
    return _tables_by_line(raw, warnings)


def _tables_by_line(
    raw: bytes,
    warnings: frames.WarningLog,
) -> tuple[dict[Any, pd.DataFrame], tuple[list[dict], list[int]]]:
    """`_tables` one record at a time (orjson when installed, else the standard library).

    Each batch of lines becomes frames before the next is parsed, so that a
    long file never holds all its records as dicts at once.
    """
    pieces: dict[Any, list[pd.DataFrame]] = {kind: [] for kind in (None, *_DATA_KINDS)}
    metas: tuple[list[dict], list[int]] = ([], [])
    offset = 0
    for records in _batches(raw, warnings):
        for kind, (found, positions) in _by_kind(records, offset, warnings).items():
            if kind == schema.META:
                metas[0].extend(found)
                metas[1].extend(positions)
            elif found:
                pieces[kind].append(_frame_of(found, positions))
        offset += len(records)
    empty = pd.DataFrame({frames.POSITION: pd.Series(dtype="int64")})
    tables = {kind: _joined(found) if found else empty for kind, found in pieces.items()}
    return tables, metas


def _frame_of(records: list[dict], positions: list[int]) -> pd.DataFrame:
    """Records of one kind as a frame, columns in the order their keys first appear, then ``_pos``.
    Built in one construction (no column dropped or added afterwards: each costs as much again)."""
    seen = dict.fromkeys(key for record in records for key in record)
    keys = [key for key in seen if key not in ("kind", frames.POSITION)]
    for record, position in zip(records, positions, strict=True):
        record[frames.POSITION] = position
    return pd.DataFrame.from_records(records, columns=[*keys, frames.POSITION])


def _joined(pieces: list[pd.DataFrame]) -> pd.DataFrame:
    return pieces[0] if len(pieces) == 1 else pd.concat(pieces, ignore_index=True)


def _batches(raw: bytes, warnings: frames.WarningLog) -> Iterator[list[Any]]:
    """Parsed lines, a batch at a time; a batch with a bad line is parsed line by line."""
    lines = raw.split(b"\n")
    for start in range(0, len(lines), _BATCH):
        batch = [line for line in lines[start : start + _BATCH] if line and not line.isspace()]
        joined = b"[" + b",".join(batch) + b"]"
        parsed = _try_loads(_loads_fast, joined) or _try_loads(_loads_std, joined)
        yield parsed if parsed is not None else _parse_each(lines, start, _last_line(lines), warnings)


def _try_loads(loads: Callable[[bytes], Any] | None, data: bytes) -> list[Any] | None:
    if loads is None:
        return None
    try:
        return loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError):  # orjson's error derives from ValueError
        return None


def _last_line(lines: list[bytes]) -> int:
    return next((i for i in range(len(lines) - 1, -1, -1) if lines[i].strip()), 0)


def _parse_each(lines: list[bytes], start: int, last_index: int, warnings: frames.WarningLog) -> list[Any]:
    parsed = []
    for index in range(start, min(start + _BATCH, len(lines))):
        line = lines[index]
        if not line.strip():
            continue
        try:
            parsed.append(_loads_std(line))
        except RecursionError:
            warnings.add("too-deep", f"line {index + 1}: JSON nested too deeply to read; ignored")
        except (ValueError, UnicodeDecodeError):
            if index == last_index:
                warnings.add("truncated", f"line {index + 1}: cut off (the writer was probably killed); ignored")
            else:
                warnings.add("not-json", f"line {index + 1}: not JSON; ignored")
    return parsed


def _by_kind(records: list[Any], offset: int, warnings: frames.WarningLog) -> dict[Any, tuple[list[dict], list[int]]]:
    """Records of each kind (None: the minimal form) with their positions in the file."""
    kinds: dict[Any, tuple[list[dict], list[int]]] = {kind: ([], []) for kind in (None, *schema.KINDS)}
    for position, record in enumerate(records, start=offset):
        kind = record.get("kind") if isinstance(record, dict) else ()
        bucket = kinds.get(kind) if kind is None or isinstance(kind, str) else None
        if bucket is None:
            _reject(record, position, warnings)
            continue
        bucket[0].append(record)
        bucket[1].append(position)
    return kinds


def _reject(record: Any, position: int, warnings: frames.WarningLog) -> None:
    if isinstance(record, dict):
        warnings.add("unknown-kind", f"record kind {str(record.get('kind'))[:40]!r} is not known; ignored")
    else:
        warnings.add("not-object", f"record {position + 1}: not a JSON object; ignored")


# -- records -> ordered frames ---------------------------------------------------------


def _parts(
    tables: dict[Any, pd.DataFrame],
    mapping: Mapping[str, str] | None,
    path: Path,
    warnings: frames.WarningLog,
    read: dict[str, Any],
) -> dict[str, pd.DataFrame]:
    """Frames of step, evaluation, layer and event rows, each with its file position in ``_pos``."""
    minimal_train, minimal_eval = _minimal(tables[None], mapping, path, warnings, read)
    steps, evals, layers, events = (_with_step(tables[kind]) for kind in _DATA_KINDS)
    if "lrs" in steps.columns:
        first_lr = steps["lrs"].map(lambda v: v[0] if isinstance(v, list) and v else None)
        steps["lr"] = steps["lr"].where(steps["lr"].notna(), first_lr) if "lr" in steps.columns else first_lr
    # Two keys with one canonical name (Lightning's val_loss and val_loss_epoch) stay one column each.
    evals = frames.rename_columns(evals, path, namer=_eval_name)
    return {
        "steps": _stack(steps, minimal_train),
        "evals": _stack(evals, minimal_eval),
        "layers": layers,
        "events": events,
    }


def _eval_name(key: str) -> str:
    return key if key in ("step", "_pos") else schema.canonical_eval_key(key)


def _with_step(frame: pd.DataFrame) -> pd.DataFrame:
    return frame if "step" in frame.columns or frame.empty else frame.assign(step=np.nan)


def _minimal(
    raw: pd.DataFrame,
    mapping: Mapping[str, str] | None,
    path: Path,
    warnings: frames.WarningLog,
    read: dict[str, Any],
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Minimal-form records split by their keys into training and evaluation rows; a stand-in loss
    chosen for them is said in ``read`` (``loss_from``), as the table readers say it in a run's meta.

    The step is ``step`` or another usual name for it (``iteration``, ``global_step``, ...).
    """
    if raw.empty:  # a file our writer wrote has none: no naming to do
        return _no_rows(), _no_rows()
    frame = frames.name_table(raw.drop(columns="_pos"), path, mapping=mapping, meta={})
    # Two keys read as the loss: say which one was taken, as the table readers do.
    for note in frame.attrs.get("reading_notes", ()):
        warnings.add("loss-choice", note)
    # No plain loss but other losses (recon_loss, g_loss): the first stands in, with a note, as in a table.
    frame = frames.add_primary_losses(frame, read, warnings)
    frame["step"] = _fill_steps(pd.to_numeric(frame["step"], errors="coerce"))
    frame["_pos"] = raw["_pos"]
    eval_cols = [c for c in frame.columns if frames.is_eval_column(c)]
    train_cols = [c for c in frame.columns if c not in eval_cols and c not in ("step", "_pos")]
    has_train = frame[[c for c in train_cols if c not in frames.BOOKKEEPING]].notna().any(axis=1)
    has_eval = frame[eval_cols].notna().any(axis=1)
    return frame.loc[has_train, ["step", "_pos", *train_cols]], frame.loc[has_eval, ["step", "_pos", *eval_cols]]


def _no_rows() -> pd.DataFrame:
    return pd.DataFrame({"step": np.zeros(0), frames.POSITION: np.zeros(0, dtype="int64")})


def _fill_steps(steps: pd.Series) -> pd.Series:
    """A record without a step comes right after the one before it (the first at step 0)."""
    if steps.notna().all():
        return steps
    known = steps.notna()
    since = known.groupby(known.cumsum()).cumcount().astype("float64")
    base = steps.ffill()
    return base.where(known, base + since).fillna(since)


def _stack(first: pd.DataFrame, second: pd.DataFrame) -> pd.DataFrame:
    if second.empty:
        return first
    if first.empty:
        return second
    return pd.concat([first, second], ignore_index=True).sort_values("_pos", kind="stable")


# -- runs ----------------------------------------------------------------------------


def _run_boundaries(steps: pd.DataFrame) -> np.ndarray:
    """File positions where another run begins (the step counter restarts)."""
    if steps.empty:
        return np.zeros(0, dtype="int64")
    positions, numbers = steps[frames.POSITION].to_numpy(), frames.to_numbers(steps["step"])[0]
    if not ordering.rises(positions):  # rows mostly come in file order: checking is a pass, sorting several
        order = np.argsort(positions, kind="stable")
        positions, numbers = positions[order], numbers[order]
    usable = ~np.isnan(numbers)
    if not usable.all():
        positions, numbers = positions[usable], numbers[usable]
    return positions[frames.restart_positions(numbers)]


def _build_run(
    parts: dict[str, pd.DataFrame],
    metas: tuple[list[dict], list[int]],
    boundaries: np.ndarray,
    index: int,
    path: Path,
    warnings: frames.WarningLog,
    read: Mapping[str, Any],
) -> Run:
    chosen = {key: _segment(frame, boundaries, index) for key, frame in parts.items()}
    meta = _segment_meta(metas, parts, boundaries, index) | read
    nan_steps: dict[str, np.ndarray] = {}
    repeated: dict[str, int] = {}
    local = frames.WarningLog()
    for key in ("steps", "evals", "layers"):
        if chosen[key].empty and set(chosen[key].columns) <= {"step", frames.POSITION}:
            chosen[key] = pd.DataFrame({"step": np.zeros(0)})  # what the steps below make of no records, at once
            continue
        frame = frames.usable_steps(chosen[key], local, f"{key[:-1]} record")
        if key == "layers":
            chosen[key] = frames.numeric_frame(frame, "layer", local, text_columns=TEXT_COLUMNS)
            continue
        # Handed over as columns, not copied into a frame here: the rules read the arrays, and the
        # frame (with copies of pyarrow's read-only memory, the user's to change) is built if asked for.
        frame = frames.numeric_frame(frame, key[:-1], local, nan_steps, own=False)
        chosen[key] = Columns.of(frames.merge_duplicate_steps(frame, repeated))
    events = chosen["events"]
    if events.empty:
        events = pd.DataFrame({"step": np.zeros(0), "event": np.zeros(0, dtype=object)})
    else:
        # A copy: the columnar reader's columns may be read-only views of pyarrow's memory, and the
        # run's frames are the user's to change.
        events = (
            events.drop(columns=frames.POSITION)
            .assign(step=pd.to_numeric(events["step"], errors="coerce").astype("float64"))
            .copy()
        )
    if repeated:
        meta["repeated_steps"] = repeated
    return Run(
        name=str(meta.get("name") or ""),
        source=str(path),
        format="diagnose" if metas[0] else "jsonl",
        meta=meta,
        steps=chosen["steps"],
        evals=chosen["evals"],
        layers=chosen["layers"],
        events=events.reset_index(drop=True),
        nan_steps=nan_steps,
        warnings=warnings.summary() + local.summary() + frames.repeated_warning(repeated) + _compiled_warning(events),
        rank=meta.get("rank"),
    )


def _compiled_warning(events: pd.DataFrame) -> list[str]:
    """The report line of a run whose model ran under torch.compile: what the probes could not see."""
    if events.empty or "event" not in events:  # none, or event records without a name (a hand-written file)
        return []
    compiled = events.loc[events["event"] == schema.EV_COMPILED, "step"]
    if compiled.empty:
        return []
    return [
        f"activations unavailable under torch.compile (from step {compiled.min():g}): the probes cannot hook "
        "the modules inside a compiled graph; a NaN/Inf there is attributed to the compiled model"
    ]


def _segment(frame: pd.DataFrame, boundaries: np.ndarray, index: int) -> pd.DataFrame:
    """The rows of run ``index``, their file positions still in ``_pos`` (`frames.numeric_frame` leaves it out)."""
    if frame.empty or not len(boundaries):
        return frame
    ids = frames.segment_ids(frame["_pos"].to_numpy(), boundaries)
    return frame.loc[ids == index]


def _segment_meta(
    metas: tuple[list[dict], list[int]], parts: dict[str, pd.DataFrame], boundaries: np.ndarray, index: int
) -> dict[str, Any]:
    """The meta record that opened this run; later ones in it are resumed sessions.

    A meta record belongs to the run of the first record after it. A run
    without one takes the one that opened the latest run before it.
    """
    records, positions = metas
    if not records:
        return {}
    owner = frames.segment_ids(_next_positions(np.asarray(positions), parts), boundaries)
    own = [record for record, run in zip(records, owner, strict=True) if run == index]
    if not own:
        earlier = [record for record, run in zip(records, owner, strict=True) if run < index]
        own = earlier[-1:]
    if not own:
        return {}
    meta = {k: v for k, v in own[0].items() if k != "kind"}
    if len(own) > 1:
        meta["resumed"] = [record.get("started") for record in own[1:]]
    return meta


def _next_positions(positions: np.ndarray, parts: dict[str, pd.DataFrame]) -> np.ndarray:
    """For each meta record, the file position of the first data record after it."""
    nearest = np.full(len(positions), np.iinfo("int64").max)
    for frame in parts.values():
        if frame.empty:
            continue
        data = frame["_pos"].to_numpy()
        if not ordering.rises(data):  # each kind's rows come in file order; anything else is sorted
            data = np.sort(data)
        after = np.searchsorted(data, positions)
        nearest = np.where(after < len(data), np.minimum(nearest, data[np.minimum(after, len(data) - 1)]), nearest)
    return np.where(nearest < np.iinfo("int64").max, nearest, positions)
