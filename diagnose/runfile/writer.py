"""Append-only, batched JSONL writer for run files."""

from __future__ import annotations

import json
import os
import time
import warnings
from pathlib import Path
from typing import Any

from diagnose.runfile import schema

# One line of the run file: compact, strict JSON. Built once: json.dumps with options builds an encoder per call.
_LINE = json.JSONEncoder(separators=(",", ":"), allow_nan=False)


class RunWriter:
    """Buffers records and appends them to a run file.

    Records are written whole-line at a time, at least every ``flush_seconds``
    or ``flush_records`` records, so a crash or kill loses at most the last
    moments of a run and leaves at worst one cut line, which readers tolerate.
    An existing file is appended to (a resumed run), never overwritten.

    One process, one file: the writer holds an advisory lock on its file
    (``flock``, where the platform has it). A second writer that finds the
    path locked by a live one (another process, or another watch in this
    one) writes ``run.pid<PID>.jsonl`` beside it instead, with a warning,
    so two runs never interleave their lines.
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
        self._fh = self._open_own_file()
        self._ensure_line_boundary()

    def _open_own_file(self) -> Any:
        wanted = self.path
        for attempt in range(100):
            fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
            if _lock(fh):
                if self.path != wanted:
                    warnings.warn(
                        f"diagnose: {wanted} is being written by another run; this one goes to {self.path}",
                        RuntimeWarning,
                        stacklevel=5,
                    )
                return fh
            fh.close()
            self.path = schema.process_file(wanted, os.getpid(), attempt)
        raise OSError(f"{wanted}: every per-process file name beside it is in use")

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

    def write(self, record: dict[str, Any]) -> str:
        """Queue ``record``; returns its line as it goes to the file (without the newline)."""
        try:  # most records hold finite numbers only: no walk through them to spell NaN and Inf
            line = _LINE.encode(record)
        except ValueError:  # a NaN or Inf in it
            line = _LINE.encode(schema.encode(record))
        self._pending.append(line)
        if len(self._pending) >= self._flush_records or self.due():
            self.flush()
        return line

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
        self._fh.close()  # releases the lock


def _lock(fh: Any) -> bool:
    """Take the file's advisory lock; False when another writer holds it. Platforms without
    ``fcntl`` (Windows) have no lock, and every writer appends."""
    try:
        import fcntl
    except ImportError:
        return True
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError:  # a file system without locks (some network mounts): append as before
        return True
    return True
