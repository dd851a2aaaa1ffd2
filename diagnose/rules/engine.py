"""Run the rules over a `Run` collect the findings, and order them as a differential
diagnosis: root causes worst first, each followed by the symptoms it explains.

Rules are independent: each reads the run and nothing else. How findings
relate (one causes another, one makes another redundant) is declared on the
rules (`Rule.explains`, `Rule.supersedes`) and applied here, to the findings
actually produced with the user's configuration.
"""

from __future__ import annotations

import traceback
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace

from diagnose import curves
from diagnose.rules.base import Category, Finding, Rule, Severity
from diagnose.rules.codes import all_rules, get_rule
from diagnose.rules.config import RuleConfig
from diagnose.rules.diagnosis import differential, root_causes
from diagnose.rules.helpers import events_named
from diagnose.run import Run
from diagnose.runfile import schema


@dataclass
class Analysis:
    """The outcome of analysing one run: findings in order of importance."""

    run: Run
    findings: list[Finding] = field(default_factory=list)
    # (rule code, reason) for rules that could not run on this run's fields.
    not_evaluated: list[tuple[str, str]] = field(default_factory=list)
    # (rule code, error) for rules that failed; a rule bug never hides the others.
    errors: list[tuple[str, str]] = field(default_factory=list)
    # (finding, code of the finding that supersedes it): set aside, not reported.
    superseded: list[tuple[Finding, str]] = field(default_factory=list)

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
    if not isinstance(run, Run):  # a path, most often: say what to do instead of failing deep in a rule
        raise TypeError(f"analyze() takes a Run, not {type(run).__name__}: read a file with diagnose.load(path) first")
    return arrange(apply_rules(run, config or RuleConfig()))


def apply_rules(run: Run, config: RuleConfig, rules: Iterable[type[Rule]] | None = None) -> Analysis:
    """Every enabled rule's findings as the rule made them, in the order of the code table (see `arrange`);
    ``rules``: these rules instead, in their order (the live monitor names the few it judges again)."""
    analysis = Analysis(run=run)
    chosen = [rule for rule in all_rules() if config.enabled(rule)] if rules is None else rules
    with curves.shared_views(), run.reading():  # the rules read the same curves: each view is computed once
        for rule_class in chosen:
            _apply(rule_class(), run, config, analysis)
    return analysis


def arrange(analysis: Analysis) -> Analysis:
    """Order the findings of `apply_rules` (to which the live monitor adds the verdicts it kept of rules
    it did not apply again) as a differential diagnosis, worst first."""
    run = analysis.run
    kept, analysis.superseded = set_aside_superseded(analysis.findings)
    explains = {rule.code: set(rule.explains) for rule in all_rules()}
    analysis.findings = differential(sorted(live_history(run, kept), key=Finding.sort_key), explains)
    return analysis


def _relation(name: str) -> dict[str, set[str]]:
    """Rule code -> the codes that rule's declared relation ``name`` names."""
    return {rule.code: set(getattr(rule, name)) for rule in all_rules()}


def set_aside_superseded(findings: list[Finding]) -> tuple[list[Finding], list[tuple[Finding, str]]]:
    """Split off the findings that another finding of the same run supersedes (see `Rule.supersedes`)."""
    supersedes = _relation("supersedes")
    by = {(f.run, code): f.code for f in findings for code in supersedes.get(f.code, ())}
    kept = [f for f in findings if (f.run, f.code) not in by]
    return kept, [(f, by[(f.run, f.code)]) for f in findings if (f.run, f.code) in by]


def live_history(run: Run, findings: list[Finding]) -> list[Finding]:
    """``findings`` marked with the step the live monitor first announced each (``finding`` events),
    and the announced ones that the whole run no longer bears out, kept as notes so that nothing the
    user was told during the run disappears from the report."""
    announced = _announcements(run)
    if not announced:
        return findings
    marked = [replace(f, seen_live=int(announced[f.code]["step"])) if f.code in announced else f for f in findings]
    found = {f.code for f in findings}
    for code, event in announced.items():
        if code not in found:
            marked.append(_unconfirmed(run, code, event))
    return marked


def _announcements(run: Run) -> dict[str, dict]:
    live = events_named(run, schema.EV_FINDING)
    if "code" not in live.columns:
        return {}
    return {str(row["code"]): row.to_dict() for _, row in live.drop_duplicates("code").iterrows()}


def _unconfirmed(run: Run, code: str, event: dict) -> Finding:
    try:
        rule = get_rule(code)
        name, title, category, priority = rule.name, rule.title, rule.category, rule.priority
    except KeyError:
        name, title, category, priority = code.lower(), str(event.get("title") or code), Category.NUMERICS, 50
    step = int(event["step"])
    fix = event.get("fix")
    module = event.get("module") if isinstance(event.get("module"), str) else None
    return Finding(
        code=code,
        name=name,
        title=title,
        severity=Severity.INFO,
        category=category,
        message=(
            f"announced during the run at step {step} ({event.get('severity')}): {event.get('message')}; "
            "the whole run no longer shows it"
        ),
        run=run.name,
        onset=step,
        module=module,
        module_label=run.module_label(module),
        rank=run.rank,
        fixes=(fix,) if isinstance(fix, str) else (),
        priority=priority,
        seen_live=step,
    )


def causes_first(findings: list[Finding]) -> list[Finding]:
    """Move each finding ahead of the findings its rule explains (see `Rule.explains`)."""
    explains = _relation("explains")
    ordered = list(findings)
    for finding in findings:
        explained = [
            i
            for i, other in enumerate(ordered)
            if other.code in explains.get(finding.code, ()) and other.run == finding.run
        ]
        here = ordered.index(finding)
        if explained and min(explained) < here:
            ordered.insert(min(explained), ordered.pop(here))
    return ordered


def _apply(rule: Rule, run: Run, config: RuleConfig, analysis: Analysis) -> None:
    missing = rule.missing(run)
    if missing:
        analysis.not_evaluated.append((rule.code, "needs " + ", ".join(missing)))
        return
    if rule.assumes_falling_loss and run.objective != "supervised":
        analysis.not_evaluated.append(
            (rule.code, f"needs a falling loss ({run.objective} losses are not meant to fall)")
        )
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
