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
    """Train ``scenario`` on WORLD processes; their rank files go into the folder ``path``."""
    path.mkdir(parents=True, exist_ok=True)
    context = mp.spawn(_worker, args=(_free_port(), scenario, str(path)), nprocs=WORLD, join=False)
    deadline = time.monotonic() + TIMEOUT_S
    while not context.join(timeout=1):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            raise SystemExit(f"recording {path} hung in a collective")


def _worker(rank: int, port: int, scenario: Scenario, folder: str) -> None:
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=WORLD,
        timeout=datetime.timedelta(seconds=TIMEOUT_S),
    )
    torch.set_num_threads(1)
    try:
        _train(scenario, rank, Path(folder))
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


def _train(scenario: Scenario, rank: int, folder: Path) -> None:
    torch.manual_seed(0)  # identical replicas at the start
    model = nn.parallel.DistributedDataParallel(_mlp()) if scenario.sync == "ddp" else _mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.2)
    x, y = _shard(rank)
    if scenario.fault == "outlier" and rank == 1:
        x = x * 20
    steps = 6 if scenario.fault == "short" and rank == 2 else STEPS
    options = DistributedOptions(mode="gather" if scenario.gather else "files", gather_every=2, checksum_every=1)
    name = f"{folder.parent.name}-{folder.name}"  # DST002/bad: the run DST002-bad, its files DST002-bad.rank<R>.jsonl
    with diagnose.watch(model, optimizer, folder / f"{name}.jsonl", distributed=options) as w:
        for step in range(1, steps + 1):
            inputs = x.clone()
            if scenario.fault == "nan" and rank == 1 and step == 6:
                inputs[0, 0] = math.nan
            if scenario.fault == "slow" and rank == 2:
                time.sleep(0.03)
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
