"""A bounded picture of a run in progress, kept as columns, from which the rules get a `Run` at any time.

The live checks must never re-read the run file and must hold a fixed amount
of memory however long the run goes. The sketch keeps, from the records as
they are written: the meta record, every record of the first
``head`` steps and of the latest ``tail`` steps, an evenly thinned sample
of the steps in between (at most ``middle``: when it fills up, every other
one is dropped and the spacing doubles), and the first and latest
evaluations and events. Early steps set the levels the rules compare
against (start of the loss, initial gradient norm); the latest steps are
where a new problem shows; the thinned middle keeps the shape of the curve.

Step, evaluation and layer records are kept as columns of numbers: the
records of a flush are turned into arrays once (`RunSketch.settle`), and a
judgement builds its `Run` from those arrays, cutting out the rows of the
steps the sketch no longer keeps, instead of parsing anything again. The
`Run` is the one the reader makes of the same records
(`tests/test_live.py` holds the two together on recorded and live runs):
numbers as float64, a NaN that was logged kept apart from a value that
was not (``Run.nan_steps``), columns without any value left out, rows in
step order, a step logged twice merged as the reader merges it, and a
step counter that restarts beginning a new run, of which the reader takes
the last. Two things the watch never writes are read differently: a
per-group learning rate list (``lrs``) without ``lr`` beside it does not
stand in for ``lr``, and the reader's notes on unreadable values are not
made (no rule reads them).
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Iterable
from itertools import chain
from typing import Any

import numpy as np
import pandas as pd

from diagnose.readers import frames
from diagnose.readers.native import TEXT_COLUMNS
from diagnose.run import Run
from diagnose.runfile import schema

Record = dict[str, Any]
_KEPT = (schema.META, schema.EVAL, schema.EVENT, schema.STEP, schema.LAYER)
# Rows a table holds beyond the ones it keeps before it lets the others go (see `_Table.settle`).
_SLACK = 4096


class _Ends:
    """The first ``size`` and the latest ``size`` items of a stream."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.first: list[Any] = []
        self.latest: deque[Any] = deque(maxlen=size)

    def add(self, item: Any) -> None:
        if len(self.first) < self.size:
            self.first.append(item)
        else:
            self.latest.append(item)

    def __iter__(self) -> Any:
        yield from self.first
        yield from self.latest


class _Step:
    """One step of the run: the group its step and layer records belong to."""

    __slots__ = ("group", "step")

    def __init__(self, step: Any, group: int) -> None:
        self.step = step
        self.group = group


def _numbers(values: list[Any]) -> tuple[np.ndarray, np.ndarray | None]:
    """Raw values as float64 (NaN where none was logged), and where a NaN was logged (None: nowhere).

    As the reader reads them: numbers and numeric text are numbers, ``"NaN"`` is a logged NaN, and
    anything else (text, a list, an object) is no value."""
    try:
        numbers = np.array(values, dtype="float64")
    except (TypeError, ValueError):
        numbers = None
    if numbers is None or numbers.ndim != 1:
        numbers = np.array([_number(value) for value in values], dtype="float64")
    # Only where no number came out can a NaN have been logged; most such places hold no value at all
    # (a layer record without this field), which is told apart without reading it as a number.
    logged = [
        row
        for row in np.flatnonzero(np.isnan(numbers)).tolist()
        if values[row] is not None and _number(values[row]) is not None
    ]
    if not logged:
        return numbers, None
    where = np.zeros(len(values), dtype=bool)
    where[logged] = True
    return numbers, where


def _number(value: Any) -> float | None:
    if isinstance(value, (int, float, str)):  # a bool is an int
        return schema.to_number(value)
    return None


def _objects(values: list[Any]) -> np.ndarray:
    return np.fromiter(values, dtype=object, count=len(values))


class _Chunk:
    """Rows as columns: ``columns`` (text ones as objects), where a NaN was logged, each row's group."""

    def __init__(self, columns: dict[str, np.ndarray], logged_nan: dict[str, np.ndarray], groups: np.ndarray) -> None:
        self.columns, self.logged_nan, self.groups = columns, logged_nan, groups

    @classmethod
    def of(cls, pending: list[tuple[int, Record]], text: frozenset[str]) -> _Chunk:
        records = [record for _, record in pending]
        columns, logged_nan = {}, {}
        keys = dict.fromkeys(chain.from_iterable(records))
        keys.pop("kind", None)
        for key in keys:
            values = [record.get(key) for record in records]
            if key in text:
                columns[key] = _objects(values)
                continue
            columns[key], logged = _numbers(values)
            if logged is not None:
                logged_nan[key] = logged
        return cls(columns, logged_nan, np.fromiter((group for group, _ in pending), "int64", len(pending)))


