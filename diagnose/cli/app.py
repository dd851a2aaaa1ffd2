"""The ``diagnose`` command: one module per subcommand, assembled here.

Exit codes, as linters use them: 0 success, 1 findings at or above
``--fail-on`` (``check`` only), 2 a usage, input or configuration error, shown
as one line ``diagnose: error: ...``. ``run`` passes on the script's own exit
code (1 when it raised, 130 after Ctrl-C) and exits 3 when ``--stop-on``
stopped training.
"""

from __future__ import annotations

from typing import Annotated, Any

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

USAGE_ERROR = 2


class _Commands(TyperGroup):
    """Turns a `DiagnoseError` from any command into one line on stderr and exit 2."""

    def invoke(self, ctx: typer.Context) -> Any:
        try:
            return super().invoke(ctx)
        except DiagnoseError as exc:
            typer.echo(f"diagnose: error: {exc}", err=True)
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
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.", is_eager=True,
                                          callback=_print_version)] = False,
) -> None:
    """Training diagnostics for PyTorch: find what went wrong in a run and what to do about it."""


for command in (report, check, plot, preflight, rules, explain, demo):
    app.command(command.__name__)(command)
# Everything after SCRIPT belongs to the script, options included.
app.command("run", context_settings={"allow_interspersed_args": False, "ignore_unknown_options": True})(run)


def main() -> None:
    app()
