"""Multi-process runs under torch.distributed (gloo, CPU): per-rank files, the rank reader, the DST rules.

One launch of three processes trains every scenario in turn (a fresh model and
file set each), so the suite pays for process start-up once.
"""

from __future__ import annotations

import datetime
import math
import socket
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from probe_models import mlp
from torch import nn

import diagnose
from diagnose.probes.distributed import DistributedOptions
from diagnose.rules.base import Severity

WORLD = 3
SCENARIOS = ("healthy", "nan", "slow", "desync", "outlier", "uneven", "broken_watch")


def _data(rank: int, n: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(100 + rank)  # every rank its own shard
    x = torch.randn(n, 8, generator=generator)
    return x, x[:, :3].argmax(dim=1)  # a learnable rule, the same on every shard


def _train(folder: Path, scenario: str, rank: int) -> None:
    torch.manual_seed(0)  # identical replicas at the start
    plain = scenario in ("desync", "uneven")  # no DDP: gradients averaged by hand, or not at all
    model = mlp() if plain else nn.parallel.DistributedDataParallel(mlp())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.2)
    x, y = _data(rank)
    if scenario == "outlier" and rank == 1:
        x = x * 20  # a shard that missed its normalisation
    steps = 6 if scenario == "uneven" and rank == 2 else 14
    options = DistributedOptions(
        mode="gather" if scenario in ("healthy", "broken_watch") else "files", gather_every=2, checksum_every=1
    )
    with diagnose.watch(model, optimizer, folder / scenario / "run.jsonl", distributed=options) as w:
        for step in range(1, steps + 1):
            inputs = x.clone()
            if scenario == "nan" and rank == 1 and step == 6:
                inputs[0, 0] = math.nan
            if scenario == "slow" and rank == 2:
                time.sleep(0.03)
            if scenario == "broken_watch" and rank == 1 and step == 4:
                w._fail(RuntimeError("simulated failure of the watch on one rank"))
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(model(inputs), y)
            loss.backward()
            if scenario == "desync":
                for p in model.parameters():
                    dist.all_reduce(p.grad)
                    p.grad /= dist.get_world_size()
            optimizer.step()
            if scenario == "desync" and rank == 1 and step == 5:
                with torch.no_grad():
                    model[2].weight.add_(0.01)  # one replica drifts; nothing re-syncs it
            w.log(loss=loss)


def _worker(rank: int, port: int, folder: str) -> None:
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=WORLD,
        timeout=datetime.timedelta(seconds=120),
    )
    torch.set_num_threads(1)
    try:
        for scenario in SCENARIOS:
            _train(Path(folder), scenario, rank)
            dist.barrier()
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("ranks")
    context = mp.spawn(_worker, args=(_free_port(), str(folder)), nprocs=WORLD, join=False)
    deadline = time.monotonic() + 420  # generous: 3 torch processes on a loaded 2-core machine
    while not context.join(timeout=1):
        if time.monotonic() > deadline:  # a hang is a failure, never a stuck suite
            for process in context.processes:
                process.kill()
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
    assert (finding.rank, finding.onset, finding.module) == (1, 5, "2")


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
