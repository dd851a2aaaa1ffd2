"""The verdict on analysed runs, pass or fail: for `diagnose check`, CI and tests (`assert_healthy`).

A verdict fails when a finding reaches the ``fail_on`` severity, or when an
expectation a smoke test states (final loss below X, a final validation metric
past a bound, no finding of code C) is not met. A run that gave the rules no
training loss to judge (or too few points of it) is its own outcome: the verdict
does not pass it unless ``require="nothing"`` says that is expected.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from diagnose.errors import ConfigError
from diagnose.levels import DEFAULT_FAIL_ON, DEFAULT_REQUIRE, REQUIREMENTS
from diagnose.readers import load_all
from diagnose.report.summary import at_or_above, coverage, describe, number, summarize
from diagnose.rules.base import Finding, Rule, Severity
from diagnose.rules.codes import all_rules, select_rules, split_patterns
from diagnose.rules.config import RuleConfig, load_config
from diagnose.rules.engine import Analysis, analyze
from diagnose.run import Run
from diagnose.runfile import schema


@dataclass(frozen=True)
class Expectation:
    """One stated expectation and whether one run meets it (``failure`` is None when it does)."""

    label: str
    run: str
    failure: str | None = None


@dataclass
class Verdict:
    analyses: list[Analysis]
    fail_on: Severity = DEFAULT_FAIL_ON
    config: RuleConfig = field(default_factory=RuleConfig)
    expectations: list[Expectation] = field(default_factory=list)
    require: str = DEFAULT_REQUIRE

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
    def unjudged(self) -> list[Analysis]:
        """Runs the requirement is not met on: no training loss, or too few points of it."""
        if self.require == "nothing":
            return []
        return [a for a in self.analyses if not coverage(a.run).judged]

    @property
    def failed(self) -> bool:
        """A finding at or above ``fail_on``, or an unmet expectation."""
        return bool(self.failed_expectations) or any(self.failing(a) for a in self.analyses)

    @property
    def passed(self) -> bool:
        return not self.failed and not self.unjudged

    def summary(self) -> str:
        """``"check failed: 2 findings at or above warning, 1 expectation not met"``."""
        findings = sum(len(self.failing(a)) for a in self.analyses)
        parts = [f"{findings} finding{'s' * (findings != 1)} at or above {self.fail_on.value}"]
        if self.expectations:
            missed = len(self.failed_expectations)
            parts.append(f"{missed} of {len(self.expectations)} expectations not met")
        if self.unjudged:
            parts.append(
                f"{len(self.unjudged)} run(s) not judged ({self.unjudged_text()}; --require nothing accepts that)"
            )
        state = "failed" if self.failed else ("not judged" if self.unjudged else "passed")
        return f"check {state}: " + ", ".join(parts)

    def unjudged_text(self) -> str:
        return "; ".join(f"run '{a.run.name}': {coverage(a.run).reason}" for a in self.unjudged)


def evaluate(
    analyses: Sequence[Analysis],
    *,
    fail_on: Severity = DEFAULT_FAIL_ON,
    config: RuleConfig | None = None,
    final_loss_below: float | None = None,
    forbidden: Sequence[str] = (),
    finals: Sequence[str] = (),
    require: str = DEFAULT_REQUIRE,
) -> Verdict:
    """Judge analysed runs against a severity threshold, the stated expectations and the requirement."""
    if require not in REQUIREMENTS:
        raise ConfigError(f"unknown requirement {require!r} (expected {' or '.join(REQUIREMENTS)})")
    codes = _rule_codes(forbidden)
    bounds = [parse_final_bound(text) for text in finals]
    expectations = []
    for analysis in analyses:
        if final_loss_below is not None:
            expectations.append(expect_final_loss_below(analysis.run, final_loss_below))
        expectations.extend(expect_final(analysis.run, bound) for bound in bounds)
        expectations.extend(expect_no(analysis, code) for code in codes)
    return Verdict(list(analyses), fail_on, config or RuleConfig(), expectations, require)


def _rule_codes(patterns: Sequence[str]) -> list[str]:
    """The codes that codes, names, prefixes or comma lists pick, each once."""
    for pattern in split_patterns(patterns):
        if not select_rules(pattern):
            raise ConfigError(f"unknown rule {pattern!r} in an expectation (`diagnose rules` lists them)")
    return [rule.code for rule in select_rules(patterns)]


def expect_final_loss_below(run: Run, limit: float) -> Expectation:
    label = f"final loss below {limit:g}"
    final = summarize(run).final_loss
    if final is None:
        return Expectation(label, run.name, "the run logs no training loss")
    if not (math.isfinite(final) and final < limit):
        return Expectation(label, run.name, f"final loss is {final:.4g}")
    return Expectation(label, run.name)


@dataclass(frozen=True)
class FinalBound:
    """``val_accuracy>=0.9``: the last logged value of a metric against a bound."""

    text: str
    column: str
    operator: str
    limit: float


_BOUND = re.compile(r"^\s*([A-Za-z_][\w./()-]*)\s*(<=|>=|<|>)\s*([-+0-9.eE]+)\s*$")
_COMPARE = {"<": float.__lt__, "<=": float.__le__, ">": float.__gt__, ">=": float.__ge__}


def parse_final_bound(text: str) -> FinalBound:
    """``"val_loss<0.5"`` or ``"eval_accuracy>=0.9"``; the metric name is resolved as the readers resolve it."""
    found = _BOUND.match(text)
    limit = schema.to_number(found[3]) if found else None
    if found is None or limit is None or not math.isfinite(limit):
        raise ConfigError(
            f"expectation {text!r} is not METRIC<X, METRIC<=X, METRIC>X or METRIC>=X (e.g. val_accuracy>=0.9)"
        )
    name = found[1]
    column = schema.canonical_eval_key(name) if schema.is_eval_key(name) else schema.canonical_step_key(name)
    return FinalBound(text.strip(), column, found[2], limit)


def expect_final(run: Run, bound: FinalBound) -> Expectation:
    label = f"final {bound.text}"
    column = bound.column if run.has(bound.column) else schema.normalise_key(bound.text.split(bound.operator)[0])
    if not run.has(column):
        return Expectation(label, run.name, f"the run logs no {bound.column}")
    final = float(run.series(column, keep_nan=True).iloc[-1])
    if not (math.isfinite(final) and _COMPARE[bound.operator](final, bound.limit)):
        return Expectation(label, run.name, f"final {column} is {number(final)}")
    return Expectation(label, run.name)


def expect_no(analysis: Analysis, code: str) -> Expectation:
    found = [f for f in analysis.findings if f.code == code]
    failure = f"found {describe(found[0])}: {found[0].message}" if found else None
    return Expectation(f"no {code}", analysis.run.name, failure)


def assert_healthy(
    run_or_path: Run | Analysis | str | os.PathLike[str],
    fail_on: str | Severity = "warning",
    *,
    config: RuleConfig | None = None,
    require: str = DEFAULT_REQUIRE,
) -> list[Analysis]:
    """Raise AssertionError listing the findings at or above ``fail_on``; return the analyses otherwise.

    ``run_or_path``: a `Run`, an `Analysis`, or a run file (every run in it is
    checked). Rules are configured from ``[tool.diagnose]`` unless ``config``
    is given. A run without a training loss to judge fails too, unless
    ``require="nothing"``.
    """
    threshold = Severity.parse(fail_on)
    result = evaluate(_analyses(run_or_path, config), fail_on=threshold, require=require)
    if not result.passed:
        raise AssertionError(failure_text(result))
    return result.analyses


def _analyses(source: Run | Analysis | str | os.PathLike[str], config: RuleConfig | None) -> list[Analysis]:
    if isinstance(source, Analysis):
        return [source]
    config = config or load_config()
    runs = [source] if isinstance(source, Run) else load_all(Path(source))
    return [analyze(run, config) for run in runs]


def failure_text(result: Verdict) -> str:
    """What failed, one line a finding or expectation, with what to do first."""
    lines = [result.summary()]
    for analysis in result.analyses:
        for finding in result.failing(analysis):
            fix = f" -> {finding.fixes[0]}" if finding.fixes else ""
            lines.append(f"  run '{analysis.run.name}': {describe(finding)}: {finding.message}{fix}")
    for expectation in result.failed_expectations:
        lines.append(f"  run '{expectation.run}': expected {expectation.label}: {expectation.failure}")
    lines += [f"  run '{a.run.name}': not judged: {coverage(a.run).reason}" for a in result.unjudged]
    return "\n".join(lines)
