"""Two gloo ranks on the CPU, trained with a watch: FSDP2 (``fully_shard``) and DDP with BatchNorm.

``python two_ranks.py FOLDER``: spawns the ranks, waits for them with a deadline (killing them after
it: a hang exits 3), and writes into FOLDER the run files of each scenario plus, per rank,
``<scenario>.rank<N>.json`` with what the test compares the recording with.
"""

from __future__ import annotations

import datetime
import json
import socket
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.distributed.tensor.debug import CommDebugMode

import diagnose

WORLD = 2
DEADLINE_S = 420  # a loaded 2-core machine starts two torch processes in tens of seconds
SLOW_RANK, SLOW_S = 1, 0.05


def _batch(rank: int, n: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(10 + rank)
    x = torch.randn(n, 8, generator=generator)
    return x, x[:, :3].argmax(dim=1)


def _step(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor) -> tuple:
    optimizer.zero_grad()
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    norm = nn.utils.clip_grad_norm_(model.parameters(), 0.05)  # clipped: the recording must be the norm before
    optimizer.step()
    return loss, norm


def fsdp2(folder: Path, rank: int) -> dict:
    """fully_shard with a watch that flushes every step (what deadlocked: a flush turned DTensor norms
    into a collective), and the collectives per step with and without the watch."""
    from torch.distributed.fsdp import fully_shard

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    for layer in (model[0], model[2], model):
        fully_shard(layer)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = _batch(rank)
    with CommDebugMode() as unwatched:
        _step(model, optimizer, x, y)
    norms, per_step = [], []
    with diagnose.watch(model, optimizer, folder / "fsdp2" / "run.jsonl", preset="full", flush_seconds=0.0) as w:
        for _ in range(6):
            with CommDebugMode() as counted:
                loss, norm = _step(model, optimizer, x, y)
                w.log(loss=loss)
            per_step.append(counted.get_total_counts())
            norms.append(float(norm.full_tensor()))
    return {"clip_norms": norms, "collectives_unwatched": unwatched.get_total_counts(), "collectives": per_step}


def ddp_batchnorm(folder: Path, rank: int) -> dict:
    """DDP broadcasts the BatchNorm buffers at the start of every forward: the fast rank waits there."""
    torch.manual_seed(0)
    inner = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 3))
    model = nn.parallel.DistributedDataParallel(inner)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = _batch(rank)
    with diagnose.watch(model, optimizer, folder / "ddp_batchnorm" / "run.jsonl") as w:
        for _ in range(14):
            if rank == SLOW_RANK:
                time.sleep(SLOW_S)  # a slow data path on that rank
            loss, _ = _step(model, optimizer, x, y)
            w.log(loss=loss)
    return {"slow_rank": SLOW_RANK}


SCENARIOS = {"fsdp2": fsdp2, "ddp_batchnorm": ddp_batchnorm}


def _rank(rank: int, port: int, folder: str) -> None:
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=WORLD,
        timeout=datetime.timedelta(seconds=120),  # a collective that hangs fails the rank in bounded time
    )
    torch.set_num_threads(1)
    try:
        for name, scenario in SCENARIOS.items():
            result = scenario(Path(folder), rank)
            (Path(folder) / f"{name}.rank{rank}.json").write_text(json.dumps(result))
            dist.barrier()
    finally:
        dist.destroy_process_group()


def main(folder: str) -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    context = mp.spawn(_rank, args=(port, folder), nprocs=WORLD, join=False)
    deadline = time.monotonic() + DEADLINE_S
    while not context.join(timeout=1):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            print("the ranks did not finish before the deadline", file=sys.stderr)
            return 3
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
