"""The multi-process examples (DST rules), recorded by ``record.py``: three CPU processes under
``torch.distributed`` (gloo), each writing its own rank file; the example is the folder of rank files.

Each rank trains an MLP on its own shard of one learnable task for 14 steps;
a scenario plants one fault on one rank (a NaN input, a slow data loader, a
drifting replica, a shard without its normalisation, a rank that stops
early). ``python sample_runs/record.py dst-nan`` records one.
"""

from __future__ import annotations

import datetime
import math
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

import diagnose
from diagnose.probes.distributed import DistributedOptions

WORLD = 3
STEPS = 14
TIMEOUT_S = 600  # a collective that hangs fails the recording instead of stalling it (start-up included)


@dataclass(frozen=True)
class Scenario:
    fault: str  # which fault is planted: a key of the branches in `_train`, or "none"
    expect: str | None = None
    good_of: str | None = None
    about: str = ""
    file: str | None = None
    primary: str | None = None
    # How the replicas agree: DDP, gradients averaged by hand with all_reduce, or not at all.
    sync: str = "ddp"
    gather: bool = False  # the "gather" mode: rank 0 also records the cross-rank summary


SCENARIOS: dict[str, Scenario] = {
    "dst-outlier": Scenario(
        "outlier",
        expect="DST001",
        file="DST001/bad",
        primary="GRD003",  # the unnormalised shard's updates are out of scale first
        about="rank 1's shard was not normalised (inputs 20x): its loss stands out",
    ),
    "dst-nan": Scenario(
        "nan",
        expect="DST002",
        file="DST002/bad",
        primary="NF001",
        about="one NaN in rank 1's inputs at step 6 poisons every replica",
    ),
    "dst-slow": Scenario(
        "slow", expect="DST003", file="DST003/bad", about="rank 2 waits 30 ms for each batch: the others wait for it"
    ),
    "dst-desync": Scenario(
        "drift",
        expect="DST004",
        file="DST004/bad",
        sync="by_hand",
        about="gradients averaged by hand; rank 1's last layer is nudged at step 5 and nothing re-syncs it",
    ),
    "dst-hand-averaged": Scenario(
        "none",
        good_of="DST004",
        file="DST004/good",
        sync="by_hand",
        about="the same hand-averaged gradients, no replica touched: the parameters stay identical",
    ),
    "dst-uneven": Scenario(
        "short",
        expect="DST005",
        file="DST005/bad",
        sync="none",
        about="ranks that exchange nothing (one model each); rank 2's shard runs out after 6 steps, the others "
        "train 14",
    ),
    "dst-healthy": Scenario(
        "none",
        file="healthy/ddp",
        gather=True,
        about="DDP over three shards of one task, with the cross-rank summary gathered every 2 steps",
    ),
}


def record(scenario: Scenario, path: Path) -> None:
    """Train ``scenario`` on WORLD processes; their rank files go into the folder ``path``.

    The run is named after the example (DST002/bad: the run DST002-bad, its files DST002-bad.rank<R>.jsonl).
    """
    if not record_all({path / f"{path.parent.name}-{path.name}.jsonl": scenario}):
        raise SystemExit(f"recording {path} hung in a collective")


def record_all(runs: Mapping[Path, Scenario], timeout_s: float = TIMEOUT_S) -> bool:
    """Train every scenario in turn in one launch of WORLD processes (start-up paid once), each into
    its own run file (``run.jsonl``: ``run.rank<R>.jsonl``). False when they did not finish in time: a
    collective hung, and the processes were killed rather than left to stall the caller."""
    for path in runs:
        path.parent.mkdir(parents=True, exist_ok=True)
    jobs = [(str(path), scenario) for path, scenario in runs.items()]
    context = mp.spawn(_worker, args=(_free_port(), jobs, timeout_s), nprocs=WORLD, join=False)
    deadline = time.monotonic() + timeout_s
    while not context.join(timeout=1):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            return False
    return True


def _worker(rank: int, port: int, jobs: list[tuple[str, Scenario]], timeout_s: float) -> None:
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=WORLD,
        timeout=datetime.timedelta(seconds=timeout_s),
    )
    torch.set_num_threads(1)
    try:
        for path, scenario in jobs:
            _train(scenario, rank, Path(path))
            dist.barrier()
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _shard(rank: int, n: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(100 + rank)  # every rank its own shard
    x = torch.randn(n, 8, generator=generator)
    return x, x[:, :3].argmax(dim=1)  # the same learnable rule on every shard


def _mlp() -> nn.Sequential:
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3))


def _train(scenario: Scenario, rank: int, path: Path) -> None:
    torch.manual_seed(0)  # identical replicas at the start
    model = nn.parallel.DistributedDataParallel(_mlp()) if scenario.sync == "ddp" else _mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.2)
    x, y = _shard(rank)
    if scenario.fault == "outlier" and rank == 1:
        x = x * 20
    steps = 6 if scenario.fault == "short" and rank == 2 else STEPS
    options = DistributedOptions(mode="gather" if scenario.gather else "files", gather_every=2, checksum_every=1)
    with diagnose.watch(model, optimizer, path, distributed=options) as w:
        for step in range(1, steps + 1):
            inputs = x.clone()
            if scenario.fault == "nan" and rank == 1 and step == 6:
                inputs[0, 0] = math.nan
            if scenario.fault == "slow" and rank == 2:
                time.sleep(0.03)
            if scenario.fault == "broken_watch" and rank == 1 and step == 4:
                w._fail(RuntimeError("simulated failure of the watch on one rank"))  # what an internal error does
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(model(inputs), y)
            loss.backward()
            if scenario.sync == "by_hand":
                for p in model.parameters():
                    dist.all_reduce(p.grad)
                    p.grad /= WORLD
            optimizer.step()
            if scenario.fault == "drift" and rank == 1 and step == 5:
                with torch.no_grad():
                    model[4].weight.add_(0.01)
            w.log(loss=loss)
