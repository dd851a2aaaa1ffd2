"""What a person reads: versions, unwrapped listings, rule patterns, module names, whole steps."""

from __future__ import annotations

import re

import pytest
from sample_files import recorded_runs
from typer.testing import CliRunner

import diagnose
from diagnose.cli.app import app
from diagnose.report import render
from diagnose.rules import all_rules

runner = CliRunner()
SAMPLE_RUNS = recorded_runs()


def test_version_prints_the_package_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.stdout == f"diagnose {diagnose.__version__}\n"


def test_rules_piped_prints_each_title_whole_on_one_line():
    result = runner.invoke(app, ["rules"], terminal_width=40)
    for rule in all_rules():
        line = next(line for line in result.stdout.splitlines() if line.startswith(rule.code))
        assert line.endswith(rule.title)


def test_explain_takes_a_prefix_and_a_comma_list():
    lr = [rule.code for rule in all_rules() if rule.code.startswith("LR")]
    listed = runner.invoke(app, ["explain", "LR"]).stdout
    assert len(lr) > 1 and all(code in listed for code in lr)
    both = runner.invoke(app, ["explain", "NF001,CH001"])
    assert both.exit_code == 0 and "NF001" in both.stdout and "CH001" in both.stdout
    assert "``" not in runner.invoke(app, ["explain", "NF001"]).stdout


def test_select_takes_a_comma_list(runs):
    result = runner.invoke(app, ["report", str(runs["broken"]), "--format", "json", "--select", "NF001,LR001"])
    assert result.exit_code == 0
    codes = set(re.findall(r'"code": "([A-Z]+\d+)"', result.stdout))
    assert codes and codes <= {"NF001", "LR001"}


@pytest.fixture(scope="module")
def sample_analyses():
    return [diagnose.analyze(diagnose.load(path)) for path in SAMPLE_RUNS]


def test_findings_name_steps_as_whole_numbers(sample_analyses):
    text = render(sample_analyses, "md") + render(sample_analyses, "terminal")
    assert not re.search(r"\bsteps? \d+\.\d", text)
    assert not re.search(r"\bsteps? \d(\.\d+)?e[+-]?\d", text)


def test_modules_are_named_as_in_the_users_code(sample_analyses):
    named = [f for a in sample_analyses for f in a.findings if f.module and not f.module.startswith("(")]
    assert named, "the sample runs name no module"
    for finding in named:
        assert finding.module_label.startswith("model."), finding.module_label
        assert re.fullmatch(r"model\.\S+ \(\w+\)", finding.module_label)
    text = render(sample_analyses, "terminal")
    assert "in module 2" not in text and "pass of 2 " not in text


def test_markdown_shows_the_reading_warnings_as_the_other_formats_do(tmp_path):
    path = tmp_path / "cut.jsonl"
    path.write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "loss": 1.9}\n{"step": 3, "lo', encoding="utf-8")
    analysis = diagnose.analyze(diagnose.load(path))
    assert analysis.run.warnings
    markdown = render([analysis], "md")
    assert all(f"Reading: {w.split()[0]}" in markdown for w in analysis.run.warnings)


def test_explain_shows_what_the_rule_says_on_its_bad_example():
    result = runner.invoke(app, ["explain", "NF001"], terminal_width=200)
    assert result.exit_code == 0
    assert "On the recorded run sample_runs/examples/NF001/bad.jsonl, NF001 says:" in result.stdout
    assert "non-finite" in result.stdout.split("On the recorded run", 1)[1]


@pytest.mark.parametrize(("code", "example"), [("PRE007", "bad.jsonl"), ("DST002", "bad"), ("BUG013", "bad.jsonl")])
def test_explain_shows_the_example_of_preflight_multi_process_and_bug_rules(code: str, example: str):
    result = runner.invoke(app, ["explain", code], terminal_width=200)
    assert result.exit_code == 0
    assert f"On the recorded run sample_runs/examples/{code}/{example}, {code} says:" in result.stdout
