"""``diagnose report``: analyse runs and render the findings (exit 0 whatever they are)."""

from __future__ import annotations

import enum
from typing import Annotated

import typer

from diagnose.cli import common


class Format(str, enum.Enum):
    terminal = "terminal"
    json = "json"
    md = "md"
    html = "html"


def report(
    paths: common.PathsArg,
    format: Annotated[Format, typer.Option("--format", "-f", help="Output format.")] = Format.terminal,
    output: common.OutputOpt = None,
    select: common.SelectOpt = None,
    ignore: common.IgnoreOpt = None,
    settings: common.SetOpt = None,
    format_in: common.FormatInOpt = None,
    show_skipped: Annotated[
        bool, typer.Option("--show-skipped", help="List every rule that was not evaluated and the data it lacked.")
    ] = False,
) -> None:
    """Analyse one or more runs and report what went wrong and what to do about it."""
    common.read_ahead(paths, format_in)  # a long run is read while the rest is imported
    config = common.rule_config(select, ignore, settings)
    analyses = common.analyze_paths(paths, format_in, config)
    if format is not Format.terminal:
        from diagnose.report import render

        common.write_output(render(analyses, format.value), output, paths)
        return
    from diagnose.report.terminal import print_report, render_terminal

    if output is None:
        print_report(analyses, common.console(), show_skipped=show_skipped)
        return
    common.write_output(render_terminal(analyses, show_skipped=show_skipped), output, paths)
