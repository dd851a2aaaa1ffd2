"""Append-only, batched JSONL writer for run files."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from diagnose.runfile import schema


class RunWriter:
    """Buffers records and appends them to a run file.

    Records are written whole-line at a time, at least every ``flush_seconds``
    or ``flush_records`` records, so a crash or kill loses at most the last
    moments of a run and leaves at worst one cut line, which readers tolerate.
    An existing file is appended to (a resumed run), never overwritten.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        flush_seconds: float = 1.0,
        flush_records: int = 1000,
    ) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._flush_seconds = flush_seconds
        self._flush_records = flush_records
        self._pending: list[str] = []
        self._last_flush = time.monotonic()
        self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self._ensure_line_boundary()

    def _ensure_line_boundary(self) -> None:
        """A previous writer killed mid-line must not glue its fragment to our first record."""
        if self.path.stat().st_size == 0:
            return
        with open(self.path, "rb") as fh:
            fh.seek(-1, os.SEEK_END)
            if fh.read(1) != b"\n":
                self._fh.write("\n")

    @property
    def closed(self) -> bool:
        return self._fh.closed

    def write(self, record: dict[str, Any]) -> None:
        self._pending.append(json.dumps(schema.encode(record), separators=(",", ":"), allow_nan=False))
        if len(self._pending) >= self._flush_records or self.due():
            self.flush()

    def due(self) -> bool:
        """True when the time-based flush interval has passed."""
        return time.monotonic() - self._last_flush >= self._flush_seconds

    def flush(self) -> None:
        if self._fh.closed:
            return
        if self._pending:
            self._fh.write("\n".join(self._pending) + "\n")
            self._pending.clear()
        self._fh.flush()
        self._last_flush = time.monotonic()

    def close(self) -> None:
        if self._fh.closed:
            return
        self.flush()
        self._fh.close()
