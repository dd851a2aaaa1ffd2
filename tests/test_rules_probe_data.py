"""Rules on the probes' per-layer data, events and memory, tested on runs recorded by real training."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest
from real_corpus import corpus_folder
from sample_files import HEALTHY, recorder, scenario_file

import diagnose
from diagnose.rules.resources import steady_growth

REAL_RUNS = corpus_folder() or Path("/nonexistent")
FAMILIES = ("GRD", "ACT", "MEM", "AMP")
SERIOUS = ("warning", "error")

# Bad sample run -> the rule that must be the first of this family's findings.
EXPECTED = {
    "exploding": "GRD001",
    "vanishing": "GRD002",
    "update-tiny": "GRD003",
    "update-huge": "GRD003",
    "detached-branch": "GRD004",
    "dead-relu": "ACT001",
    "saturated-tanh": "ACT002",
    "collapse": "ACT003",
    "memory-leak": "MEM001",
    "amp-skips": "AMP001",
}


def ours(analysis: diagnose.rules.Analysis) -> list:
    return [f for f in analysis.findings if f.code.startswith(FAMILIES)]


def analyze(path: Path) -> diagnose.rules.Analysis:
    analysis = diagnose.analyze(diagnose.load(path))
    assert not [e for e in analysis.errors if e[0].startswith(FAMILIES)], analysis.errors
    return analysis


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_bad_sample_run_gets_its_rule_first(name: str) -> None:
    analysis = analyze(scenario_file(name))
    found = ours(analysis)
    assert found, f"no finding on internals-{name}"
    assert found[0].code == EXPECTED[name], [(f.code, f.message) for f in found]
    assert found[0].severity.value in SERIOUS
    serious = [f.code for f in analysis.findings if f.severity.value in SERIOUS]
    assert serious[0] == recorder().SCENARIOS[name].first, serious


def test_findings_name_the_layer_and_the_numbers() -> None:
    exploding = ours(analyze(scenario_file("exploding")))[0]
    assert exploding.evidence["growth"] > 100 and exploding.onset is not None and exploding.module
    vanishing = ours(analyze(scenario_file("vanishing")))[0]
    assert vanishing.module == "0" and vanishing.evidence["ratio"] < 1e-6
    dead = ours(analyze(scenario_file("dead-relu")))[0]
    assert dead.module == "1" and dead.evidence["dead_fraction"]["1"] > 0.5
    detached = ours(analyze(scenario_file("detached-branch")))[0]
    assert detached.evidence["modules"] == ["side.0"]
    leak = ours(analyze(scenario_file("memory-leak")))[0]
    assert leak.evidence["column"] == "rss" and leak.evidence["bytes_per_step"] > 0
    amp = ours(analyze(scenario_file("amp-skips")))[0]
    assert amp.severity.value == "error" and amp.evidence["last_scale"] < 1


def healthy_samples() -> list[Path]:
    return sorted(HEALTHY.glob("*.jsonl"))


@pytest.mark.parametrize("path", healthy_samples(), ids=lambda p: p.name)
def test_healthy_sample_runs_stay_clean(path: Path) -> None:
    serious = [(f.code, f.message) for f in ours(analyze(path)) if f.severity.value in SERIOUS]
    assert serious == []


def test_there_are_healthy_sample_runs_with_internals() -> None:
    internals = [p for p in healthy_samples() if diagnose.load(p).has("rss")]
    assert len(internals) >= 2


def test_rules_without_their_fields_are_not_evaluated(tmp_path: Path) -> None:
    path = tmp_path / "loss-only.jsonl"
    path.write_text("".join(json.dumps({"step": s, "loss": 2.0 / s}) + "\n" for s in range(1, 40)))
    analysis = diagnose.analyze(diagnose.load(path))
    skipped = {code for code, _ in analysis.not_evaluated}
    expected = {"GRD001", "GRD002", "GRD003", "GRD004", "ACT001", "ACT002", "ACT003", "MEM001", "MEM002", "AMP001"}
    assert expected <= skipped
    assert not ours(analysis)


def _run_file(tmp_path: Path, records: list[dict]) -> Path:
    path = tmp_path / "run.jsonl"
    meta = {"kind": "meta", "schema": "diagnose.run/1", "name": "gpu-run"}
    path.write_text("".join(json.dumps(r) + "\n" for r in [meta, *records]))
    return path


def test_out_of_memory_event_is_an_error(tmp_path: Path) -> None:
    # The event as the watch writes it when CUDA raises OutOfMemoryError (no GPU here to raise it).
    records = [{"kind": "step", "step": s, "loss": 1.0} for s in range(1, 5)]
    records.append(
        {"kind": "event", "step": 5, "event": "out_of_memory", "error": "OutOfMemoryError: CUDA out of memory"}
    )
    found = ours(diagnose.analyze(diagnose.load(_run_file(tmp_path, records))))
    assert [(f.code, f.severity.value, f.onset) for f in found] == [("MEM002", "error", 5)]


@pytest.mark.parametrize(("peak", "fires"), [(0.97, True), (0.6, False)])
def test_device_memory_share(tmp_path: Path, peak: float, fires: bool) -> None:
    total = 80 * 1024**3
    records = [
        {"kind": "step", "step": s, "loss": 1.0, "cuda_peak": peak * total * s / 20, "cuda_total": total}
        for s in range(1, 21)
    ]
    found = ours(diagnose.analyze(diagnose.load(_run_file(tmp_path, records))))
    assert [f.code for f in found] == (["MEM002"] if fires else [])


def test_memory_plateau_after_warmup_is_not_a_leak() -> None:
    steps = range(1, 101)
    plateau = pd.Series([1e9 if s < 30 else 1.3e9 for s in steps], index=list(steps), dtype="float64")
    steady = pd.Series([1e9 + 4e6 * s for s in steps], index=list(steps), dtype="float64")
    thresholds = diagnose.rules.get_rule("MEM001").threshold_defaults()
    assert steady_growth(plateau, thresholds) is None
    assert steady_growth(steady, thresholds).relative > 0.3


@pytest.mark.parametrize("name", ["detached-branch", "amp-skips"])
def test_recording_script_reproduces_the_problem(tmp_path: Path, name: str) -> None:
    path = recorder().record([name], tmp_path)[0]
    assert ours(analyze(path))[0].code == EXPECTED[name]


def healthy_real_runs() -> list[Path]:
    sources = REAL_RUNS / "SOURCES.md"
    if not sources.is_file():
        return []
    rows = re.findall(r"^\| `([^`]+)` \|.*?\| ([^|]*) \|[^|]*\|\s*$", sources.read_text(), flags=re.MULTILINE)
    return [REAL_RUNS / file for file, labels in rows if "healthy" in labels and (REAL_RUNS / file).is_file()]


@pytest.mark.skipif(not healthy_real_runs(), reason="no labelled real runs on this machine")
def test_healthy_real_runs_stay_clean() -> None:
    serious = []
    for path in healthy_real_runs():
        for run in diagnose.load_all(path):
            serious += [(path.name, f.code) for f in ours(diagnose.analyze(run)) if f.severity.value in SERIOUS]
    assert serious == []
