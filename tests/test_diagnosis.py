"""The differential diagnosis over every recorded run: one coherent story per report."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

import diagnose
from diagnose.rules import fixes
from diagnose.rules.base import Category, Finding, Severity
from diagnose.rules.diagnosis import differential

SAMPLES = Path(__file__).resolve().parents[1] / "sample_runs"
RUN_FILES = sorted(p for p in SAMPLES.rglob("*.jsonl") if ".rank" not in p.name and "corpus" not in p.parts)


def _analyses(path: Path) -> list:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return [diagnose.analyze(run) for run in diagnose.load_all(path)]


@pytest.mark.parametrize("path", RUN_FILES, ids=lambda p: str(p.relative_to(SAMPLES)))
def test_no_report_turns_a_knob_both_ways_and_the_first_finding_is_the_most_severe(path: Path) -> None:
    for analysis in _analyses(path):
        every_fix = [fix for finding in analysis for fix in finding.fixes]
        assert fixes.contradictions(every_fix) == []
        if analysis.findings:
            assert analysis.worst.severity.rank == max(f.severity.rank for f in analysis)
        for root, symptoms in analysis.root_causes:
            assert root.explained_by is None and root.symptoms == tuple(f.code for f in symptoms)
            assert all(f.explained_by == root.code and not f.fixes for f in symptoms)
            assert all(f.severity.rank <= root.severity.rank for f in symptoms)


def test_the_sample_runs_hold_findings_to_check() -> None:
    assert sum(len(a.findings) for p in RUN_FILES for a in _analyses(p)) > 20


def _finding(
    code: str, severity: Severity, fix: str, confidence: float = 1.0, category: Category = Category.OPTIMIZATION
) -> Finding:
    return Finding(
        code=code,
        name=code.lower(),
        title=code,
        severity=severity,
        category=category,
        message="m",
        run="r",
        confidence=confidence,
        fixes=(fix,),
    )


def test_a_root_cause_takes_its_symptoms_and_their_severity_and_its_fixes_win() -> None:
    bug = _finding("BUG001", Severity.WARNING, "call optimizer.zero_grad() every step", 0.9, Category.BUGS)
    rising = _finding("LR001", Severity.ERROR, "lower the learning rate 3-10x")
    slow = _finding("LR003", Severity.WARNING, "raise the learning rate 3-10x")
    ordered = differential([rising, slow, bug], {"BUG001": {"LR001"}})
    assert [f.code for f in ordered] == ["BUG001", "LR001", "LR003"]
    root, symptom, other = ordered
    assert root.severity is Severity.ERROR and root.symptoms == ("LR001",)
    assert symptom.explained_by == "BUG001" and symptom.fixes == ()
    assert other.fixes == ("raise the learning rate 3-10x",)  # nothing left that lowers it


def test_a_later_root_cause_loses_the_fix_that_contradicts_an_earlier_one() -> None:
    high = _finding("LR001", Severity.ERROR, "lower the learning rate 3-10x")
    low = _finding("LR003", Severity.WARNING, "raise the learning rate 3-10x")
    ordered = differential([low, high], {})
    assert [f.code for f in ordered] == ["LR001", "LR003"] and ordered[1].fixes == ()


def test_explanations_that_go_round_in_a_circle_lose_no_finding() -> None:
    a, b = _finding("ACT001", Severity.WARNING, "x"), _finding("PLT001", Severity.WARNING, "y")
    ordered = differential([a, b], {"ACT001": {"PLT001"}, "PLT001": {"ACT001"}})
    assert sorted(f.code for f in ordered) == ["ACT001", "PLT001"]


@pytest.mark.parametrize(
    ("text", "turned"),
    [
        ("lower the learning rate 3-10x", {"learning_rate": -1}),
        ("raise the learning rate 3-10x", {"learning_rate": 1}),
        ("try a learning rate 3-10x higher", {"learning_rate": 1}),
        ("a learning rate 10x lower", {"learning_rate": -1}),
        ("decay the learning rate: cosine or step schedule down to 1-10% of the peak", {"learning_rate": -1}),
        ("raise the batch size 4-16x, or accumulate gradients over several batches", {"batch_size": 1}),
        ("halve the batch size and keep the effective batch with gradient accumulation", {"batch_size": -1}),
        ("regularise: weight decay 0.01-0.1, dropout 0.1-0.3", {"regularisation": 1}),
        ("use a smaller model or fewer epochs", {"model_size": -1, "training_length": -1}),
        ("call optimizer.zero_grad() every step", {}),
    ],
)
def test_fix_directions(text: str, turned: dict) -> None:
    assert fixes.directions(text) == turned
