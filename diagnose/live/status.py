"""A status line per recorded run, redrawn in place on a terminal: step, loss, gradient norm, steps/s, findings.

Drawn with rich's ``Live`` on standard error, only when standard error is a
terminal; anywhere else (a file, a pipe, CI) nothing is drawn at all.
Updates come when the watch flushes (about once a second), so the line
costs nothing per step.
"""

from __future__ import annotations

import math
import time
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.text import Text


def _number(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, (int, float)) and not isinstance(value, bool) else "-"


class StatusBoard:
    """One line per run; created by `status_board`, shared by every watch of the process."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self._rows: dict[str, tuple[int, float, str]] = {}  # name -> (step, time, line)
        self._live = Live(
            console=console, auto_refresh=False, transient=True, redirect_stdout=True, redirect_stderr=True
        )
        self._started = False

    def update(self, name: str, step: int, fields: dict[str, Any], findings: int) -> None:
        now = time.monotonic()
        before = self._rows.get(name)
        rate = (step - before[0]) / (now - before[1]) if before and now > before[1] and step > before[0] else None
        speed = f"{rate:.3g}" if rate is not None and math.isfinite(rate) else "-"
        line = (
            f"{name}: step {step}  loss {_number(fields.get('loss'))}  grad norm {_number(fields.get('grad_norm'))}"
            f"  {speed} steps/s  findings {findings}"
        )
        self._rows[name] = (step, now, line)
        self._draw()

    def remove(self, name: str) -> None:
        self._rows.pop(name, None)
        if not self._rows and self._started:
            self._live.stop()
            self._started = False
        elif self._rows:
            self._draw()

    def _draw(self) -> None:
        if not self._started:
            self._live.start()
            self._started = True
        self._live.update(Text("\n".join(line for _, _, line in self._rows.values()), style="dim"), refresh=True)


_board: StatusBoard | None = None


def status_board(console: Console | None = None) -> StatusBoard | None:
    """The process's status board, or None when standard error is not a terminal."""
    global _board
    console = console or Console(stderr=True, highlight=False)
    if not console.is_terminal:
        return None
    if _board is None:
        _board = StatusBoard(console)
    return _board
