"""`diagnose report` through typer's CliRunner, on runs recorded by real training."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
from cli_samples import run_name
from test_report_json import errors
from typer.testing import CliRunner

from diagnose.cli.app import app
from diagnose.cli.common import load_runs
from diagnose.report.schema import JSON_SCHEMA
from diagnose.rules import RuleConfig, all_rules, analyze
from diagnose.rules.base import Severity

runner = CliRunner(env={"COLUMNS": "200"})


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def expected_codes(path, config: RuleConfig | None = None) -> list[str]:
    return [code for run in load_runs([path]) for code in analyze(run, config).codes]


def test_healthy_run_gives_a_healthy_verdict_first(runs):
    result = invoke("report", runs["healthy"])
    assert result.exit_code == 0, result.output
    first_line = result.stdout.splitlines()[0]
    findings = [f for run in load_runs([runs["healthy"]]) for f in analyze(run).findings]
    problems = [f for f in findings if f.severity is not Severity.INFO]
    assert first_line.startswith("healthy") == (problems == [])  # notes are said, but a run with notes is healthy
    steps = load_runs([runs["healthy"]])[0].n_steps
    assert f"run '{run_name(runs['healthy'])}': {steps} steps" in result.stdout


def test_findings_are_named_with_what_to_do_and_exit_stays_zero(runs, test_rule):
    result = invoke("report", runs["broken"])
    assert result.exit_code == 0
    codes = expected_codes(runs["broken"])
    assert test_rule.code in codes
    assert result.stdout.splitlines()[0].startswith(f"{len(codes)} problem")
    for needle in (test_rule.code, test_rule.title, "what to do:", "lower the learning rate"):
        assert needle in result.stdout


def test_a_folder_gives_one_table_row_per_run_worst_first(runs, test_rule):
    result = invoke("report", runs["healthy"].parent)
    assert result.exit_code == 0
    names = [run_name(runs["broken"]), run_name(runs["healthy"])]
    rows = [line.split()[0] for line in result.stdout.splitlines() if line.startswith(tuple(f"{n} " for n in names))]
    assert rows == names


def test_json_validates_and_matches_the_analysis(runs, test_rule):
    result = invoke("report", runs["broken"], runs["healthy"], "--format", "json")
    document = json.loads(result.stdout)
    assert errors(document, JSON_SCHEMA) == []
    by_name = {r["name"]: [f["code"] for f in r["findings"]] for r in document["runs"]}
    assert by_name == {run_name(runs[key]): expected_codes(runs[key]) for key in ("broken", "healthy")}


def test_markdown_to_a_file(runs, test_rule, tmp_path):
    out = tmp_path / "comment.md"
    result = invoke("report", runs["broken"], "-f", "md", "-o", out)
    assert result.exit_code == 0
    assert result.stdout == ""
    assert out.read_text().startswith("### diagnose:") and test_rule.code in out.read_text()


def test_select_ignore_and_set(runs, test_rule):
    assert test_rule.code not in invoke("report", runs["broken"], "--ignore", test_rule.code).stdout
    assert test_rule.code not in invoke("report", runs["healthy"]).stdout
    assert test_rule.code in invoke("report", runs["healthy"], "--set", "TST001.ratio=0").stdout
    selected = invoke("report", runs["broken"], "--select", "TST", "-f", "json").stdout
    assert [f["code"] for f in json.loads(selected)["runs"][0]["findings"]] == [test_rule.code]
    listed = invoke("report", runs["broken"], "--select", "TST,NF001", "-f", "json").stdout
    assert {f["code"] for f in json.loads(listed)["runs"][0]["findings"]} == {test_rule.code, "NF001"}


def test_pyproject_configuration_applies(runs, test_rule, tmp_path, monkeypatch):
    (tmp_path / "pyproject.toml").write_text('[tool.diagnose]\nignore = ["TST001"]\n')
    monkeypatch.chdir(tmp_path)
    assert test_rule.code not in invoke("report", runs["broken"]).stdout


@pytest.mark.parametrize(
    "args",
    [
        ("report", "missing.jsonl"),
        ("report", "{garbage}", "--set", "TST001.nope=1"),
        ("report", "{garbage}", "--format-in", "nonsense"),
        ("report", "{garbage}", "--select", "NOSUCHRULE"),
        ("report", "{garbage}", "--ignore", "nosuch-name"),
        ("report", "{garbage}"),
        ("report", "{garbage}", "-o", "{garbage}"),
    ],
)
def test_bad_input_is_one_line_and_exit_2_and_leaves_files_alone(args, test_rule, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    garbage = tmp_path / "garbage.jsonl"
    garbage.write_text("this is not a run\n")
    result = invoke(*[a.format(garbage=garbage) for a in args])
    assert result.exit_code == 2
    assert result.stderr.startswith("diagnose: error: ") and len(result.stderr.splitlines()) == 1
    assert "Traceback" not in result.output
    assert garbage.read_text() == "this is not a run\n"


def test_usage_errors_exit_2():
    assert invoke("report").exit_code == 2
    assert invoke("report", "x.jsonl", "--format", "pdf").exit_code == 2


COLOUR = re.compile(r"\x1b\[[0-9;]*3[0-7]m")


def test_colour_only_on_a_terminal_and_never_with_no_color(runs, test_rule, monkeypatch):
    monkeypatch.delenv("NO_COLOR", raising=False)
    piped = invoke("report", runs["broken"]).stdout
    forced = runner.invoke(app, ["report", str(runs["broken"])], env={"FORCE_COLOR": "1"}).stdout
    refused = runner.invoke(app, ["report", str(runs["broken"])], env={"FORCE_COLOR": "1", "NO_COLOR": "1"}).stdout
    assert not COLOUR.search(piped) and COLOUR.search(forced) and not COLOUR.search(refused)


def test_commands_other_than_demo_do_not_import_torch(runs, tmp_path):
    run = str(runs["healthy"])
    commands = [
        ["report", run, "-f", "json"],
        ["check", run],
        ["rules"],
        ["plot", run, "-o", str(tmp_path / "p.png")],
        ["explain", all_rules()[0].code],
    ]
    code = (
        "import sys; from typer.testing import CliRunner; from diagnose.cli.app import app; "
        f"codes = [CliRunner().invoke(app, c).exit_code for c in {commands!r}]; "
        "print(*codes, 'torch' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    *codes, torch_loaded = result.stdout.split()
    assert codes[2:] == ["0", "0", "0"] and codes[0] == "0" and codes[1] in ("0", "1")
    assert torch_loaded == "False"


def test_unknown_rule_patterns_are_refused(runs):
    result = invoke("report", runs["healthy"], "--select", "NOSUCH")
    assert result.exit_code == 2
    assert result.stderr == (
        "diagnose: error: 'NOSUCH' matches no rule code, code prefix or name (`diagnose rules` lists them)\n"
    )


@pytest.mark.parametrize(
    ("args", "exit_code"),
    [
        (["report", "{healthy}", "-f", "json"], 0),
        (["check", "{healthy}", "--expect-final-loss-below", "-1"], 1),
        (["report", "{healthy}", "--select", "NOSUCH"], 2),
    ],
)
def test_the_process_ends_with_the_exit_code_and_all_the_output(runs, args, exit_code):
    # report, check and plot end the process at once (no interpreter teardown) once they are done.
    command = [sys.executable, "-m", "diagnose", *(a.format(**runs) for a in args)]
    environment = {**os.environ, "COLUMNS": "200"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=environment)
    assert result.returncode == exit_code
    if exit_code == 0:
        assert json.loads(result.stdout)["runs"]
    elif exit_code == 1:
        assert result.stdout.rstrip().endswith("1 of 1 expectations not met")
    else:
        assert result.stderr.startswith("diagnose: error: 'NOSUCH' matches no rule")
