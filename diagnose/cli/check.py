"""``diagnose check``: exit 1 when a run has a finding at or above ``--fail-on``, for CI and smoke tests."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from diagnose.cli import common
from diagnose.escaping import visible
from diagnose.levels import DEFAULT_FAIL_ON, DEFAULT_REQUIRE, REQUIREMENTS, Severity

if TYPE_CHECKING:
    from diagnose.verdict import Verdict

FINDINGS_FAILED = 1
NOT_JUDGED = 3


def check(
    paths: common.PathsArg,
    fail_on: Annotated[
        Severity | None,
        typer.Option(
            "--fail-on",
            help="Lowest severity that fails the check (default: [tool.diagnose] fail-on, else warning).",
            case_sensitive=False,
        ),
    ] = None,
    final_loss_below: Annotated[
        float | None,
        typer.Option(
            "--expect-final-loss-below", help="Fail unless every run's last training loss is below this.", metavar="X"
        ),
    ] = None,
    expect_final: Annotated[
        list[str] | None,
        typer.Option(
            "--expect-final",
            help="Fail unless every run's last value of a metric meets this bound, e.g. "
            "'val_loss<0.5' or 'val_accuracy>=0.9' (NaN never does); repeatable.",
            metavar="METRIC<X",
        ),
    ] = None,
    require: Annotated[
        str,
        typer.Option(
            "--require",
            help=f"What a run must hold to pass: {' or '.join(REQUIREMENTS)}. With train-loss (the "
            "default) a run without a training loss of enough points to judge exits 3.",
            metavar="WHAT",
        ),
    ] = DEFAULT_REQUIRE,
    expect_no: Annotated[
        list[str] | None,
        typer.Option(
            "--expect-no",
            help="Fail when this rule fires at all, whatever its severity (codes, prefixes, names; "
            "comma lists); repeatable.",
            metavar="CODE",
        ),
    ] = None,
    junit: Annotated[Path | None, typer.Option("--junit", help="Also write JUnit XML to this file.")] = None,
    select: common.SelectOpt = None,
    ignore: common.IgnoreOpt = None,
    settings: common.SetOpt = None,
    format_in: common.FormatInOpt = None,
) -> None:
    """Analyse runs and fail (exit 1) on findings at or above --fail-on or on unmet expectations;
    exit 3 when a run could not be judged (no training loss, or too few points of it)."""
    common.read_ahead(paths, format_in)  # a long run is read while the rest is imported
    from diagnose.verdict import evaluate

    config = common.rule_config(select, ignore, settings, fail_on.value if fail_on else None)
    analyses = common.analyze_paths(paths, format_in, config)
    result = evaluate(
        analyses,
        fail_on=config.fail_on or DEFAULT_FAIL_ON,
        config=config,
        final_loss_below=final_loss_below,
        forbidden=expect_no or (),
        finals=expect_final or (),
        require=require,
    )
    _print(result)
    if junit is not None:
        from diagnose.report.junit import render_junit

        common.write_file(junit, render_junit(result).encode("utf-8"), paths)
    if result.failed:
        raise typer.Exit(FINDINGS_FAILED)
    if result.unjudged:
        raise typer.Exit(NOT_JUDGED)


def _print(result: Verdict) -> None:
    from diagnose.report.terminal import print_report

    console = common.console()
    print_report(result.analyses, console)
    for expectation in result.expectations:
        mark = f"not met: {expectation.failure}" if expectation.failure else "met"
        console.print(visible(f"expect {expectation.label} (run '{expectation.run}'): {mark}"), markup=False)
    console.print(visible(result.summary()), style="bold green" if result.passed else "bold red", markup=False)
    if os.environ.get("GITHUB_ACTIONS"):
        from diagnose.report.ci_annotations import annotations

        typer.echo("\n".join(annotations(result)))
