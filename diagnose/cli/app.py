"""The ``diagnose`` command: one module per subcommand, assembled here.

Exit codes, as linters use them: 0 success, 1 findings at or above
``--fail-on`` (``check`` only), 2 a usage, input or configuration error, shown
as one line ``diagnose: error: ...``. ``run`` passes on the script's own exit
code (1 when it raised, 130 after Ctrl-C) and exits 3 when ``--stop-on``
stopped training.
"""

from __future__ import annotations

from typing import Annotated, Any

import click
import numpy as np
import typer
from typer.core import TyperGroup

from diagnose import __version__
from diagnose.cli.check import check
from diagnose.cli.demo import demo
from diagnose.cli.explain import explain
from diagnose.cli.plot import plot
from diagnose.cli.preflight import preflight
from diagnose.cli.report import report
from diagnose.cli.rules import rules
from diagnose.cli.run import run
from diagnose.errors import DiagnoseError
from diagnose.escaping import neutralise_workflow_command, visible

USAGE_ERROR = 2
# click's UsageError, and the copy of it that typer raises where it vendors click (typer >= 0.25).
_USAGE_ERRORS = tuple({click.UsageError, *(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")})


class _Commands(TyperGroup):
    """Turns a `DiagnoseError`, a usage error or an unreadable path into one line on stderr and exit 2.

    Floating-point warnings are off: runs hold values near the float limit, and numpy's overflow
    warnings would print source lines that say nothing to the user.
    """

    def invoke(self, ctx: typer.Context) -> Any:
        try:
            with np.errstate(all="ignore"):
                return super().invoke(ctx)
        except DiagnoseError as exc:
            _error(str(exc))
        except _USAGE_ERRORS as exc:
            command = exc.ctx.command_path if exc.ctx is not None else "diagnose"
            _error(f"{exc.format_message()} (see '{command} --help')")
        except OSError as exc:
            _error(f"{exc.filename}: {exc.strerror}" if exc.filename else str(exc))


def _error(message: str) -> None:
    typer.echo(neutralise_workflow_command(f"diagnose: error: {visible(' '.join(message.split()))}"), err=True)
    raise typer.Exit(USAGE_ERROR) from None


app = typer.Typer(
    cls=_Commands,
    name="diagnose",
    help="Training diagnostics for PyTorch: find what went wrong in a run and what to do about it.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"diagnose {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool, typer.Option("--version", help="Print the version and exit.", is_eager=True, callback=_print_version)
    ] = False,
) -> None:
    """Training diagnostics for PyTorch: find what went wrong in a run and what to do about it."""


for command in (report, check, plot, preflight, rules, explain, demo):
    app.command(command.__name__)(command)
# Everything after SCRIPT belongs to the script, options included.
app.command("run", context_settings={"allow_interspersed_args": False, "ignore_unknown_options": True})(run)


def main() -> None:
    app()
