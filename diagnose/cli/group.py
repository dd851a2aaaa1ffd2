"""The ``diagnose`` command group: one module per subcommand, assembled here (the entry point,
`diagnose.cli.app.main`, imports this once it has begun reading a long run).

Exit codes, as linters use them: 0 success, 1 findings at or above
``--fail-on`` or an unmet expectation (``check`` and ``preflight``), 2 a usage,
input or configuration error, shown as one line ``diagnose: error: ...``, 3 a
run ``check`` could not judge. ``run`` passes on the script's own exit code (1
when it raised, 130 after Ctrl-C) and exits 3 when ``--stop-on`` stopped
training. README.md's table lists them all (tests/test_readme.py holds it to
the code).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, MutableMapping
from typing import TYPE_CHECKING, Annotated, Any

import numpy as np
import typer
import typer.main
from typer.core import TyperGroup
from typer.models import CommandInfo

from diagnose import __version__
from diagnose.errors import DiagnoseError
from diagnose.escaping import neutralise_workflow_command, visible

if TYPE_CHECKING:
    import click

USAGE_ERROR = 2
# The UsageError of the click that typer runs on: its own copy where it vendors click (typer >= 0.25),
# click's before. Found through typer's BadParameter, so that click itself is not imported for it (0.02 s).
_USAGE_ERRORS = tuple(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")


# Each command, in the order --help lists them: its module in diagnose.cli (the function of its name)
# and its click settings. A command's module is imported only when that command runs (or --help
# lists them all): `diagnose report` does not pay for what `plot`, `preflight` or `run` import.
_COMMANDS: dict[str, dict[str, Any]] = {
    "report": {},
    "check": {},
    "plot": {},
    "preflight": {},
    "rules": {},
    "explain": {},
    "demo": {},
    # Everything after SCRIPT belongs to the script, options included.
    "run": {"allow_interspersed_args": False, "ignore_unknown_options": True},
}


class _CommandTable(MutableMapping[str, "click.Command"]):
    """The commands by name; each built from its module the first time it is looked up."""

    def __init__(self, build: Callable[[str], click.Command]) -> None:
        self._build = build
        self._built: dict[str, click.Command] = {}
        self._names = list(_COMMANDS)

    def __getitem__(self, name: str) -> click.Command:
        if name not in self._built:
            if name not in self._names:
                raise KeyError(name)
            self._built[name] = self._build(name)
        return self._built[name]

    def __setitem__(self, name: str, command: click.Command) -> None:
        self._built[name] = command
        if name not in self._names:
            self._names.append(name)

    def __delitem__(self, name: str) -> None:
        self._names.remove(name)
        self._built.pop(name, None)

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._names))

    def __len__(self) -> int:
        return len(self._names)


class _Commands(TyperGroup):
    """Turns a `DiagnoseError`, a usage error or an unreadable path into one line on stderr and exit 2.

    Floating-point warnings are off: runs hold values near the float limit, and numpy's overflow
    warnings would print source lines that say nothing to the user.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.commands = _CommandTable(_build_command)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)  # the names, without importing every command's module

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


def _build_command(name: str) -> click.Command:
    function = getattr(importlib.import_module(f"diagnose.cli.{name}"), name)
    info = CommandInfo(name=name, callback=function, context_settings=_COMMANDS[name] or None)
    return typer.main.get_command_from_info(
        info, pretty_exceptions_short=app.pretty_exceptions_short, rich_markup_mode=app.rich_markup_mode
    )
