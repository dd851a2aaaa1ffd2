"""A one-pass columnar parse of a JSON Lines run file with pyarrow (the ``fast`` extra).

pyarrow's JSON reader turns the whole file into typed columns in C++ without
making a Python object per record; on a run of a million steps it is several
times faster than parsing each line into a dict (measured in
``benchmarks/analysis_speed.py``). It is strict where our reader is tolerant,
so it is used only on files it can read *exactly* as the pure reader in
`diagnose.readers.native` does, and returns None otherwise (a damaged line in
the middle, a field whose type changes from row to row, an unknown record kind,
nested values outside the meta record): the caller then takes the pure path.
What comes out is what that path builds: one frame per record kind with each
row's position among the file's records in ``_pos``, and the meta records as
dicts. ``tests/test_columnar_reader.py`` holds both readers to the same `Run`s.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd

from diagnose.readers import arrow_lines
from diagnose.run import Columns
from diagnose.runfile import schema

MIN_BYTES = arrow_lines.MIN_BYTES

Records = dict[Any, pd.DataFrame]
Metas = tuple[list[dict], list[int]]


def available() -> bool:
    try:
        import pyarrow.json  # noqa: F401
    except ImportError:
        return False
    return True


def read_tables(raw: bytes, data_kinds: tuple[str, ...]) -> tuple[Records, Metas, int | None] | None:
    """Frames per kind (None: the minimal form), the meta records, and the line number of a cut
    last line (None when the file ends cleanly); None when the pure reader must read this file."""
    parsed = arrow_lines.parse(raw)
    if parsed is None:
        return None
    table, cut_line = parsed.table, parsed.cut_line
    if table is None:
        return (
            {kind: _ordered({"_pos": np.zeros(0, "int64")}, {}, {}) for kind in (None, *data_kinds)},
            ([], []),
            cut_line,
        )
    rows_of = _rows_by_kind(table, data_kinds)
    if rows_of is None:
        return None
    columns = {name: _Column(table.column(name)) for name in table.column_names if name != "kind"}
    parts = {}
    for kind in (None, *data_kinds):
        part = _part(columns, rows_of[kind])
        if part is None:
            return None
        parts[kind] = part
    meta_rows = rows_of[schema.META].tolist()
    wanted = set(meta_rows).union(*(first_seen.values() for _, first_seen in parts.values()))
    records = _records_at(raw, wanted)
    frames = {kind: _ordered(values, first_seen, records) for kind, (values, first_seen) in parts.items()}
    return frames, ([records[row] for row in meta_rows], meta_rows), cut_line


def _rows_by_kind(table: Any, data_kinds: tuple[str, ...]) -> dict[Any, np.ndarray] | None:
    """The rows of each record kind (None: the minimal form); None when a kind is not a known name."""
    import pyarrow as pa
    import pyarrow.compute as pc

    none = np.zeros(0, dtype=np.intp)
    if "kind" not in table.column_names:
        everything = np.arange(table.num_rows)
        return {kind: everything if kind is None else none for kind in (None, schema.META, *data_kinds)}
    column = table.column("kind")
    if not pa.types.is_string(column.type):
        return None
    # Each row's kind as a number (-1: none), so that each kind's rows are one integer comparison.
    encoded = column.combine_chunks().dictionary_encode()
    names = encoded.dictionary.to_pylist()
    if not set(names) <= set(schema.KINDS):
        return None
    codes = pc.fill_null(encoded.indices, -1).to_numpy(zero_copy_only=False)
    rows = {None: np.flatnonzero(codes == -1)}
    for kind in (schema.META, *data_kinds):
        rows[kind] = np.flatnonzero(codes == names.index(kind)) if kind in names else none
    return rows


class _Column:
    """One parsed column, cut into the rows of each kind. A column of numbers or text is cut by
    pyarrow (its memory pool reuses what it frees, where a numpy array of a million values costs a
    couple of thousand page faults: converting the whole column first, then cutting it, paid that
    twice per column); a text value becomes a Python object only at the rows asked for (a column
    such as the meta record's ``name`` is null in every other row)."""

    def __init__(self, column: Any) -> None:
        import pyarrow as pa

        self.type = column.type
        self.valid = column.is_valid().to_numpy(zero_copy_only=False)
        if pa.types.is_list(self.type) and pa.types.is_floating(self.type.value_type):
            self.values = _python_lists(column)
        elif pa.types.is_nested(self.type):
            self.values = None
        else:
            self.values = column

    def rows(self, rows: Any, valid: np.ndarray) -> Any:
        """The values at ``rows`` (a pyarrow array of row numbers, ``valid`` which of them hold a value)
        as the pure parse holds them; None for nested values."""
        import pyarrow as pa

        if self.values is None:
            return None
        if isinstance(self.values, np.ndarray):
            values = self.values[rows.to_numpy()]
        else:
            values = self.values.take(rows).to_numpy(zero_copy_only=False)
        if pa.types.is_floating(self.type):
            return _spelled(values.astype("float64", copy=False), valid)
        if pa.types.is_integer(self.type) or pa.types.is_boolean(self.type):
            return (
                values.astype(self.type.to_pandas_dtype(), copy=False) if valid.all() else _with_missing(values, valid)
            )
        if pa.types.is_string(self.type) or pa.types.is_list(self.type):
            return _with_missing(values, valid)
        return None


def _spelled(numbers: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Float values, the non-finite ones spelled as the run file spells them (as the pure parse
    leaves them, for the readers to tell a logged NaN from a missing value)."""
    bad = ~np.isfinite(numbers) & valid
    if not bad.any():
        return numbers
    spelled = numbers.astype(object)
    spelled[bad] = [schema.encode_float(value) for value in numbers[bad]]
    spelled[~valid] = np.nan
    return spelled


def _with_missing(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    held = values.astype(object)
    held[~valid] = np.nan
    return held


def _python_lists(column: Any) -> np.ndarray:
    """A column of lists of floats as Python lists (what the pure parse makes), non-finite items spelled."""
    import pyarrow.compute as pc

    items = column.to_pylist()
    flat = pc.list_flatten(column)
    if len(flat) and not pc.all(pc.is_finite(flat)).as_py():
        items = schema.encode(items)
    held = np.empty(len(items), dtype=object)
    for index, item in enumerate(items):  # element-wise: numpy would stack lists of equal length
        held[index] = np.nan if item is None else item
    return held


def _part(columns: dict[str, _Column], rows: np.ndarray) -> tuple[dict[str, Any], dict[str, int]] | None:
    """The columns the records at ``rows`` have, with their file positions in ``_pos``, and the
    record each column first appears in. None when one of them holds nested values."""
    import pyarrow as pa

    values: dict[str, Any] = {}
    first_seen: dict[str, int] = {}
    taken = pa.array(rows)
    for name, column in columns.items():
        valid = column.valid[rows]
        if not valid.any():
            continue
        held = column.rows(taken, valid)
        if held is None:
            return None
        values[name] = held
        first_seen[name] = int(rows[np.argmax(valid)])
    values["_pos"] = rows.astype("int64")
    return values, first_seen


def _ordered(columns: dict[str, Any], first_seen: dict[str, int], records: dict[int, dict]) -> pd.DataFrame:
    """One frame, columns in the order the pure parse finds them: by the record each first appears
    in, then by its place among that record's keys."""

    def place(name: str) -> tuple[int, int]:
        row = first_seen[name]
        keys = list(records[row])
        return row, keys.index(name) if name in keys else len(keys)

    order = sorted(first_seen, key=place)
    return Columns({name: columns[name] for name in [*order, "_pos"]}, len(columns["_pos"])).frame()


def _records_at(raw: bytes, positions: set[int]) -> dict[int, dict]:
    """The records at these positions parsed from their own lines (keys in file order, no key a
    record lacks: pyarrow fills those with null)."""
    last = max(positions, default=-1)
    found = {}
    for position, line in _records_lines(raw, last):
        if position in positions:
            found[position] = json.loads(line, parse_constant=str)
    return found


def _records_lines(raw: bytes, last: int) -> Iterator[tuple[int, bytes]]:
    """(position among the records, line) up to the record at ``last``; blank lines hold no record."""
    position, start = 0, 0
    while position <= last and start < len(raw):
        end = raw.find(b"\n", start)
        end = len(raw) if end < 0 else end
        line = raw[start:end]
        if line.strip():
            yield position, line
            position += 1
        start = end + 1
