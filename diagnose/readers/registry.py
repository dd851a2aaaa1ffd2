"""Choose a reader for a path and read it into `Run` objects."""

from __future__ import annotations

import warnings as _warnings
from pathlib import Path

from diagnose.errors import InputError
from diagnose.readers.native import read_jsonl
from diagnose.run import Run


def load_all(path: str | Path, *, format: str | None = None) -> list[Run]:
    """Read every run held by ``path`` (a file may hold several appended runs)."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    chosen = format or "jsonl"
    if chosen not in ("jsonl", "diagnose"):
        raise InputError(f"{path}: unknown input format {chosen!r}")
    return read_jsonl(path)


def load(path: str | Path, *, format: str | None = None, index: int = -1) -> Run:
    """Read one run. When the file holds several, take ``index`` (default: the last)."""
    runs = load_all(path, format=format)
    if len(runs) > 1:
        _warnings.warn(
            f"{Path(path).name} holds {len(runs)} runs; using run {index % len(runs) + 1} "
            "(pass index= or use diagnose.load_all)",
            stacklevel=2,
        )
    return runs[index]