class _Table:
    """The records of one kind as columns, one row per record, each row tagged with its group (the step
    or evaluation that keeps it in the sketch or lets it go).

    A flush turns its records into a chunk of arrays (`settle`, a cost per new record); a snapshot joins
    the chunks to the columns, and lets go of the rows of groups the sketch no longer keeps once they
    outnumber the kept ones, so that memory stays bounded. Columns and their arrays are replaced, never
    changed in place: a snapshot taken of them stays as it was while the sketch goes on."""

    def __init__(self, text: Iterable[str] = ()) -> None:
        self.text = frozenset(text)
        self.held = _Chunk({}, {}, np.zeros(0, dtype="int64"))
        self.pending: list[tuple[int, Record]] = []  # (group, record) added since the last settle
        self._chunks: list[_Chunk] = []
        self._chunk_rows = 0
        self._kept_rows = 0

    def add(self, group: int, record: Record) -> None:
        self.pending.append((group, record))

    def settle(self, kept: np.ndarray) -> None:
        """Turn the records added since the last call into a chunk; join the chunks once they hold as
        many rows as the columns (so that many small flushes cost no more than one large one)."""
        if self.pending:
            self._chunks.append(_Chunk.of(self.pending, self.text))
            self._chunk_rows += len(self.pending)
            self.pending = []
        if self._chunk_rows > max(_SLACK, len(self.held.groups)):
            self._join(kept)

    def _join(self, kept: np.ndarray) -> None:
        parts = [self.held, *self._chunks]
        self._chunks, self._chunk_rows = [], 0
        sizes = [len(part.groups) for part in parts]
        columns, logged_nan = {}, {}
        for key in dict.fromkeys(key for part in parts for key in part.columns):
            pieces = zip(parts, sizes, strict=True)
            columns[key] = np.concatenate([p.columns.get(key, self._missing(key, n)) for p, n in pieces])
            if any(key in part.logged_nan for part in parts):
                pieces = zip(parts, sizes, strict=True)
                logged_nan[key] = np.concatenate([p.logged_nan.get(key, np.zeros(n, dtype=bool)) for p, n in pieces])
        held = _Chunk(columns, logged_nan, np.concatenate([part.groups for part in parts]))
        if len(held.groups) > 2 * self._kept_rows + _SLACK:
            rows = np.isin(held.groups, kept)
            held = _Chunk(
                {key: values[rows] for key, values in held.columns.items()},
                {key: logged[rows] for key, logged in held.logged_nan.items()},
                held.groups[rows],
            )
            self._kept_rows = len(held.groups)
        self.held = held

    def _missing(self, key: str, rows: int) -> np.ndarray:
        return np.full(rows, None, dtype=object) if key in self.text else np.full(rows, np.nan)

    def snapshot(self, kept: np.ndarray) -> _Rows:
        self.settle(kept)
        if self._chunks:
            self._join(kept)
        rows = np.isin(self.held.groups, kept)
        return _Rows(self.held.columns, self.held.logged_nan, None if rows.all() else rows)


class _Rows:
    """The rows of a table kept at one moment: what a judgement builds its frame from, on any thread."""

    def __init__(self, columns: dict[str, np.ndarray], logged_nan: dict[str, np.ndarray], rows: Any) -> None:
        self.columns, self.logged_nan, self.rows = columns, logged_nan, rows

    def _take(self, values: np.ndarray, usable: np.ndarray | None) -> np.ndarray:
        values = values if self.rows is None else values[self.rows]
        return values if usable is None else values[usable]

    def frame(
        self, nan_steps: dict[str, np.ndarray] | None = None, repeated: dict[str, int] | None = None
    ) -> pd.DataFrame:
        """The frame the reader makes of these rows; logged NaNs go into ``nan_steps``, and rows of one
        step are merged (counted in ``repeated``), when given."""
        if "step" not in self.columns:
            return pd.DataFrame({"step": np.zeros(0)})
        steps = self._take(self.columns["step"], None)
        usable = np.isfinite(steps)  # a row without a usable step is no row
        usable = None if usable.all() else usable
        steps = steps if usable is None else steps[usable]
        columns = {}
        for key, values in self.columns.items():
            values = self._take(values, usable)
            logged = self.logged_nan.get(key)
            logged = self._take(logged, usable) if logged is not None else None
            if values.dtype == object or key == "step":
                columns[key] = values
            elif logged is not None or not np.isnan(values).all():
                columns[key] = values
                if nan_steps is not None and logged is not None and logged.any():
                    nan_steps[key] = np.sort(steps[logged])
        index = pd.RangeIndex(len(steps))
        if all(values.dtype != object for values in columns.values()):  # one block, built at once
            frame = pd.DataFrame(np.column_stack(list(columns.values())), columns=list(columns), index=index)
        else:
            frame = pd.DataFrame(columns, index=index)
        rises = np.diff(steps)
        if not (rises >= 0).all():
            frame = frame.sort_values("step", kind="stable").reset_index(drop=True)
        if repeated is not None and not (rises > 0).all():
            frame = frames.merge_duplicate_steps(frame, repeated)
        return frame


