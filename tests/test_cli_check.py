"""`diagnose check`: exit codes, expectations, GitHub annotations and JUnit XML."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest
from cli_samples import SAMPLES, run_name
from typer.testing import CliRunner

from diagnose.cli.app import app
from diagnose.cli.common import load_runs
from diagnose.report.summary import at_or_above, summarize
from diagnose.rules import analyze
from diagnose.verdict import DEFAULT_FAIL_ON

runner = CliRunner(env={"COLUMNS": "200"})
ONLY_TEST_RULE = ("--select", "TST")


def invoke(*args, env=None):
    return runner.invoke(app, ["check", *[str(a) for a in args]], env=env)


@pytest.fixture
def demoted(tmp_path, monkeypatch, test_rule):
    """A project whose pyproject.toml turns the test rule into a note."""
    (tmp_path / "pyproject.toml").write_text('[tool.diagnose.severity]\nTST001 = "info"\n')
    monkeypatch.chdir(tmp_path)
    return test_rule


def test_clean_run_exits_0(runs, test_rule):
    result = invoke(runs["healthy"], *ONLY_TEST_RULE)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-1].startswith("check passed")


def test_a_finding_at_the_threshold_exits_1(runs, test_rule):
    result = invoke(runs["broken"], runs["healthy"], *ONLY_TEST_RULE)
    assert result.exit_code == 1
    assert test_rule.code in result.stdout
    assert result.stdout.splitlines()[-1].startswith("check failed: 1 finding at or above warning")


@pytest.mark.parametrize(("fail_on", "code"), [("error", 0), ("warning", 0), ("info", 1), ("INFO", 1)])
def test_fail_on_threshold(runs, demoted, fail_on, code):
    assert invoke(runs["broken"], *ONLY_TEST_RULE, "--fail-on", fail_on).exit_code == code


def test_fail_on_from_pyproject(runs, demoted, tmp_path):
    (tmp_path / "pyproject.toml").write_text(
        '[tool.diagnose]\nfail-on = "info"\n[tool.diagnose.severity]\nTST001 = "info"\n'
    )
    assert invoke(runs["broken"], *ONLY_TEST_RULE).exit_code == 1
    assert invoke(runs["broken"], *ONLY_TEST_RULE, "--fail-on", "error").exit_code == 0


def test_expect_final_loss_below(runs, test_rule):
    final = summarize(load_runs([runs["healthy"]])[0]).final_loss
    met = invoke(runs["healthy"], *ONLY_TEST_RULE, "--expect-final-loss-below", final * 1.01)
    missed = invoke(runs["healthy"], *ONLY_TEST_RULE, "--expect-final-loss-below", final * 0.99)
    assert (met.exit_code, missed.exit_code) == (0, 1)
    assert f"final loss is {final:.4g}" in missed.stdout


def test_expect_final_loss_below_fails_on_a_nan_loss(runs, test_rule):
    result = invoke(runs["broken"], "--ignore", "TST", "--expect-final-loss-below", "1e30")
    assert result.exit_code == 1 and "final loss is nan" in result.stdout.lower()


def test_expect_no_fails_on_any_severity(runs, demoted):
    assert invoke(runs["broken"], *ONLY_TEST_RULE).exit_code == 0
    result = invoke(runs["broken"], *ONLY_TEST_RULE, "--expect-no", "TST001")
    assert result.exit_code == 1
    assert f"expect no TST001 (run '{run_name(runs['broken'])}'): not met" in result.stdout


@pytest.mark.parametrize("args", [("--expect-no", "NOPE999"), ("--fail-on", "fatal"), ("--junit", "{input}")])
def test_usage_errors_exit_2(runs, test_rule, args):
    before = runs["healthy"].read_bytes()
    result = invoke(runs["healthy"], *[a.format(input=runs["healthy"]) for a in args])
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    assert runs["healthy"].read_bytes() == before


def test_github_annotations_only_under_actions(runs, test_rule):
    plain = invoke(runs["broken"], *ONLY_TEST_RULE)
    actions = invoke(runs["broken"], *ONLY_TEST_RULE, env={"GITHUB_ACTIONS": "true"})
    assert "::error" not in plain.stdout
    lines = [line for line in actions.stdout.splitlines() if line.startswith("::")]
    assert len(lines) == 1
    title = f"diagnose {test_rule.code} {test_rule.title} (run {run_name(runs['broken'])})"
    assert lines[0].startswith(f"::error title={title}::")
    assert "%0AWhat to do: lower the learning rate" in lines[0]


def test_junit_one_case_per_evaluated_rule_and_run(runs, test_rule, tmp_path):
    out = tmp_path / "junit.xml"
    result = invoke(runs["broken"], runs["healthy"], "--junit", out, "--expect-final-loss-below", "100")
    suites = {s.get("name"): s for s in ET.parse(out).getroot().findall("testsuite")}
    assert set(suites) == {run_name(runs["broken"]), run_name(runs["healthy"])}
    for suite in suites.values():
        cases = [c.get("name") for c in suite.findall("testcase")]
        assert f"{test_rule.code} {test_rule.name}" in cases and "expect final loss below 100" in cases
        assert int(suite.get("tests")) == len(cases)
    cases = suites[run_name(runs["broken"])].findall("testcase")
    failed = [c.get("name") for c in cases if c.find("failure") is not None]
    assert f"{test_rule.code} {test_rule.name}" in failed
    assert result.exit_code == 1


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda p: f"{p.parent.name}-{p.stem}")
def test_exit_code_follows_the_real_rules_on_every_sample(sample):
    fails = any(at_or_above(analyze(run).findings, DEFAULT_FAIL_ON) for run in load_runs([sample]))
    result = invoke(sample, env={"COLUMNS": "200"})
    assert result.exit_code == int(fails), result.output
    for run in load_runs([sample]):
        assert all(code in result.stdout for code in analyze(run).codes)


def test_a_run_too_short_to_judge_exits_3_unless_nothing_is_required():
    from real_corpus import CORPUS

    if CORPUS is None:
        pytest.skip("the shared corpus of real logs is not beside this checkout")
    three_steps = CORPUS / "hf_trainer_state" / "DrAliya_NLP-SPAM-FRAUD_final.json"  # a real 3-step Trainer run
    result = invoke(three_steps)
    assert result.exit_code == 3, result.output
    assert "3 training-loss points: too short to judge" in result.stdout
    assert result.stdout.splitlines()[-1].startswith("check not judged")
    assert invoke(three_steps, "--require", "nothing").exit_code == 0


@pytest.mark.parametrize(("bound", "code"), [("loss<1e9", 0), ("loss>1e9", 1), ("train_loss<1e9", 0)])
def test_expect_final_bound_on_a_metric(runs, test_rule, bound, code):
    result = invoke(runs["healthy"], *ONLY_TEST_RULE, "--expect-final", bound)
    assert result.exit_code == code, result.output


def test_expect_final_on_a_nan_metric_is_not_met(runs, demoted):
    result = invoke(runs["broken"], *ONLY_TEST_RULE, "--fail-on", "error", "--expect-final", "loss<1e9")
    assert result.exit_code == 1
    assert "final loss is NaN" in result.stdout


def test_a_malformed_bound_is_a_usage_error(runs):
    assert invoke(runs["healthy"], "--expect-final", "val_loss about 3").exit_code == 2


def test_expect_no_takes_prefixes_and_comma_lists(runs, demoted):
    result = invoke(runs["broken"], *ONLY_TEST_RULE, "--expect-no", "TST,NF001")
    assert result.exit_code == 1
    assert "expect no TST001" in result.stdout and "expect no NF001" in result.stdout
