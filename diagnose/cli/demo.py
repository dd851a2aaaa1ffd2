"""``diagnose demo``: train a small model twice (healthy, then learning rate 100x too high) and report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from diagnose.cli import common
from diagnose.errors import InputError
from diagnose.report.html import render_html
from diagnose.report.terminal import print_report
from diagnose.rules.config import RuleConfig


def demo(
    out: Annotated[Path, typer.Option("--out", help="Folder for the run files and report.html.")] = Path(
        "diagnose-demo"
    ),
    steps: Annotated[int, typer.Option("--steps", min=50, help="Optimizer steps per run.")] = 400,
) -> None:
    """Train a small classifier live, healthy and with a fault, and diagnose both runs."""
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    console = Console(highlight=False)
    paths = _train_all(out, steps, console)
    analyses = common.analyze_paths(paths, None, RuleConfig())
    common.write_file(out / "report.html", render_html(analyses).encode("utf-8"))
    print_report(analyses, console)
    console.print(
        f"\nRun files and report.html are in {out}/. Try: diagnose explain {_first_code(analyses)}", markup=False
    )


def _train_all(out: Path, steps: int, console: Console) -> list[Path]:
    from diagnose import demo as training  # imports torch: only this command pays for it

    columns = (TextColumn("{task.description:<24}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    paths = []
    with Progress(*columns, console=console) as progress:
        for run in training.RUNS:
            task = progress.add_task(f"training {run.name}", total=steps)
            path = out / f"{run.name}.jsonl"
            training.train(
                path, run, steps=steps, on_step=lambda step, task=task: progress.update(task, completed=step)
            )
            paths.append(path)
    return paths


def _first_code(analyses) -> str:
    codes = [code for a in analyses for code in a.codes]
    return codes[0] if codes else "LR001"
