"""``diagnose plot``: the figure alone (curves, heat maps, findings marked), one column per run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from diagnose.cli import common
from diagnose.errors import ConfigError

IMAGE_FORMATS = ("png", "svg", "pdf")


def plot(
    paths: common.PathsArg,
    output: Annotated[Path, typer.Option("--output", "-o", help="Image file to write (.png, .svg or .pdf).")],
    select: common.SelectOpt = None,
    ignore: common.IgnoreOpt = None,
    settings: common.SetOpt = None,
    format_in: common.FormatInOpt = None,
) -> None:
    """Draw loss, learning rate, gradient norm, memory and per-layer heat maps with the findings marked."""
    image_format = output.suffix.lower().lstrip(".")
    if image_format not in IMAGE_FORMATS:
        raise ConfigError(f"{output}: cannot tell the image format; use a .png, .svg or .pdf name")
    analyses = common.analyze_paths(paths, format_in, common.rule_config(select, ignore, settings))
    from diagnose.report.plots import figure, image_bytes, summary_note

    common.write_file(output, image_bytes(figure(analyses), image_format), paths)
    note = summary_note(len(analyses))
    if note:
        typer.echo(note, err=True)