def _events_frame(events: list[Record]) -> pd.DataFrame:
    if not events:
        return pd.DataFrame({"step": np.zeros(0), "event": np.zeros(0, dtype=object)})
    keys = list(dict.fromkeys(key for event in events for key in event if key != "kind"))
    frame = pd.DataFrame.from_records(events, columns=keys if "step" in keys else [*keys, "step"])
    return frame.assign(step=pd.to_numeric(frame["step"], errors="coerce").astype("float64"))


class SketchSnapshot:
    """What a sketch holds at one moment; `run` builds the `Run` from it on any thread."""

    def __init__(self, name: str, meta: Record | None, parts: dict[str, _Rows], events: list[Record]) -> None:
        self.name, self.meta, self.parts, self.events = name, meta, parts, events

    def run(self) -> Run | None:
        """The run as the reader would read the records held, or None when it holds no value yet."""
        nan_steps: dict[str, np.ndarray] = {}
        repeated: dict[str, int] = {}
        steps = self.parts["steps"].frame(nan_steps, repeated)
        evals = self.parts["evals"].frame(nan_steps, repeated)
        layers = self.parts["layers"].frame()
        events = _events_frame(self.events)
        measured = [c for frame in (steps, evals) for c in frame.columns if c not in frames.BOOKKEEPING]
        if not (measured or nan_steps or len(layers) or len(events)):
            return None
        meta = {key: value for key, value in (self.meta or {}).items() if key != "kind"}
        if repeated:
            meta["repeated_steps"] = repeated
        return Run(
            name=str(meta.get("name") or self.name),
            source=f"{self.name}.jsonl",
            format="diagnose" if self.meta is not None else "jsonl",
            meta=meta,
            steps=steps,
            evals=evals,
            layers=layers,
            events=events,
            nan_steps=nan_steps,
            rank=meta.get("rank"),
        )


