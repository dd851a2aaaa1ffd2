"""``diagnose preflight module:function``: check a model before training, exit like ``diagnose check``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from diagnose.cli import common
from diagnose.report.terminal import print_report
from diagnose.rules.base import Severity
from diagnose.verdict import DEFAULT_FAIL_ON, evaluate

FINDINGS_FAILED = 1


def preflight(
    target: Annotated[
        str,
        typer.Argument(
            help="MODULE:FUNCTION (or FILE.py:FUNCTION) returning model, loss_fn, batch or loader, optimizer "
            "(or a factory) and metadata, as a dict or an object.",
            metavar="MODULE:FUNCTION",
            show_default=False,
        ),
    ],
    path: Annotated[Path, typer.Option("--path", help="Write the preflight run file here (replaced).")] = Path(
        "diagnose-preflight.jsonl"
    ),
    fail_on: Annotated[
        Severity | None,
        typer.Option(
            "--fail-on",
            help="Lowest severity that fails (default: [tool.diagnose] fail-on, else warning).",
            case_sensitive=False,
        ),
    ] = None,
    select: common.SelectOpt = None,
    ignore: common.IgnoreOpt = None,
    settings: common.SetOpt = None,
    budget: Annotated[
        float,
        typer.Option(
            "--budget",
            help="Wall-clock seconds the experiments share; one that reaches the end stops and is not judged.",
            min=0.1,
        ),
    ] = 30.0,
) -> None:
    """Run the preflight experiments on copies of a model; fail (exit 1) on findings at or above --fail-on."""
    from diagnose.probes.preflight.pieces import Pieces, load_function
    from diagnose.probes.preflight.runner import RULES, time_spent
    from diagnose.probes.preflight.runner import preflight as run_preflight

    config = common.rule_config(select or [RULES], ignore, settings, fail_on.value if fail_on else None)
    pieces = Pieces.of(load_function(target)())
    analysis = run_preflight(
        pieces.model,
        pieces.loss_fn,
        pieces.batch,
        pieces.optimizer,
        pieces.metadata,
        path,
        config=config,
        budget_s=budget,
    )
    result = evaluate([analysis], fail_on=config.fail_on or DEFAULT_FAIL_ON, config=config)
    console = Console(highlight=False)
    print_report([analysis], console)
    console.print(time_spent(analysis.run), markup=False)
    console.print(
        result.summary().replace("check", "preflight", 1),
        style="bold green" if result.passed else "bold red",
        markup=False,
    )
    if not result.passed:
        raise typer.Exit(FINDINGS_FAILED)
