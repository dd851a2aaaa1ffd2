"""``diagnose run [options] SCRIPT [ARGS...]``: record an unmodified training script, then report.

The script runs in this process as ``python SCRIPT ARGS...`` would run it
(``sys.argv``, ``__main__``, its folder first on ``sys.path``), with the
probes attached to every model/optimizer pair it trains (see
:mod:`diagnose.live.session`): one run file per pair in ``--out``, live
findings on standard error while it runs, and the full report when it ends,
also after an exception or Ctrl-C.

Exit code: the script's own (0, or what it passed to ``sys.exit``); 1 when
it raised; 130 after Ctrl-C; 3 when ``--stop-on`` stopped training; 2 for a
usage error of ``diagnose run`` itself.
"""

from __future__ import annotations

import runpy
import sys
import traceback
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from diagnose.errors import ConfigError, InputError
from diagnose.live.policy import StopPolicy, TrainingStopped

STOPPED = 3
RAISED = 1
INTERRUPTED = 130


def run(
    script: Annotated[
        Path, typer.Argument(help="The training script, run as `python SCRIPT ARGS...` would.", show_default=False)
    ],
    args: Annotated[
        list[str] | None, typer.Argument(help="Arguments passed to the script.", show_default=False)
    ] = None,
    out: Annotated[Path, typer.Option("--out", help="Folder for the run files (one per model/optimizer pair).")] = Path(
        "diagnose-runs"
    ),
    preset: Annotated[str, typer.Option("--preset", help="Probe preset: minimal, default or full.")] = "default",
    stop_on: Annotated[
        str | None,
        typer.Option(
            "--stop-on",
            metavar="SEVERITY|CODES",
            help="End training at the next step when a live finding matches: a severity (error, warning, info) "
            "or comma-separated rule codes.",
        ),
    ] = None,
    metadata: Annotated[
        str | None,
        typer.Option(
            "--metadata",
            metavar="KEY=VALUE,...",
            help="What the rules should know, e.g. task=multiclass,num_classes=10.",
        ),
    ] = None,
    status: Annotated[
        bool, typer.Option("--status/--no-status", help="A status line on a terminal while it trains.")
    ] = True,
) -> None:
    """Run a training script unchanged with the probes attached; report what went wrong."""
    if not script.is_file():
        raise InputError(f"{script}: no such script")
    stops = [part for part in (stop_on or "").split(",") if part.strip()] or None
    StopPolicy(stops)  # a bad --stop-on is a usage error before the script starts
    from diagnose.live.session import Session  # imports torch: only once the options are known good

    session = Session(out, script.stem, preset=preset, metadata=parse_metadata(metadata), stop_on=stops, status=status)
    code = _run_script(script, args or [], session)
    _report(session.paths)
    raise typer.Exit(code)


def parse_metadata(text: str | None) -> dict[str, Any]:
    """``task=multiclass,num_classes=10`` -> ``{"task": "multiclass", "num_classes": 10}``."""
    found: dict[str, Any] = {}
    for item in (text or "").split(","):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--metadata {item!r}: expected KEY=VALUE")
        found[key.strip()] = _value(value.strip())
    return found


def _value(text: str) -> Any:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _run_script(script: Path, args: list[str], session: Any) -> int:
    saved_argv, saved_path = sys.argv, list(sys.path)
    sys.argv = [str(script), *args]
    sys.path.insert(0, str(script.resolve().parent))
    session.start()
    try:
        runpy.run_path(str(script), run_name="__main__")
        return 0
    except SystemExit as exc:
        return _exit_code(exc.code)
    except TrainingStopped as stopped:
        typer.echo(f"diagnose run: {stopped}", err=True)
        return STOPPED
    except KeyboardInterrupt:
        typer.echo("diagnose run: interrupted", err=True)
        return INTERRUPTED
    except BaseException:  # noqa: BLE001 - the script's failure is shown as Python would show it
        traceback.print_exc()
        return RAISED
    finally:
        session.close()
        sys.argv, sys.path[:] = saved_argv, saved_path


def _exit_code(code: Any) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    typer.echo(str(code), err=True)  # sys.exit("message") prints it and exits 1
    return 1


def _report(paths: list[Path]) -> None:
    from diagnose.cli import common
    from diagnose.report.terminal import print_report

    written = [p for p in paths if p.is_file()]
    if not written:
        typer.echo("diagnose run: the script trained no model with an optimizer; nothing was recorded", err=True)
        return
    typer.echo("diagnose run: recorded " + ", ".join(str(p) for p in written), err=True)
    print_report(common.analyze_paths(written, None, common.rule_config()), Console(highlight=False))
