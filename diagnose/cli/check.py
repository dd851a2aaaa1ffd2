"""``diagnose check``: exit 1 when a run has a finding at or above ``--fail-on``, for CI and smoke tests."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from diagnose.checks import DEFAULT_FAIL_ON, CheckResult, evaluate
from diagnose.cli import common
from diagnose.escaping import visible
from diagnose.report.terminal import print_report
from diagnose.rules.base import Severity

FINDINGS_FAILED = 1


def check(
    paths: common.PathsArg,
    fail_on: Annotated[Severity | None, typer.Option(
        "--fail-on", help="Lowest severity that fails the check (default: [tool.diagnose] fail-on, else warning).",
        case_sensitive=False)] = None,
    final_loss_below: Annotated[float | None, typer.Option(
        "--expect-final-loss-below", help="Fail unless every run's last training loss is below this.",
        metavar="X")] = None,
    expect_no: Annotated[list[str] | None, typer.Option(
        "--expect-no", help="Fail when this rule fires at all, whatever its severity; repeatable.",
        metavar="CODE")] = None,
    junit: Annotated[Path | None, typer.Option("--junit", help="Also write JUnit XML to this file.")] = None,
    select: common.SelectOpt = None,
    ignore: common.IgnoreOpt = None,
    settings: common.SetOpt = None,
    format_in: common.FormatInOpt = None,
) -> None:
    """Analyse runs and fail (exit 1) on findings at or above --fail-on or on unmet expectations."""
    config = common.rule_config(select, ignore, settings, fail_on.value if fail_on else None)
    analyses = common.analyze_paths(paths, format_in, config)
    result = evaluate(analyses, fail_on=config.fail_on or DEFAULT_FAIL_ON, config=config,
                      final_loss_below=final_loss_below, forbidden=expect_no or ())
    _print(result)
    if junit is not None:
        from diagnose.checks.junit import render_junit

        common.write_file(junit, render_junit(result).encode("utf-8"), paths)
    if not result.passed:
        raise typer.Exit(FINDINGS_FAILED)


def _print(result: CheckResult) -> None:
    console = common.console()
    print_report(result.analyses, console)
    for expectation in result.expectations:
        mark = f"not met: {expectation.failure}" if expectation.failure else "met"
        console.print(visible(f"expect {expectation.label} (run '{expectation.run}'): {mark}"), markup=False)
    console.print(visible(result.summary()), style="bold green" if result.passed else "bold red", markup=False)
    if os.environ.get("GITHUB_ACTIONS"):
        from diagnose.checks.annotations import annotations

        typer.echo("\n".join(annotations(result)))
