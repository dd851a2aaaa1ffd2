"""Step-time overhead of the probes, as a ratio to the same training step with no probes.

Four workloads (an MLP 784-512-512-10, a small CNN, a small causal
transformer, and a deep narrow stack of 481 small modules where per-module
costs show) are trained with no probes and with each preset. Variants are
interleaved in rounds, in a fresh random order each round, so that drift of
the machine (thermal, other processes) hits all of them alike; each round
gives a ratio of step times against the unprobed steps of the same round,
and the figure is the median of those ratios over the rounds.

Per variant and round:

* "median": the median step time. It is the steady-state cost of a step
  and what the targets are set on; it does not see what happens at a few
  steps only: a flush of the run file, a sampled step, a live judgement.
* "mean": the mean step time, which spreads those over the steps. A round
  of ``--steps`` steps starts a new run, so its sampled steps and early
  live judgements (steps 8, 16, 32) weigh more than in a long run: compare
  ``--steps 500``.
* "close" (ms, not a ratio): the time the watch takes to close after the
  last step (the last flush, and with live findings the last judgement),
  paid once per run and in neither figure above.
* "judged" (live only): how many judgements of the live rules a round made
  and their CPU time, wherever they ran, as a share of the unprobed round.
  A round is a run of ``--steps`` steps, so it holds the early checkpoints
  (steps 8, 16, 32) that a long run pays once; with ``--clock process`` a
  judgement on its own thread is counted in the steps it overlaps, and
  spread over many of them it moves the median too: "live" minus "default"
  is then about this share, what the rules cost, not the per-step sentinel.

The noise is measured, not assumed: each round also trains an unprobed
copy ("A/A"), whose ratio to the unprobed steps would be 1.000 on a quiet
machine. The "noise" column is the larger of its distance from 1 and half
the interquartile range of its per-round ratios; a difference smaller than
that is not a measurement. On a small shared VM use ``--clock cpu
--threads 1`` and read the load average printed with it. With ``--clock
cpu`` only the training thread's CPU time counts: a live judgement that runs
on its own thread (see `diagnose.live.monitor`) is left out of "live" there,
and counts in wall time (``--clock wall``) only as far as it holds up the
training thread. ``--clock process`` counts the CPU time of every thread of
this process, the judgement's included: with ``--threads 1`` it is what the
live findings cost in all, wherever they run.

    python benchmarks/overhead.py --threads 1 --clock cpu [--rounds 8] [--steps 50]

On a GPU, ``--device cuda`` trains the same workloads there and ends every
timed step with ``torch.cuda.synchronize()``, unprobed steps too, so that a
step's time is the work it queued and not only the launches; it takes the
wall clock, since the CPU time of a waiting thread says nothing about the
device. The probes' values stay on the device until a flush, so what shows
is their launch cost and the flush's transfer spread over the steps.

The C allocator's thresholds are pinned first (glibc's ``mallopt``; ``--malloc
as-is`` leaves them): by default glibc moves them with the sizes it has seen
and gives the top of its heap back to the system whenever enough of it is
free, so whether a step of the MLP takes ~1,150 page faults (4.5 MB zeroed
again, ~4 ms of kernel time, a third of the step) or none depends on where
the last few small allocations happened to land. Measured here with
``getrusage``: it flipped between the two at random from one 50-step run to
the next, for every variant and for the unprobed one alike, so it was noise
larger than any probe's cost; pinned, every variant takes ~0 faults a step.

Each round starts with a full garbage collection, outside the timing. Python's
oldest generation is collected when enough objects have survived the younger
ones since the last time, whoever made them: with torch and pandas loaded
(~335,000 objects tracked) such a collection took ~210 ms, one step of a
deep-narrow round five times over, and fell on one variant or another
every two or three rounds, as the rounds before had left it. Collected
first, each round pays only for the collections its own objects bring.

Variants: "default-signals-off" is the default preset without the bug
signatures (`Preset.signatures`), so that what they cost on the default
preset is "default" minus it. Targets: default preset <= 1.05x, full preset
<= 1.3x on every workload; live (default preset with live findings and
stop_on) within the noise of default.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import dataclasses
import gc
import os
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from torch import nn

import diagnose
from diagnose.probes.presets import get_preset

VARIANTS = ("none", "A/A", "minimal", "default", "default-signals-off", "live", "full")
PROBED = VARIANTS[2:]
TARGETS = {"default": 1.05, "full": 1.3}
# "live": the default preset with the live rules judging the run and stop_on="error" (the sentinel every
# step); the other presets are measured with live findings off, as they were before it existed.
OPTIONS = {
    "live": {"preset": "default", "stop_on": "error"},
    "default-signals-off": {"preset": dataclasses.replace(get_preset("default"), signatures=False), "live": False},
}


class CausalTransformer(nn.Module):
    def __init__(self, vocab: int = 256, width: int = 128, layers: int = 2, heads: int = 4, context: int = 64) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.position = nn.Embedding(context, width)
        block = nn.TransformerEncoderLayer(width, heads, 4 * width, dropout=0.0, batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(block, layers, enable_nested_tensor=False)
        self.head = nn.Linear(width, vocab)
        self.register_buffer("mask", nn.Transformer.generate_square_subsequent_mask(context))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        hidden = self.embed(tokens) + self.position(positions)
        return self.head(self.blocks(hidden, mask=self.mask, is_causal=True))


def mlp() -> tuple[nn.Module, torch.Tensor, torch.Tensor, Callable]:
    model = nn.Sequential(nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10))
    return model, torch.randn(128, 784), torch.randint(0, 10, (128,)), nn.functional.cross_entropy


def cnn() -> tuple[nn.Module, torch.Tensor, torch.Tensor, Callable]:
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * 8 * 8, 10),
    )
    return model, torch.randn(32, 3, 32, 32), torch.randint(0, 10, (32,)), nn.functional.cross_entropy


def transformer() -> tuple[nn.Module, torch.Tensor, torch.Tensor, Callable]:
    tokens = torch.randint(0, 256, (16, 65))

    def loss_fn(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))

    return CausalTransformer(), tokens[:, :-1], tokens[:, 1:], loss_fn


def deep_narrow() -> tuple[nn.Module, torch.Tensor, torch.Tensor, Callable]:
    """160 blocks of Linear(32, 32) + LayerNorm + ReLU: 481 modules of which 320 hold
    parameters, each too small for its own work to hide a per-module cost."""
    blocks = [layer for _ in range(160) for layer in (nn.Linear(32, 32), nn.LayerNorm(32), nn.ReLU())]
    model = nn.Sequential(*blocks, nn.Linear(32, 10))
    return model, torch.randn(64, 32), torch.randint(0, 10, (64,)), nn.functional.cross_entropy


WORKLOADS = {
    "mlp-784-512-512-10": mlp,
    "small-cnn": cnn,
    "causal-transformer": transformer,
    "deep-narrow-481-modules": deep_narrow,
}


CLOCKS = {"wall": time.perf_counter, "cpu": time.thread_time, "process": time.process_time}
clock = time.perf_counter
device = torch.device("cpu")


def tick() -> float:
    """The clock, once the device has finished what the step queued (no wait on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return clock()


def train_step(
    model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, loss_fn: Callable, watch: Any
) -> None:
    """One step of the benchmarks' training loop, its loss logged to ``watch`` when there is one."""
    optimizer.zero_grad(set_to_none=True)
    loss = loss_fn(model(x), y)
    loss.backward()
    optimizer.step()
    if watch is not None:
        watch.log(loss=loss)


def time_steps(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    loss_fn: Callable,
    variant: str,
    steps: int,
    folder: Path,
) -> tuple[list[float], float, list[float]]:
    """The step times of one round of ``variant`` (the first two left out), the time its watch took to close,
    and the CPU seconds of each live judgement it made (see `LiveMonitor.judged`)."""
    options = OPTIONS.get(variant, {"preset": variant, "live": False})
    probed = variant in PROBED
    gc.collect()  # the garbage of the rounds before is collected here, untimed (see the module docstring)
    probes = diagnose.watch(model, optimizer, folder / f"{variant}.jsonl", **options) if probed else nullcontext()
    times = []
    with probes as w:
        for _ in range(steps):
            start = tick()
            try:  # stop_on ends the step at the next step boundary: the log call or the next forward
                train_step(model, optimizer, x, y, loss_fn, w)
            except diagnose.TrainingStopped:  # a live finding on the benchmark model: time what ran
                times.append(tick() - start)
                break
            times.append(tick() - start)
        closing = tick()
    closed = tick() - closing
    live = getattr(w, "_live", None)
    judged = [cpu for _, cpu in live.judged] if live is not None else []
    return times[2:], closed, judged  # the first steps of a round pay for hook installation and caches


def measure(build: Callable, rounds: int, steps: int, folder: Path) -> dict[str, dict[str, float]]:
    """Per statistic ("median", "mean" of a round's step times): the median over rounds of each variant's
    figure over the unprobed one's in the same round, the unprobed step time, and the A/A noise; and
    under "close", each variant's median time to close its watch (ms), a cost paid once per run."""
    torch.manual_seed(0)
    model, x, y, loss_fn = build()
    model, x, y = model.to(device), x.to(device), y.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    time_steps(model, optimizer, x, y, loss_fn, "none", steps, folder)  # warm-up
    statistics_of = {"median": statistics.median, "mean": statistics.mean}
    ratios = {stat: {v: [] for v in VARIANTS[1:]} for stat in statistics_of}
    baselines = {stat: [] for stat in statistics_of}
    closes = {v: [] for v in VARIANTS[1:]}
    judged: list[tuple[int, float, float]] = []  # per round: live judgements, their CPU, the unprobed round
    order = list(VARIANTS)
    for _ in range(rounds):
        random.shuffle(order)
        rounds_of = {v: time_steps(model, optimizer, x, y, loss_fn, v, steps, folder) for v in order}
        times = {v: t for v, (t, _, _) in rounds_of.items()}
        for variant in closes:
            closes[variant].append(rounds_of[variant][1] * 1e3)
        judged.append((len(rounds_of["live"][2]), sum(rounds_of["live"][2]), sum(times["none"])))
        for stat, of in statistics_of.items():
            figures = {v: of(t) for v, t in times.items()}
            baselines[stat].append(figures["none"])
            for variant in ratios[stat]:
                ratios[stat][variant].append(figures[variant] / figures["none"])
    summaries = {stat: _summary(ratios[stat], baselines[stat]) for stat in statistics_of}
    return summaries | {
        "close": {v: statistics.median(c) for v, c in closes.items()},
        "judged": {
            "count": statistics.median(n for n, _, _ in judged),
            "ms": statistics.median(cpu for _, cpu, _ in judged) * 1e3,
            "share": statistics.median(cpu / base for _, cpu, base in judged),
        },
    }


def _summary(ratios: dict[str, list[float]], baselines: list[float]) -> dict[str, float]:
    same = ratios["A/A"]
    quartiles = statistics.quantiles(same, n=4) if len(same) >= 2 else [same[0]] * 3
    noise = max(abs(statistics.median(same) - 1), (quartiles[2] - quartiles[0]) / 2)
    return {
        "step_ms": statistics.median(baselines) * 1e3,
        **{v: statistics.median(r) for v, r in ratios.items()},
        "noise": noise,
    }


# glibc's mallopt parameters: M_TRIM_THRESHOLD and M_MMAP_THRESHOLD (malloc.h). Setting either
# switches off glibc's moving of both.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_KEPT_FREE = 1 << 30  # the heap keeps up to 1 GiB free at its top instead of giving it back
_MMAPPED_FROM = 32 << 20  # blocks of 32 MiB and more get their own mapping (glibc's largest default)


def pin_allocator() -> str:
    """Pin glibc's trim and mmap thresholds (see the module docstring); what was done, for the header."""
    name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(name).mallopt if name else None
    except (OSError, AttributeError):
        mallopt = None
    if mallopt is None:
        return "allocator as is (no glibc mallopt)"
    pinned = mallopt(_M_TRIM_THRESHOLD, _KEPT_FREE) == 1 and mallopt(_M_MMAP_THRESHOLD, _MMAPPED_FROM) == 1
    return "allocator thresholds pinned" if pinned else "allocator as is (mallopt refused)"


def _device_name() -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"


def load() -> str:
    return "load average " + ", ".join(f"{v:.2f}" for v in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    parser.add_argument(
        "--clock",
        choices=CLOCKS,
        default="wall",
        help="wall: elapsed time; cpu: CPU time of the training thread, which other processes "
        "cannot inflate (use with --threads 1, where that thread does all the work); process: CPU time "
        "of all this process's threads (a live judgement's thread too)",
    )
    parser.add_argument("--device", default="cpu", help="where to train: cpu, or cuda (wall clock only)")
    parser.add_argument("--only", choices=WORKLOADS, action="append", help="this workload only (repeatable)")
    parser.add_argument(
        "--malloc",
        choices=("pinned", "as-is"),
        default="pinned",
        help="pinned: fix glibc's trim and mmap thresholds, so that page faults from the heap's shrinking "
        "and growing do not land on one variant at random; as-is: leave the allocator alone",
    )
    args = parser.parse_args()
    allocator = pin_allocator() if args.malloc == "pinned" else "allocator as is"
    global clock, device
    clock = CLOCKS[args.clock]
    device = torch.device(args.device)
    if device.type == "cuda" and args.clock != "wall":
        parser.error("--device cuda measures the wall clock: a thread waiting on the GPU burns no CPU time")
    if args.threads:
        torch.set_num_threads(args.threads)
    random.seed(0)
    print(
        f"torch {torch.__version__}, {_device_name()}, {torch.get_num_threads()} threads, {args.clock} clock, "
        f"{args.rounds} rounds x {args.steps} steps, {allocator}; {load()}"
    )
    header = f"{'workload':<24}{'':<7}{'step (ms)':>10}" + "".join(f"{v:>10}" for v in VARIANTS[1:]) + f"{'noise':>8}"
    print(header.replace("default-signals-off", "  no-signals"))
    failed = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, build in WORKLOADS.items():
            if args.only and name not in args.only:
                continue
            results = measure(build, args.rounds, args.steps, Path(tmp))
            for stat in ("median", "mean"):
                result = results[stat]
                print(
                    f"{name if stat == 'median' else '':<24}{stat:<7}{result['step_ms']:>10.2f}"
                    + "".join(f"{result[v]:>9.3f}x" for v in VARIANTS[1:])
                    + f"{result['noise']:>8.3f}"
                )
            print(f"{'':<24}{'close':<7}{'(ms)':>10}" + "".join(f"{results['close'][v]:>10.1f}" for v in VARIANTS[1:]))
            judged = results["judged"]
            print(
                f"{'':<24}{'judged':<7}live: {judged['count']:.0f} judgements a round, {judged['ms']:.1f} ms CPU "
                f"({judged['share']:.1%} of the unprobed round)"
            )
            result = results["median"]
            failed += [f"{name}/{v}" for v, limit in TARGETS.items() if result[v] > limit]
            if result["live"] - result["default"] > result["noise"]:
                failed.append(f"{name}/live")
    print(
        "targets (on the median): "
        + ", ".join(f"{v} <= {limit}x" for v, limit in TARGETS.items())
        + ", live - default <= noise"
        + (" -- all met" if not failed else f" -- missed: {', '.join(failed)}")
        + f"; {load()}"
    )


if __name__ == "__main__":
    main()
