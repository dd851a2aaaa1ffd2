"""The rules on real training logs written by others (/work/shared/real_runs, see its SOURCES.md).

Every file loads and every rule runs on it. On the calibration half only,
files labelled healthy get no warning or error and files whose label names one
problem unambiguously get that problem as their primary finding: a test that
failed on a held-out file would have its rules tuned to that file, so the
held-out half is judged by `benchmarks/corpus_score.py` alone. The labels are
the corpus author's reading of the numbers, so the mapping below covers only
labels that name one rule.
"""

from __future__ import annotations

import re
import sys
from functools import cache
from pathlib import Path

import pytest
from real_corpus import corpus_folder

import diagnose
from diagnose.rules import Severity, analyze

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from corpus_shapes import split_of  # found through the path set above

CORPUS = corpus_folder() or Path("/nonexistent")
pytestmark = pytest.mark.skipif(not CORPUS.is_dir(), reason=f"real-run corpus not present at {CORPUS}")

# Label -> the rule that names that problem. A file with several labels must
# get one of their rules first (a NaN run that spiked may lead with either).
PRIMARY_FOR_LABEL = {
    "nan": "NF001",
    "diverging": "LR001",
    "lr_too_high": "LR001",
    "stuck_at_chance": "CH001",
    "zero_loss": "ZL001",
    "overfitting": "OVF001",
    "plateau": "PLT001",
    "spikes": "SPK001",
}
# Labels under which no single problem can be expected: too few evaluations,
# losses that are not plain objectives, several runs in one file, or a loss
# with no trend at all (too low a rate, too much noise, a dead model alike).
AMBIGUOUS = {"short_eval", "special", "multi_run", "flat"}


@cache
def labels() -> dict[str, set[str]]:
    found = {}
    for line in (CORPUS / "SOURCES.md").read_text(encoding="utf-8").splitlines():
        match = re.match(r"\| `([^`]+)` \|.*\| \d+ / \d+ \| ([^|]+) \|", line)
        if match:
            found[match[1]] = {label.strip() for label in match[2].split(",")}
    return found


def corpus_files() -> list[str]:
    return sorted(labels()) if CORPUS.is_dir() else []


def calibration_files() -> list[str]:
    return [name for name in corpus_files() if split_of(name) == "calibration"]


@cache
def analyses(name: str):
    return [analyze(run) for run in diagnose.load_all(CORPUS / name)]


def alarms(analysis) -> list[str]:
    return [f.code for f in analysis.findings if f.severity in (Severity.ERROR, Severity.WARNING)]


def expected_primary(file_labels: set[str]) -> set[str]:
    """The rules one of which must come first; empty when the labels name no single problem."""
    if "healthy" in file_labels or file_labels & AMBIGUOUS:
        return set()
    return {code for label, code in PRIMARY_FOR_LABEL.items() if label in file_labels}


def test_sources_lists_every_file():
    on_disk = {str(p.relative_to(CORPUS)) for p in CORPUS.rglob("*") if p.is_file() and p.name != "SOURCES.md"}
    assert on_disk == set(labels())


@pytest.mark.parametrize("name", corpus_files())
def test_every_rule_runs_on_the_file(name):
    for analysis in analyses(name):
        assert analysis.errors == []


@pytest.mark.parametrize("name", [n for n in calibration_files() if "healthy" in labels()[n]])
def test_healthy_run_gets_no_alarm(name):
    for analysis in analyses(name):
        assert alarms(analysis) == [], f"{analysis.run.name}: {[f.message for f in analysis.findings]}"


@pytest.mark.parametrize("name", [n for n in calibration_files() if expected_primary(labels()[n])])
def test_labelled_problem_comes_first(name):
    expected = expected_primary(labels()[name])
    found = alarms(analyses(name)[0])
    assert found and found[0] in expected, f"{name}: expected one of {sorted(expected)} first, got {found}"
