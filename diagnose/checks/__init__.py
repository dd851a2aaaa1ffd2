"""Pass/fail on analysed runs: for `diagnose check`, CI and tests (`assert_healthy`).

A check fails when a finding reaches the ``fail_on`` severity, or when an
expectation a smoke test states (final loss below X, no finding of code C) is
not met.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from diagnose.errors import ConfigError
from diagnose.readers import load_all
from diagnose.report.summary import at_or_above, describe, summarize
from diagnose.rules.base import Finding, Rule, Severity
from diagnose.rules.codes import all_rules, get_rule
from diagnose.rules.config import RuleConfig, load_config
from diagnose.rules.engine import Analysis, analyze
from diagnose.run import Run

DEFAULT_FAIL_ON = Severity.WARNING


@dataclass(frozen=True)
class Expectation:
    """One stated expectation and whether one run meets it (``failure`` is None when it does)."""

    label: str
    run: str
    failure: str | None = None


@dataclass
class CheckResult:
    analyses: list[Analysis]
    fail_on: Severity = DEFAULT_FAIL_ON
    config: RuleConfig = field(default_factory=RuleConfig)
    expectations: list[Expectation] = field(default_factory=list)

    def failing(self, analysis: Analysis) -> list[Finding]:
        return at_or_above(analysis.findings, self.fail_on)

    def evaluated(self, analysis: Analysis) -> list[type[Rule]]:
        """The rules that ran on this run (enabled and with the fields they need)."""
        skipped = {code for code, _ in analysis.not_evaluated}
        return [r for r in all_rules() if self.config.enabled(r) and r.code not in skipped]

    @property
    def failed_expectations(self) -> list[Expectation]:
        return [e for e in self.expectations if e.failure]

    @property
    def passed(self) -> bool:
        return not self.failed_expectations and not any(self.failing(a) for a in self.analyses)

    def summary(self) -> str:
        """``"check failed: 2 findings at or above warning, 1 expectation not met"``."""
        findings = sum(len(self.failing(a)) for a in self.analyses)
        parts = [f"{findings} finding{'s' * (findings != 1)} at or above {self.fail_on.value}"]
        if self.expectations:
            missed = len(self.failed_expectations)
            parts.append(f"{missed} of {len(self.expectations)} expectations not met")
        return f"check {'passed' if self.passed else 'failed'}: " + ", ".join(parts)


def evaluate(analyses: Sequence[Analysis], *, fail_on: Severity = DEFAULT_FAIL_ON, config: RuleConfig | None = None,
             final_loss_below: float | None = None, forbidden: Sequence[str] = ()) -> CheckResult:
    """Judge analysed runs against a severity threshold and the stated expectations."""
    codes = [_rule_code(c) for c in forbidden]
    expectations = []
    for analysis in analyses:
        if final_loss_below is not None:
            expectations.append(expect_final_loss_below(analysis.run, final_loss_below))
        expectations.extend(expect_no(analysis, code) for code in codes)
    return CheckResult(list(analyses), fail_on, config or RuleConfig(), expectations)


def _rule_code(code_or_name: str) -> str:
    try:
        return get_rule(code_or_name).code
    except KeyError:
        raise ConfigError(f"unknown rule {code_or_name!r} in an expectation (`diagnose rules` lists them)") from None


def expect_final_loss_below(run: Run, limit: float) -> Expectation:
    label = f"final loss below {limit:g}"
    final = summarize(run).final_loss
    if final is None:
        return Expectation(label, run.name, "the run logs no training loss")
    if not (math.isfinite(final) and final < limit):
        return Expectation(label, run.name, f"final loss is {final:.4g}")
    return Expectation(label, run.name)


def expect_no(analysis: Analysis, code: str) -> Expectation:
    found = [f for f in analysis.findings if f.code == code]
    failure = f"found {describe(found[0])}: {found[0].message}" if found else None
    return Expectation(f"no {code}", analysis.run.name, failure)


def assert_healthy(run_or_path: Run | Analysis | str | os.PathLike[str], fail_on: str | Severity = "warning",
                   *, config: RuleConfig | None = None) -> list[Analysis]:
    """Raise AssertionError listing the findings at or above ``fail_on``; return the analyses otherwise.

    ``run_or_path``: a `Run`, an `Analysis`, or a run file (every run in it is
    checked). Rules are configured from ``[tool.diagnose]`` unless ``config``
    is given.
    """
    threshold = Severity.parse(fail_on)
    result = evaluate(_analyses(run_or_path, config), fail_on=threshold)
    if not result.passed:
        raise AssertionError(failure_text(result))
    return result.analyses


def _analyses(source: Run | Analysis | str | os.PathLike[str], config: RuleConfig | None) -> list[Analysis]:
    if isinstance(source, Analysis):
        return [source]
    config = config or load_config()
    runs = [source] if isinstance(source, Run) else load_all(Path(source))
    return [analyze(run, config) for run in runs]


def failure_text(result: CheckResult) -> str:
    """What failed, one line a finding or expectation, with what to do first."""
    lines = [result.summary()]
    for analysis in result.analyses:
        for finding in result.failing(analysis):
            fix = f" -> {finding.fixes[0]}" if finding.fixes else ""
            lines.append(f"  run '{analysis.run.name}': {describe(finding)}: {finding.message}{fix}")
    for expectation in result.failed_expectations:
        lines.append(f"  run '{expectation.run}': expected {expectation.label}: {expectation.failure}")
    return "\n".join(lines)
