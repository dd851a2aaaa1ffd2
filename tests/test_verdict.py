"""`assert_healthy`, the helper for a user's own test suite."""

from __future__ import annotations

import pytest
from cli_samples import run_name

from diagnose.cli.common import load_runs
from diagnose.rules import RuleConfig, Severity, analyze
from diagnose.verdict import assert_healthy

ONLY_TEST_RULE = RuleConfig(select=("TST",))


def test_healthy_run_passes_and_returns_its_analysis(runs, test_rule):
    analyses = assert_healthy(runs["healthy"], config=ONLY_TEST_RULE)
    assert [a.run.name for a in analyses] == [run_name(runs["healthy"])] and analyses[0].findings == []


def test_failure_lists_each_finding_with_what_to_do(runs, test_rule):
    with pytest.raises(AssertionError) as caught:
        assert_healthy(runs["broken"], config=ONLY_TEST_RULE)
    message = str(caught.value)
    assert message.startswith("check failed: 1 finding at or above warning")
    assert f"run '{run_name(runs['broken'])}': TST001 Loss ends above where it started (error" in message
    assert message.rstrip().endswith("-> lower the learning rate")


def test_accepts_a_run_or_an_analysis(runs, test_rule):
    run = load_runs([runs["broken"]])[0]
    with pytest.raises(AssertionError):
        assert_healthy(run, config=ONLY_TEST_RULE)
    demoted = analyze(run, RuleConfig(select=("TST",), severity={"TST001": Severity.INFO}))
    assert assert_healthy(demoted)[0] is demoted
    with pytest.raises(AssertionError):
        assert_healthy(demoted, fail_on="info")


def test_unknown_severity_is_refused(runs):
    with pytest.raises(ValueError, match="unknown severity"):
        assert_healthy(runs["healthy"], fail_on="fatal")
