"""pyarrow's parse of a long JSON Lines run file, begun early in a background thread when asked.

The columnar reader (`diagnose.readers.columnar`) turns a run file into frames
in two steps: pyarrow parses the bytes into a table (`parse`), then the table
is cut into one frame per record kind. The first step is most of the time, and
pyarrow does it in C++ threads without holding the GIL. A command that knows
its paths before it imports pandas and the rules (``diagnose report`` on a run
of a million steps spends about as long importing as parsing) calls
`read_ahead`: each long JSON Lines file named is read and parsed in a
background thread while the main thread imports, and the reader then takes the
file's bytes (`early_bytes`) and their parse (`parse`) from here.

Nothing about what is read changes: the bytes are the file's, read once, a
moment earlier; the reader checks them as it checks any; a file the thread
could not read or parse is read on the ordinary path, which reports what is
wrong as it always did. This module imports nothing beyond the standard library
until it parses, so that a command can call `read_ahead` before its imports.
"""

from __future__ import annotations

import importlib.util
import json
import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Below this size the pure reader is as fast, and importing pyarrow (about
# 0.2 s, measured on the benchmark machine) would dominate a small file.
MIN_BYTES = 4 << 20
# pyarrow parses a file a block at a time, the blocks on its threads: blocks of 4 MB keep both
# cores of a small machine busy to the end of a long file (a twentieth less CPU and wall time than
# 16 MB on 80 MB). A record longer than a block makes pyarrow fail; the parse is then tried again
# in blocks of 16 MB, which hold the meta record of a model of tens of thousands of modules.
_BLOCK_BYTES = (4 << 20, 16 << 20)
# What pyarrow's error says of a record longer than the block (as pyarrow 26 words it); other wording
# sends the file to the pure reader, which reads it whole.
_STRADDLES = "straddles two block boundaries"
# Our writer spells non-finite floats as strings (strict JSON has no NaN);
# pyarrow reads the bare tokens as floats, so the strings are unquoted first.
# A string that only looks like one of them then fails to parse and the pure
# reader takes over, so nothing is misread.
_NONFINITE_SPELLINGS = ((b'"-Infinity"', b"-Infinity"), (b'"Infinity"', b"Infinity"), (b'"NaN"', b"NaN"))
# A key set to null (the file then goes to the pure reader), and what every spelling above ends
# with: each looked for by RE2 without the GIL, a pattern a pass (one literal is found with memchr,
# some 5 ms on 80 MB; an alternation of them takes 0.13 s), the spellings then checked in Python
# only in a file that may hold one.
_NULL = r": ?null"
# What every null holds, looked for first: RE2 finds a literal by the first byte of it, and a ':' or
# an 'n' is in almost every record (the pattern above took 40 ms on 80 MB), a 'u' in few (8 ms).
_NULL_HINT = "ull"
_SPELLING_ENDS = ('NaN"', 'Infinity"')
_SUFFIXES = (".jsonl", ".ndjson")


@dataclass(frozen=True)
class Parsed:
    """The records of a file as one table (None: the file holds none) and the line number of a cut
    last line (None when the file ends cleanly)."""

    table: Any
    cut_line: int | None


_lock = threading.Lock()
# Files read ahead: path -> (the bytes, their parse once the thread is done with it).
_ahead: dict[str, _Ahead] = {}


class _Ahead:
    def __init__(self) -> None:
        self.raw: bytes | None = None
        self.parsed: Parsed | None = None
        self.done = threading.Event()


def read_ahead(paths: Iterable[Path], format: str | None = None) -> None:
    """Begin reading and parsing the long JSON Lines files among ``paths`` in a background thread.
    Folders, other files and other formats are left to their readers."""
    if format is not None and format.lower() not in ("jsonl", "diagnose", "native"):
        return
    wanted = []
    for path in paths:
        try:
            if path.suffix.lower() in _SUFFIXES and path.is_file() and path.stat().st_size >= MIN_BYTES:
                wanted.append(os.path.abspath(path))
        except OSError:
            continue
    if not wanted or importlib.util.find_spec("pyarrow") is None:
        return
    with _lock:
        entries = [(key, _ahead.setdefault(key, _Ahead())) for key in dict.fromkeys(wanted) if key not in _ahead]
    if entries:
        # Not a daemon: the interpreter waits for the parse rather than stopping pyarrow's threads midway.
        threading.Thread(target=_read_all, args=(entries,), name="diagnose-read-ahead").start()


def _read_all(entries: list[tuple[str, _Ahead]]) -> None:
    for key, entry in entries:
        try:
            entry.raw = Path(key).read_bytes()
            entry.parsed = _parse_now(entry.raw)
        except Exception:  # noqa: BLE001 - whatever went wrong, the ordinary path reads the file and says so
            entry.raw = entry.parsed = None
        finally:
            entry.done.set()


def early_bytes(path: Path) -> bytes | None:
    """The bytes of ``path`` when `read_ahead` read them (waiting for it); None otherwise."""
    with _lock:
        entry = _ahead.get(os.path.abspath(path))
    if entry is None:
        return None
    entry.done.wait()
    return entry.raw


def parse(raw: bytes) -> Parsed | None:
    """pyarrow's parse of run-file content ``raw``; None when the pure reader must read it (a key
    set to null, a line pyarrow cannot read). The parse `read_ahead` made of these very bytes when
    it read them; otherwise parsed now."""
    with _lock:
        entry = next((e for e in _ahead.values() if e.raw is raw), None)
        if entry is not None:
            _ahead.pop(next(key for key, e in _ahead.items() if e is entry))
    if entry is not None:  # its bytes were given out by early_bytes, so the thread is done
        return entry.parsed
    return _parse_now(raw)


def _parse_now(raw: bytes) -> Parsed | None:
    import pyarrow as pa
    import pyarrow.json as pj

    body, cut_line = _without_cut_line(raw)
    whole = _one_value(body)
    if _holds(whole, _NULL_HINT) and _holds(whole, _NULL):
        # Arrow reads a key set to null as an absent one: a kind whose only values of a key are null
        # (a live finding event without a module) would lose that column, which the pure parse keeps.
        return None
    if any(_holds(whole, end) for end in _SPELLING_ENDS):
        for quoted, bare in _NONFINITE_SPELLINGS:
            if quoted in body:
                body = body.replace(quoted, bare)
    if not body or body.isspace():
        return Parsed(None, cut_line)
    for block_size in _BLOCK_BYTES:
        try:
            # A BufferReader hands pyarrow the bytes themselves; a BytesIO would copy each block into a
            # new bytes object first (on 80 MB, 20,000 page faults and a tenth of a second of system time).
            table = pj.read_json(pa.BufferReader(body), read_options=pj.ReadOptions(block_size=block_size))
        except pa.ArrowInvalid as exc:
            if _STRADDLES in str(exc):  # a record longer than the block: larger blocks may hold it
                continue
            return None  # a line pyarrow cannot read: parsing it again would fail again
        except pa.ArrowNotImplementedError:
            return None
        return Parsed(table, cut_line)
    return None


def _one_value(body: bytes) -> Any:
    """``body`` as a binary array of one value, without a copy, for pyarrow's string functions."""
    import numpy as np
    import pyarrow as pa

    offsets = pa.py_buffer(np.array([0, len(body)], dtype=np.int64))
    return pa.LargeBinaryArray.from_buffers(pa.large_binary(), 1, [None, offsets, pa.py_buffer(body)])


def _holds(whole: Any, pattern: str) -> bool:
    """Whether RE2's ``pattern`` matches somewhere in `_one_value`'s ``whole``."""
    import pyarrow.compute as pc

    return bool(pc.match_substring_regex(whole, pattern)[0].as_py())


def _without_cut_line(raw: bytes) -> tuple[bytes, int | None]:
    """The file without its last line when that line is not JSON (a writer killed mid-line)."""
    end = len(raw)
    while end and raw[end - 1] in b" \t\r\n":  # not rstrip(): that copies the whole file
        end -= 1
    start = raw.rfind(b"\n", 0, end) + 1
    try:
        json.loads(raw[start:end], parse_constant=str)
    except (ValueError, UnicodeDecodeError):
        return raw[:start], raw.count(b"\n", 0, start) + 1
    return raw, None
