"""Step-time overhead of the probes under torch.distributed, as a ratio to the unprobed run.

Two processes (gloo, CPU) train an MLP 784-512-512-10 under DDP. Each round
runs every variant once, in an order shuffled per round (the same on both
ranks): no probes, the default preset writing one file per rank ("files"),
and the same plus the cross-rank gather every 10 steps ("gather"). A
variant's figure for a round is its median step time over the unprobed
one's in that round; the result is the median over rounds.

    python benchmarks/distributed_overhead.py [--rounds 7] [--steps 60]

Target: files and gather <= 1.05x (the single-process default preset's budget).
"""

from __future__ import annotations

import argparse
import random
import socket
import statistics
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

import diagnose
from diagnose.probes.distributed import DistributedOptions

VARIANTS = ("none", "files", "gather")
TARGET = 1.05


def _step_times(variant: str, steps: int, folder: Path, rank: int) -> list[float]:
    torch.manual_seed(0)
    model = nn.parallel.DistributedDataParallel(
        nn.Sequential(nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10))
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = torch.randn(128, 784), torch.randint(0, 10, (128,))
    watch = (
        nullcontext()
        if variant == "none"
        else diagnose.watch(model, optimizer, folder / f"{variant}.jsonl", distributed=DistributedOptions(mode=variant))
    )
    times = []
    with watch as w:
        for _ in range(steps):
            start = time.perf_counter()
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
            if w is not None:
                w.log(loss=loss)
            times.append(time.perf_counter() - start)
    return times[5:]  # warm-up


def _worker(rank: int, port: int, rounds: int, steps: int, results: dict) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    torch.set_num_threads(1)
    ratios: dict[str, list[float]] = {v: [] for v in VARIANTS if v != "none"}
    with tempfile.TemporaryDirectory() as folder:
        for round_index in range(rounds):
            order = list(VARIANTS)
            random.Random(round_index).shuffle(order)  # the same order on every rank
            medians = {}
            for variant in order:
                dist.barrier()
                medians[variant] = statistics.median(_step_times(variant, steps, Path(folder), rank))
            for variant in ratios:
                ratios[variant].append(medians[variant] / medians["none"])
    if rank == 0:
        results.update({v: statistics.median(r) for v, r in ratios.items()})
    dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=60)
    args = parser.parse_args()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_worker, args=(port, args.rounds, args.steps, results), nprocs=2)
        for variant, ratio in results.items():
            verdict = "ok" if ratio <= TARGET else f"over the {TARGET}x target"
            print(f"{variant:>7}: {ratio:.3f}x the unprobed step time ({verdict})")


if __name__ == "__main__":
    main()
