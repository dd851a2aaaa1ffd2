"""The recorded sample runs are diagnosed as what they show; the healthy ones stay clean."""

from __future__ import annotations

from pathlib import Path

import pytest
from sample_files import EXAMPLES, recorder

import diagnose
from diagnose.rules import Severity, analyze

record = recorder()
SCENARIOS = list(record.SCENARIOS.values())


def alarms(path: Path, also: str | None = None) -> list[str]:
    """Codes of the warnings and errors (and of ``also`` at any severity), most important first."""
    findings = analyze(diagnose.load(path)).findings
    return [f.code for f in findings if f.severity in (Severity.ERROR, Severity.WARNING) or f.code == also]


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.name)
def test_recorded_run_is_diagnosed_as_what_it_shows(scenario):
    path = scenario.path
    assert path.exists(), f"{path} is missing: run python sample_runs/record.py {scenario.name}"
    found = alarms(path, also=scenario.expect)
    if scenario.good_of is not None:
        assert scenario.good_of not in found, f"near miss {scenario.name} raised {scenario.good_of}: {found}"
    elif scenario.expect is None:
        assert found == [], f"healthy run {scenario.name} got {found}"
    else:
        assert found and found[0] == scenario.first, f"{scenario.name}: expected {scenario.first} first, got {found}"


def test_every_problem_has_a_healthy_counterpart_and_a_docstring():
    assert sum(s.expect is None and s.good_of is None for s in SCENARIOS) >= 3
    assert all(s.about for s in SCENARIOS)


def test_recording_is_reproducible(tmp_path):
    # A fresh recording of a short scenario reads back as the same diagnosis.
    written = record.record(["spikes"], tmp_path)
    assert alarms(written[0])[0] == "SPK001"
    run = diagnose.load(written[0])
    assert run.metadata["num_classes"] == 4 and run.n_steps == record.STEPS


def test_unknown_scenario_is_refused(tmp_path):
    with pytest.raises(SystemExit, match="unknown scenario"):
        record.record(["no_such_run"], tmp_path)


def test_sample_files_stay_small():
    files = list(EXAMPLES.rglob("*.jsonl"))
    # About 130 runs: the bug pairs (the scripts of bugs/ train 320 steps with the default preset, 60-75 KB
    # a file, the seven-layer stack of deep_sigmoid_vanishing about 115 KB) make up nearly half; every other
    # run stays near or under 60 KB.
    assert max(p.stat().st_size for p in files) < 120_000
    assert sum(p.stat().st_size for p in files) < 6_000_000
