"""The ``diagnose`` entry point: `main` starts reading a long run, then hands over to the commands.

The command group itself (`app`, typer and click, numpy) lives in `diagnose.cli.group`, imported
only once `main` has begun reading: this module imports nothing but the standard library, so that
the parse of a long run file overlaps every import after the interpreter's start. ``app`` is still
importable from here, as it always was.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import Any, NoReturn

# Commands that only read runs and write what they found: once one has returned and its output is
# flushed, nothing is left to finalise, and the process ends at once (as mypy does) instead of tearing
# the interpreter down, which took 0.1-0.25 s of a report of a million steps (pandas, pyarrow and the
# run's arrays freed one object at a time). `run` executes the user's script, whose exit handlers (a
# logger's last flush, the watch closing its run file) must run: it ends the ordinary way.
_ENDS_AT_ONCE = ("report", "check", "plot")


def __getattr__(name: str) -> Any:
    # `from diagnose.cli.app import app` (tests, scripts) gets the command group, imported on first use.
    if name == "app":
        from diagnose.cli.group import app

        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main() -> None:
    command = sys.argv[1] if len(sys.argv) > 1 else None
    if command in _ENDS_AT_ONCE:
        from diagnose.readers import arrow_lines  # the standard library only, until it parses

        # The long run files among the arguments are read from here on, before typer, click and numpy
        # are imported (0.13 s on the benchmark machine) and typer converts the arguments (pydantic,
        # 0.1 s), all of which the parse now overlaps. Any argument is taken for a path (an option's
        # value too): only long JSON Lines files are read, and whatever reader then opens one takes
        # these bytes (under another reader's --format-in the parse is work spent for nothing).
        arrow_lines.read_ahead([Path(argument) for argument in sys.argv[2:]])
        from diagnose.cli import common

        common.freeze_imports = True
        group = common.imported("diagnose.cli.group")  # numpy, typer and click, the collector paused
    else:
        from diagnose.cli import group
    try:
        group.app()
    except SystemExit as exc:
        if command not in _ENDS_AT_ONCE:
            raise
        _end_now(exc.code)


def _end_now(code: Any) -> NoReturn:
    """Exit as ``sys.exit(code)`` would, without the interpreter's teardown."""
    if code is not None and not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe or stream: nothing more reaches it
            stream.flush()
    os._exit(code or 0)
