"""What several commands share: option types, reading runs, configuration, writing output."""

from __future__ import annotations

import gc
import importlib
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Annotated, Any

import typer

from diagnose.errors import InputError
from diagnose.escaping import WorkflowSafeStream, in_github_actions, neutralise_workflow_command, visible
from diagnose.readers import arrow_lines
from diagnose.readers.formats import FORMATS

# The readers, the rules and rich are imported where they are used: a command first starts reading
# a long run (`read_ahead`), and pays for pandas and the rules while that goes on.
if TYPE_CHECKING:
    from rich.console import Console

    from diagnose.rules.config import RuleConfig
    from diagnose.rules.engine import Analysis
    from diagnose.run import Run

PathsArg = Annotated[list[Path], typer.Argument(help="Run files, or folders holding run files.", show_default=False)]
FormatInOpt = Annotated[
    str | None,
    typer.Option(
        "--format-in",
        metavar="READER",
        help=f"Read the inputs with this reader instead of recognising them ({', '.join(FORMATS)}).",
    ),
]
SelectOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--select",
        help="Run only these rules (codes, code prefixes or names; comma lists); repeatable.",
        metavar="CODE",
    ),
]
IgnoreOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--ignore", help="Skip these rules (codes, code prefixes or names; comma lists); repeatable.", metavar="CODE"
    ),
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        help="Override a rule threshold, e.g. --set OVF001.min_rise=0.1; repeatable.",
        metavar="CODE.name=value",
    ),
]
OutputOpt = Annotated[
    Path | None, typer.Option("--output", "-o", help="Write to this file instead of standard output.")
]


def read_ahead(paths: Sequence[Path], format_in: str | None = None) -> None:
    """Begin reading and parsing the long run files among ``paths`` in the background (see
    `arrow_lines.read_ahead`): a command calls this first, before it imports what analyses them."""
    arrow_lines.read_ahead(paths, format_in)


def load_runs(paths: Sequence[Path], format_in: str | None = None) -> list[Run]:
    """Every run in the given files and folders, in the order given."""
    from diagnose.readers import load_all

    return [run for path in paths for run in load_all(path, format=format_in)]


def rule_config(
    select: list[str] | None = None,
    ignore: list[str] | None = None,
    settings: list[str] | None = None,
    fail_on: str | None = None,
) -> RuleConfig:
    """``[tool.diagnose]`` from pyproject.toml with the command-line options on top."""
    load_config = imported("diagnose.rules.config").load_config  # the rules, and pandas with them

    return load_config().merged(select=select or (), ignore=ignore or (), settings=settings or (), fail_on=fail_on)


# Set by `diagnose.cli.app.main` for a command whose process ends without the interpreter's teardown,
# where no finalizer runs anyway: its first import of the rules may freeze what the collector tracks.
freeze_imports = False


def imported(name: str) -> ModuleType:
    """The module ``name``; under `freeze_imports`, imported the first time with the cyclic garbage
    collector off, and what it tracks by then frozen (never walked again). An import makes modules,
    classes and functions that live as long as the process, which the collector walked a couple of
    hundred times for nothing while the rules and pandas were imported: 0.05-0.07 s of the CPU of a
    report of a million steps, 0.01 s left (``gc.callbacks``; the collections after the import found
    nothing to free either)."""
    if not freeze_imports or name in sys.modules or not gc.isenabled():
        return importlib.import_module(name)
    gc.disable()
    try:
        return importlib.import_module(name)
    finally:
        gc.freeze()
        gc.enable()


def analyze_paths(paths: Sequence[Path], format_in: str | None, config: RuleConfig) -> list[Analysis]:
    """Every run in the given files and folders analysed, in the order given.

    The files of a folder are read and analysed in worker processes (see
    `map_in_workers`) when there are at least `PARALLEL_FROM` of them; the order, and so every report, stays that of a
    serial pass.
    """
    from diagnose.readers import load_all, registry
    from diagnose.rules.engine import analyze

    analyses: list[Analysis] = []
    for path in paths:
        if not registry.is_plain_folder(path, format_in):
            analyses += [analyze(run, config) for run in load_all(path, format=format_in)]
            continue
        sources, notes = registry.folder_sources(path)
        tasks = [(path, source, found, format_in, config) for source, found in sources]
        analysed = _map(_analyse_source, tasks)
        analyses += registry.gather_folder(path, analysed, notes, lambda analysis: analysis.run)
    return analyses


# Worker processes pay off from a few files on (each costs ~0.1 s to start and
# to send its runs back, measured with benchmarks/many_runs.py).
PARALLEL_FROM = 8


def _map(work: Callable[[Any], Any], tasks: list[Any]) -> list[Any]:
    from diagnose.workers import map_in_workers

    return map_in_workers(work, tasks, parallel_from=PARALLEL_FROM)[0]


def _analyse_source(task: tuple[Path, Path, str, str | None, RuleConfig]) -> tuple[list[Analysis], str | None]:
    from diagnose.readers import registry
    from diagnose.report.summary import settle_report_facts
    from diagnose.rules.engine import analyze

    folder, source, found, format_in, config = task
    runs, failure = registry.read_source(folder, source, found, format_in)
    analyses = [analyze(run, config) for run in runs]
    for run in runs:  # what every report asks of each run, worked out here in parallel
        settle_report_facts(run)
    return analyses, failure


def console() -> Console:
    """The console commands print to; under GitHub Actions no line of it can be a workflow command."""
    from rich.console import Console

    return Console(highlight=False, file=WorkflowSafeStream(sys.stdout) if in_github_actions() else None)


def write_output(text: str, output: Path | None, inputs: Sequence[Path] = ()) -> None:
    """Print ``text``, or write it to ``output`` (never over one of the inputs)."""
    if output is None:
        if in_github_actions():
            text = "\n".join(neutralise_workflow_command(line) for line in text.split("\n"))
        sys.stdout.write(text)
        return
    write_file(output, text.encode("utf-8"), inputs)


def write_file(output: Path, data: bytes, inputs: Sequence[Path] = ()) -> None:
    if any(output.resolve() == p.resolve() for p in inputs):
        raise InputError(f"{output}: is one of the inputs; choose another output file")
    try:
        output.write_bytes(data)
    except OSError as exc:
        raise InputError(f"{output}: cannot write ({exc.strerror})") from None
    typer.echo(visible(f"wrote {output}"), err=True)
