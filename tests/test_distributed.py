"""Multi-process runs under torch.distributed (gloo, CPU): per-rank files, the rank reader, the DST rules.

The scenarios are the DST examples' own (``sample_runs/rank_examples.py``), plus
one where the watch fails on a rank. One launch of three processes trains them
all in turn (a fresh model and file set each): start-up is paid once.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from sample_files import scenario_module

import diagnose
from diagnose.rules.base import Severity

examples = scenario_module("rank_examples")
WORLD = examples.WORLD
SCENARIOS = {
    "healthy": examples.SCENARIOS["dst-healthy"],
    "nan": examples.SCENARIOS["dst-nan"],
    "slow": examples.SCENARIOS["dst-slow"],
    "desync": examples.SCENARIOS["dst-desync"],
    "outlier": examples.SCENARIOS["dst-outlier"],
    "uneven": examples.SCENARIOS["dst-uneven"],
    "broken_watch": examples.Scenario("broken_watch", gather=True),
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("ranks")
    # Generous: 3 torch processes on a loaded 2-core machine. A hang is a failure, never a stuck suite.
    if not examples.record_all({folder / name / "run.jsonl": s for name, s in SCENARIOS.items()}, timeout_s=420):
        pytest.fail("the multi-process run did not finish: a collective hung")
    return folder


def _analyze(folder: Path, scenario: str, path: str = "run.jsonl") -> list:
    run = diagnose.load(folder / scenario / path)
    return list(diagnose.analyze(run))


def _only(findings: list, code: str):
    matches = [f for f in findings if f.code == code]
    assert len(matches) == 1, [(f.code, f.message) for f in findings]
    return matches[0]


def test_each_rank_writes_its_own_file_with_its_rank(runs: Path) -> None:
    files = sorted(p.name for p in (runs / "nan").iterdir())
    assert files == [f"run.rank{r}.jsonl" for r in range(WORLD)]
    for rank in range(WORLD):
        run = diagnose.load(runs / "nan" / f"run.rank{rank}.jsonl") if rank else None
        if run is not None:  # a rank other than 0 opens alone
            assert run.rank == rank and run.meta["world_size"] == WORLD and not run.ranks


@pytest.mark.parametrize("path", ["run.jsonl", "run.rank0.jsonl", "."])
def test_the_rank_files_open_as_one_run_from_any_of_its_names(runs: Path, path: str) -> None:
    run = diagnose.load(runs / "healthy" / path)
    assert sorted(run.ranks) == list(range(WORLD))
    assert run.rank == 0 and run.steps.equals(run.ranks[0].steps)  # single-rank rules read rank 0
    frame = run.rank_frame("steps")
    assert sorted(frame["rank"].unique()) == list(range(WORLD))
    assert len(frame) == sum(r.n_steps for r in run.ranks.values())


def test_replicas_under_ddp_have_identical_checksums(runs: Path) -> None:
    run = diagnose.load(runs / "healthy" / "run.jsonl")
    sums = [run.ranks[r].series("param_checksum") for r in range(WORLD)]
    assert len(sums[0]) == 14 and all(s.equals(sums[0]) for s in sums)


def test_gather_summary_on_rank_0_matches_the_rank_files(runs: Path) -> None:
    run = diagnose.load(runs / "healthy" / "run.jsonl")
    gathered = run.ranks[0].series("ranks_loss_max")
    assert list(gathered.index) == list(range(2, 14, 2))
    losses = run.rank_frame("steps").pivot_table(index="step", columns="rank", values="loss")
    assert gathered.to_numpy() == pytest.approx(losses.loc[gathered.index].max(axis=1).to_numpy())
    assert not any(r.has("ranks_loss_max") for rank, r in run.ranks.items() if rank)


def test_healthy_multi_process_run_has_no_warning_or_error(runs: Path) -> None:
    serious = [f for f in _analyze(runs, "healthy") if f.severity in (Severity.ERROR, Severity.WARNING)]
    assert serious == []


def test_nan_on_one_rank_is_traced_to_that_rank_step_and_module(runs: Path) -> None:
    finding = _only(_analyze(runs, "nan"), "DST002")
    assert (finding.rank, finding.onset, finding.module) == (1, 6, "module.0")  # the DDP wrapper's names
    assert finding.severity is Severity.ERROR and "rank 1" in finding.message


def test_slow_rank_is_named_as_the_straggler(runs: Path) -> None:
    finding = _only(_analyze(runs, "slow"), "DST003")
    assert finding.rank == 2 and "rank 2" in finding.message


def test_perturbed_replica_is_named_with_step_and_module(runs: Path) -> None:
    finding = _only(_analyze(runs, "desync"), "DST004")
    assert (finding.rank, finding.onset, finding.module) == (1, 5, "4")  # the scenario nudges model[4]


def test_rank_with_an_unnormalised_shard_is_an_outlier(runs: Path) -> None:
    finding = _only(_analyze(runs, "outlier"), "DST001")
    assert finding.rank == 1 and finding.evidence["column"] == "loss"


def test_rank_that_stopped_early_is_named(runs: Path) -> None:
    finding = _only(_analyze(runs, "uneven"), "DST005")
    assert finding.rank == 2 and finding.evidence["last_step_by_rank"]["2"] == 6


def test_a_watch_failing_on_one_rank_does_not_stop_the_gather_of_the_others(runs: Path) -> None:
    run = diagnose.load(runs / "broken_watch" / "run.jsonl")
    gathered = run.ranks[0].series("ranks_loss_max", keep_nan=True)
    assert list(gathered.index) == list(range(2, 14, 2))  # every scheduled exchange happened
    assert math.isfinite(gathered.loc[2]) and all(math.isnan(v) for v in gathered.loc[4:])  # rank 1 sends NaN
    errors = run.ranks[1].events.query("event == 'probe_error'")
    assert list(errors["probe"]) == ["watch"]


def test_missing_rank_file_is_reported(runs: Path, tmp_path: Path) -> None:
    for rank in (0, 2):
        (tmp_path / f"run.rank{rank}.jsonl").write_bytes((runs / "healthy" / f"run.rank{rank}.jsonl").read_bytes())
    finding = _only(_analyze(tmp_path, "."), "DST005")
    assert finding.evidence["missing_ranks"] == [1] and finding.rank == 1
