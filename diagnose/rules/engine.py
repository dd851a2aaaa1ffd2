"""Run the rules over a `Run`, collect the findings, and order them as a differential
diagnosis: root causes worst first, each followed by the symptoms it explains."""

from __future__ import annotations

import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

from diagnose.rules.base import Finding, Rule
from diagnose.rules.codes import all_rules
from diagnose.rules.config import RuleConfig
from diagnose.rules.diagnosis import differential, root_causes
from diagnose.run import Run


@dataclass
class Analysis:
    """The outcome of analysing one run: findings in order of importance."""

    run: Run
    findings: list[Finding] = field(default_factory=list)
    # (rule code, reason) for rules that could not run on this run's fields.
    not_evaluated: list[tuple[str, str]] = field(default_factory=list)
    # (rule code, error) for rules that failed; a rule bug never hides the others.
    errors: list[tuple[str, str]] = field(default_factory=list)

    def __iter__(self) -> Iterator[Finding]:
        return iter(self.findings)

    def __len__(self) -> int:
        return len(self.findings)

    def __getitem__(self, index: int) -> Finding:
        return self.findings[index]

    @property
    def worst(self) -> Finding | None:
        return self.findings[0] if self.findings else None

    @property
    def root_causes(self) -> list[tuple[Finding, list[Finding]]]:
        """(root cause, the symptoms it explains), most likely first."""
        return root_causes(self.findings)

    @property
    def codes(self) -> list[str]:
        return [f.code for f in self.findings]


def analyze(run: Run, config: RuleConfig | None = None) -> Analysis:
    """Apply every enabled rule to ``run``; findings come back worst first."""
    config = config or RuleConfig()
    analysis = Analysis(run=run)
    for rule_class in all_rules():
        if config.enabled(rule_class):
            _apply(rule_class(), run, config, analysis)
    explains = {rule.code: set(rule.explains) for rule in all_rules()}
    analysis.findings = differential(sorted(analysis.findings, key=Finding.sort_key), explains)
    return analysis


def _apply(rule: Rule, run: Run, config: RuleConfig, analysis: Analysis) -> None:
    missing = rule.missing(run)
    if missing:
        analysis.not_evaluated.append((rule.code, "needs " + ", ".join(missing)))
        return
    severity = config.severity_for(type(rule))
    try:
        for finding in rule.check(run, config.thresholds_for(type(rule))) or ():
            if severity != rule.severity:
                finding = replace(finding, severity=severity)
            analysis.findings.append(finding)
    except Exception as exc:  # noqa: BLE001 - a rule bug is reported, never fatal
        where = traceback.extract_tb(exc.__traceback__)[-1]
        analysis.errors.append((rule.code, f"{type(exc).__name__}: {exc} ({where.filename}:{where.lineno})"))
