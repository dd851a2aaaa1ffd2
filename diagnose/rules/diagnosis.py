"""The differential diagnosis: one story per run instead of a list of competing findings.

Rules declare which other rules' findings they explain (`Rule.explains`: a
missing ``zero_grad()`` explains a rising loss and exploding gradients). Over
the findings of one run:

1. each finding explained by another becomes a *symptom* of it
   (``explained_by``); a chain (A explains B explains C) ends at its root;
2. every root cause lists its symptoms (``symptoms``) and is at least as
   severe as the worst of them, so the first finding of a report is always of
   its highest severity;
3. roots come worst first: severity, then confidence, then the rule's
   priority; each root is followed by its symptoms;
4. fixes come from the root cause: symptoms keep none, and a later root's
   fix that turns a knob against an earlier one ("raise the learning rate"
   after "lower the learning rate") is dropped (see `diagnose.rules.fixes`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

from diagnose.rules import fixes as fix_directions
from diagnose.rules.base import Category, Finding, Severity


def differential(findings: Sequence[Finding], explains: Mapping[str, set[str]]) -> list[Finding]:
    """The findings of any number of runs, ordered and linked as described above."""
    by_run: dict[str, list[Finding]] = {}
    for finding in findings:
        by_run.setdefault(finding.run, []).append(finding)
    ordered: list[Finding] = []
    for run_findings in by_run.values():
        ordered += _one_run(run_findings, explains)
    return ordered


def _one_run(findings: list[Finding], explains: Mapping[str, set[str]]) -> list[Finding]:
    parent = _without_cycles({i: _explainer(i, findings, explains) for i in range(len(findings))})
    roots = [i for i in range(len(findings)) if _root(i, parent) == i]
    groups = {r: [i for i in range(len(findings)) if i != r and _root(i, parent) == r] for r in roots}
    heads = []
    for r, members in groups.items():
        root = findings[r]
        worst = max([root.severity, *(findings[i].severity for i in members)], key=lambda sev: sev.rank)
        heads.append(replace(root, severity=worst, symptoms=tuple(dict.fromkeys(findings[i].code for i in members))))
    order = sorted(range(len(heads)), key=lambda k: _root_key(heads[k]))
    settled: dict[str, int] = {}
    result = []
    for k in order:
        head = _consistent_fixes(heads[k], settled)
        result.append(head)
        for i in sorted(groups[roots[k]], key=lambda i: findings[i].sort_key()):
            result.append(replace(findings[i], explained_by=head.code, fixes=()))
    return result


def _explainer(index: int, findings: list[Finding], explains: Mapping[str, set[str]]) -> int | None:
    """The finding that best explains ``findings[index]`` (most severe, most confident), if any."""
    code = findings[index].code
    candidates = [
        j
        for j, other in enumerate(findings)
        if j != index
        and other.code != code
        and code in explains.get(other.code, ())
        and not (other.code in explains.get(code, ()) and _root_key(findings[index]) < _root_key(other))
    ]
    return min(candidates, key=lambda j: _root_key(findings[j])) if candidates else None


def _without_cycles(parent: dict[int, int | None]) -> dict[int, int | None]:
    """Cut every explanation chain that comes back to where it started (A explains B explains A)."""
    for start in parent:
        seen, index = {start}, parent[start]
        while index is not None:
            if index in seen:
                parent[start] = None if index == start else parent[start]
                break
            seen.add(index)
            index = parent[index]
    return parent


def _root(index: int, parent: Mapping[int, int | None]) -> int:
    seen = {index}
    while parent[index] is not None and parent[index] not in seen:
        index = parent[index]
        seen.add(index)
    return index


def _root_key(finding: Finding) -> tuple:
    """Worst first: severity, then confidence; a named bug before a symptom-level finding."""
    return (
        -finding.severity.rank,
        -finding.confidence,
        finding.category is not Category.BUGS,
        finding.priority,
        finding.onset if finding.onset is not None else 0,
    )


def _consistent_fixes(finding: Finding, settled: dict[str, int]) -> Finding:
    """Drop the fixes that turn a knob against what an earlier root cause settled; settle the rest."""
    kept = tuple(fix for fix in finding.fixes if fix_directions.agrees_with(fix, settled))
    for fix in kept:
        for knob, way in fix_directions.directions(fix).items():
            settled.setdefault(knob, way)
    return replace(finding, fixes=kept) if len(kept) != len(finding.fixes) else finding


def root_causes(findings: Sequence[Finding]) -> list[tuple[Finding, list[Finding]]]:
    """(root cause, its symptoms) in report order, for findings that went through `differential`."""
    groups: list[tuple[Finding, list[Finding]]] = []
    for finding in findings:
        if finding.explained_by is None or not groups or groups[-1][0].run != finding.run:
            groups.append((finding, []))
        else:
            groups[-1][1].append(finding)
    return groups


def highest_severity(findings: Sequence[Finding]) -> Severity | None:
    return max((f.severity for f in findings), key=lambda sev: sev.rank, default=None)
