"""What a report of a long run imports: scipy only where a view really needs it, and of the command
line only what the command run needs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from diagnose import curves


def test_a_json_report_of_a_long_run_does_not_import_scipy(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    steps = int(curves.SHAPE_POINTS * 1.2)  # long enough for the reduced views and the columnar reader
    lines = [json.dumps({"kind": "meta", "schema": "diagnose.run/1", "name": "long"})]
    for step, noise in zip(range(1, steps + 1), rng.normal(0, 0.02, steps), strict=True):
        loss = 2.3 * np.exp(-step / (steps / 5)) + 0.2 + noise
        lines.append(f'{{"kind":"step","step":{step},"loss":{loss:.6g},"lr":0.001,"grad_norm":{1 + noise:.6g}}}')
        if step % 1000 == 0:
            lines.append(f'{{"kind":"eval","step":{step},"val_loss":{loss + 0.05:.6g}}}')
    run = tmp_path / "long.jsonl"
    run.write_text("\n".join(lines) + "\n")
    found = _report_in_a_fresh_process(run, "'scipy' in sys.modules", f"[m for m in {UNNEEDED!r} if m in sys.modules]")
    assert found == ["0", "True", "False", "[]"]


def _report_in_a_fresh_process(run: Path, *facts: str) -> list[str]:
    """The exit code of a JSON report of ``run`` in a new interpreter, whether it wrote one, and each
    of ``facts`` (expressions) evaluated after it."""
    code = (
        "import sys; from typer.testing import CliRunner; from diagnose.cli.app import app; "
        f"result = CliRunner().invoke(app, ['report', {str(run)!r}, '-f', 'json']); "
        f"print(result.exit_code, len(result.stdout) > 0, {', '.join(facts)})"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return result.stdout.strip().split(maxsplit=1 + len(facts))


# Other commands' modules, and the terminal renderer (rich), which a JSON report has no use for.
UNNEEDED = ("diagnose.cli.plot", "diagnose.cli.preflight", "diagnose.cli.run", "diagnose.report.terminal", "rich.table")


@pytest.mark.xfail(
    strict=True,
    reason="issue 15: the rules still read pd.Series (Run.series, diagnose.curves); the native reader and "
    "Run hand over numpy columns (run.Columns), the next step is the curves and the rules",
)
def test_a_json_report_of_a_native_run_does_not_import_pandas(tmp_path: Path) -> None:
    lines = [json.dumps({"kind": "meta", "schema": "diagnose.run/1", "name": "plain"})]
    lines += [f'{{"kind":"step","step":{step},"loss":{2.0 / step:.6g},"lr":0.001}}' for step in range(1, 301)]
    lines += [f'{{"kind":"eval","step":{step},"val_loss":{2.1 / step:.6g}}}' for step in range(100, 301, 100)]
    run = tmp_path / "plain.jsonl"
    run.write_text("\n".join(lines) + "\n")
    assert _report_in_a_fresh_process(run, "'pandas' in sys.modules") == ["0", "True", "False"]


@pytest.mark.parametrize("ends_at_once", [True, False])
def test_the_rules_are_imported_with_the_collector_paused_only_where_the_process_ends_at_once(
    ends_at_once: bool,
) -> None:
    code = (
        "import gc; from diagnose.cli import common; "
        f"common.freeze_imports = {ends_at_once}; common.rule_config(); "
        "print(gc.isenabled(), gc.get_freeze_count() > 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["True", str(ends_at_once)]


# What `diagnose report` imports before it can use a parse: numpy and typer for the command line,
# pydantic when typer converts the arguments.
HEAVY = ("numpy", "typer", "pydantic")


def test_a_report_begins_to_parse_a_long_run_before_it_imports_the_command_line(tmp_path: Path) -> None:
    run = tmp_path / "long.jsonl"
    run.write_text("\n".join(f'{{"kind":"step","step":{step},"loss":{1 / step:.6g}}}' for step in range(1, 200)))
    code = (
        f"import sys; HEAVY = {HEAVY!r}; from diagnose.readers import arrow_lines; arrow_lines.MIN_BYTES = 100; "
        "parse = arrow_lines._read_all; seen = lambda: print(*(m in sys.modules for m in HEAVY), flush=True); "
        "arrow_lines._read_all = lambda entries: (seen(), parse(entries)); "
        "from diagnose.cli.app import main; main()"
    )
    command = [sys.executable, "-c", code, "report", "--format", "json", "-o", str(tmp_path / "out.json"), str(run)]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["False"] * len(HEAVY)  # the parse began before any of them
    assert json.loads((tmp_path / "out.json").read_text())["runs"]


def test_the_command_group_leaves_click_unimported_where_typer_carries_its_own() -> None:
    code = "import sys; import diagnose.cli.group; print('typer._click' in sys.modules, 'click' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    vendored, click_imported = result.stdout.split()
    assert vendored == "False" or click_imported == "False"  # typer >= 0.25: its copy of click is all it runs on