class RunSketch:
    """Bounded memory of a run's records; `run()` builds from them the `Run` the reader would read.

    ``versions`` counts, per input a rule can require (a step or evaluation field,
    ``layers.<field>``, ``events``), the records that brought it: the live monitor judges again
    only the rules whose inputs moved.
    """

    def __init__(self, name: str, *, head: int = 64, tail: int = 256, middle: int = 256) -> None:
        self.name = name
        self.meta: Record | None = None
        self.head_size, self.tail_size, self.middle_size = head, tail, middle
        self.eval_size = self.event_size = 256
        self.versions: dict[str, int] = {}
        self.latest_step: int | None = None
        self.latest_fields: Record = {}
        self._records = 0
        self._layer_inputs: dict[str, str] = {}  # a layer record's key -> its name among the inputs
        self._start()

    def _start(self) -> None:
        """Keep nothing of the steps so far: at the start, and where the step counter restarts."""
        self.head: list[_Step] = []
        self.tail: deque[_Step] = deque()
        self.middle: list[_Step] = []
        self._stride = 1
        self._thinned = 0
        self._groups = 0
        self._first_step: Any = None
        self._past_first = False
        self.tables = {"steps": _Table(), "layers": _Table(TEXT_COLUMNS), "evals": _Table()}
        self.events = _Ends(self.event_size)
        self._eval_count = 0

    def add(self, record: Record, line: str | None = None) -> None:
        """Keep ``record``; ``line`` is its line in the run file, when the caller has it already (the
        meta record and events are kept as the file spells them, the rest as numbers)."""
        kind = record.get("kind")
        if kind not in _KEPT:
            return
        if kind == schema.LAYER:  # one way to keep layer records, whether they come one by one or a step's at once
            self.add_layers([record])
            return
        self._records += 1
        if self._records % _SLACK == 0:  # bounded also where nothing flushes (a replay, a long judgement-free stretch)
            self.settle()
        if kind == schema.STEP:
            self._count_inputs(record, None)
            self._note_step(record.get("step"))
            self.latest_fields = record
            self.tables["steps"].add(self._group(record.get("step")), record)
        elif kind == schema.EVAL:
            self._count_inputs(record, None)
            self.tables["evals"].add(self._eval_count, record)
            self._eval_count += 1
        else:
            record = json.loads(line if line is not None else json.dumps(schema.encode(record)))
            if kind == schema.META:
                self.meta = self.meta or record
            else:
                self.events.add(record)
                self.versions["events"] = self._records

    def add_layers(self, records: list[Record]) -> None:
        """The layer records of one step, kept as `add` keeps each of them, in one go (a model of many
        modules writes hundreds at a sampled step)."""
        if not records:
            return
        before = self._records
        self._records += len(records)
        if self._records // _SLACK > before // _SLACK:  # as `add` settles at every _SLACK-th record
            self.settle()
        self._count_inputs(dict.fromkeys(chain(*records)), self._layer_inputs)
        pending, step, group = self.tables["layers"].pending, object(), 0
        for record in records:
            if record.get("step") != step:  # the watch gives one step's: one look-up
                step = record.get("step")
                group = self._group(step)
            pending.append((group, record))

    def _count_inputs(self, record: Record, names: dict[str, str] | None) -> None:
        """Each key of ``record`` was brought now (a layer field under its ``layers.`` name, from ``names``)."""
        if names is None:
            self.versions.update(dict.fromkeys(record, self._records))
            return
        keys = [names.get(key) or names.setdefault(key, "layers." + key) for key in record]
        self.versions.update(dict.fromkeys(keys, self._records))

    def _group(self, step: Any) -> int:
        """The group of a step or layer record of ``step``: that of the latest step when it is the same."""
        self.latest_step = step
        last = self.tail[-1] if self.tail else (self.head[-1] if self.head else None)
        if last is None or last.step != step:
            last = _Step(step, self._groups)
            self._groups += 1
            if len(self.head) < self.head_size:
                self.head.append(last)
            else:
                self.tail.append(last)
                if len(self.tail) > self.tail_size:
                    self._thin(self.tail.popleft())
        return last.group

    def _note_step(self, step: Any) -> None:
        """A step that goes back to (or below) the first step, once the run got past it, begins another
        run in the same file (`frames.restart_positions`): the reader reads that one, so the sketch does."""
        if not isinstance(step, (int, float)) or step != step:
            return
        if self._first_step is not None and self._past_first and step <= self._first_step:
            self._start()
        if self._first_step is None:
            self._first_step = step
        self._past_first |= step > self._first_step

    def _thin(self, group: _Step) -> None:
        """Keep every ``stride``-th step that leaves the tail; halve the middle when it is full."""
        self._thinned += 1
        if self._thinned % self._stride:
            return
        self.middle.append(group)
        if len(self.middle) > self.middle_size:
            self.middle = self.middle[1::2]
            self._stride *= 2

    def _kept(self) -> dict[str, np.ndarray]:
        groups = np.fromiter((s.group for s in chain(self.head, self.middle, self.tail)), "int64")
        count, size = self._eval_count, self.eval_size
        evals = np.r_[np.arange(min(count, size)), np.arange(max(size, count - size), count)]
        return {"steps": groups, "layers": groups, "evals": evals}

    def settle(self) -> dict[str, np.ndarray]:
        """Turn the records since the last call into columns (the watch calls it at each flush)."""
        kept = self._kept()
        for kind, table in self.tables.items():
            table.settle(kept[kind])
        return kept

    def snapshot(self) -> SketchSnapshot:
        """What the sketch holds now: its `SketchSnapshot.run` can be built on any thread."""
        kept = self.settle()
        parts = {kind: table.snapshot(kept[kind]) for kind, table in self.tables.items()}
        return SketchSnapshot(self.name, self.meta, parts, list(self.events))

    def run(self) -> Run | None:
        """The run as far as it has gone, or None before its first step."""
        if self.latest_step is None:
            return None
        return self.snapshot().run()
