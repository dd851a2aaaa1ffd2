"""`diagnose rules` and `diagnose explain`."""

from __future__ import annotations

from typer.testing import CliRunner

from diagnose.cli.app import app
from diagnose.rules import all_rules

runner = CliRunner()


def test_rules_lists_every_registered_rule(test_rule):
    result = runner.invoke(app, ["rules"])
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    for rule in all_rules():
        row = next(line for line in lines if line.startswith(rule.code))
        for cell in (rule.name, rule.severity.value, rule.category.value):
            assert cell in row
    assert f"{len(all_rules())} rules" in result.stdout


def test_explain_prints_sections_and_thresholds(test_rule):
    for key in (test_rule.code, test_rule.name, test_rule.code.lower()):
        result = runner.invoke(app, ["explain", key])
        assert result.exit_code == 0
        for section, text in test_rule.doc().items():
            assert section in result.stdout and text.split()[0] in result.stdout
        threshold = test_rule.thresholds[0]
        row = next(line for line in result.stdout.splitlines() if line.startswith(threshold.name))
        assert f"{threshold.default:g}" in row and threshold.source in row


def test_explain_unknown_code_is_one_line_and_exit_2():
    result = runner.invoke(app, ["explain", "XYZ999"])
    assert result.exit_code == 2
    assert result.stderr == "diagnose: error: unknown rule 'XYZ999' (`diagnose rules` lists them)\n"


def test_explain_a_prefix_or_a_list_lists_the_rules_it_picks():
    result = runner.invoke(app, ["explain", "LR"])
    assert result.exit_code == 0
    listed = [line.split()[0] for line in result.stdout.splitlines() if line[:2] == "LR"]
    assert listed == ["LR001", "LR002", "LR003", "LR004"]
    result = runner.invoke(app, ["explain", "NF001,ZL001"])
    assert result.exit_code == 0 and "2 rules" in result.stdout


def test_explain_says_which_rules_are_judged_live():
    for rule in all_rules():
        result = runner.invoke(app, ["explain", rule.code], env={"COLUMNS": "400"})
        assert ("judged live while the run trains" in result.stdout) == rule.live, rule.code
