"""What each group of probes of the default preset costs per training step, by leaving it out.

`overhead.py` says whether a preset meets its target; this says where a preset's
cost goes. Each variant is the default preset without one group of probes
(`GROUPS`), and its cost is the default's step time minus its own. The
variants train their own copies of the same model, one step each in a fresh
random order, round after round, so that two steps compared ran within one
round of each other on the same machine. The A/A copy (unprobed, like the
reference) is the noise: on a shared 2-core VM at load 2-4 it stayed within
10-40 us of the 7-11 ms MLP and CNN steps, where the ratio of separate rounds
(`overhead.py`) moves by a few percent; on the 34-53 ms steps of the other two
workloads, whose rounds last long enough for the load to change within them,
it reached 60-900 us.

Per variant: the median over rounds of its step's CPU time (the training
thread's, ``time.thread_time``) minus the unprobed copy's in the same round.
The figures are in-situ costs: what a group adds to a real step, where the
training's own kernels have just left the caches cold for the probes' code,
often several times what the same calls cost in a tight loop. Leaving a group
out also changes what the others cost there, so the groups do not add up to
the default's figure, and a small group's figure moves from run to run by more
than the A/A noise (two MLP runs: the non-finite origin 166 and 4 us, the
gradient norms 313 and 195 us): read the large ones.

Hooks that diagnose installs for the whole process (the wrapper of
``Tensor.backward``) run for every copy's backward, the unprobed one's too, so
they cancel out of the differences; each copy's own hooks do not.

    python benchmarks/probe_cost.py [--steps 300] [--only mlp-784-512-512-10]
"""

from __future__ import annotations

import argparse
import copy
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from overhead import WORKLOADS, load, pin_allocator, train_step

from diagnose.probes.watch import Watch

# Groups of probes left out together, by probe name (`Probe.name`).
GROUPS = {
    "gradient norms": ("gradients",),
    "loss gradient": ("loss_gradient",),
    "non-finite origin": ("nonfinite", "nonfinite_op"),
    "sampled": (
        "activations",
        "layer_inputs",
        "carried_gradients",
        "step_gradients",
        "loss_inputs",
        "update_ratio",
        "training_mode",
    ),
    "per-step facts": (
        "step_time",
        "memory",
        "learning_rate",
        "warnings",
        "duplicate_rows",
        "optimizer_coverage",
        "recurrent_layout",
    ),
}
_EVERY_PROBE = tuple(name for names in GROUPS.values() for name in names)


class _WatchWithout(Watch):
    """The default preset's watch without the probes named in ``left_out``."""

    def __init__(self, *args: Any, left_out: tuple[str, ...], **kwargs: Any) -> None:
        self.left_out = left_out
        super().__init__(*args, **kwargs)

    def _choose_probes(self, scaler: Any) -> list:
        return [probe for probe in super()._choose_probes(scaler) if probe.name not in self.left_out]


def variants() -> dict[str, tuple[str, ...] | None]:
    """Name -> the probes left out of the default preset; None: no watch at all."""
    return (
        {"none": None, "A/A": None, "default": ()}
        | {f"-{group}": names for group, names in GROUPS.items()}
        | {"watch, no probe": _EVERY_PROBE}
    )


def measure(build: Callable, steps: int, folder: Path) -> dict[str, float]:
    """Per variant, the median over rounds of its step's CPU seconds minus the unprobed copy's."""
    torch.manual_seed(0)
    model, x, y, loss_fn = build()
    copies = []
    for name, left_out in variants().items():
        trained = copy.deepcopy(model)
        optimizer = torch.optim.AdamW(trained.parameters(), lr=1e-4)
        watch = None
        if left_out is not None:
            path = folder / f"{len(copies)}.jsonl"
            watch = _WatchWithout(trained, optimizer, path, live=False, left_out=left_out)
        copies.append((name, trained, optimizer, watch))
    times: dict[str, list[float]] = {name: [] for name, *_ in copies}
    for _ in range(steps):
        for name, trained, optimizer, watch in random.sample(copies, len(copies)):
            start = time.thread_time()
            train_step(trained, optimizer, x, y, loss_fn, watch)
            times[name].append(time.thread_time() - start)
    for *_, watch in copies:
        if watch is not None:
            watch.close()
    unprobed = times["none"][10:]  # the first steps pay for hook installation and caches
    costs = {name: statistics.median(a - b for a, b in zip(t[10:], unprobed, strict=True)) for name, t in times.items()}
    return costs | {"step": statistics.median(unprobed)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="steps of each variant")
    parser.add_argument("--only", choices=WORKLOADS, action="append", help="this workload only (repeatable)")
    args = parser.parse_args()
    torch.set_num_threads(1)  # the training thread does all the work: its CPU time is the step's
    random.seed(0)
    print(f"torch {torch.__version__}, 1 thread, {args.steps} steps a variant, {pin_allocator()}; {load()}")
    names = [name for name in variants() if name != "none"]
    print(f"{'workload':<26}{'step (us)':>10}" + "".join(f"{name:>20}" for name in names))
    with tempfile.TemporaryDirectory() as tmp:
        for workload, build in WORKLOADS.items():
            if args.only and workload not in args.only:
                continue
            costs = measure(build, args.steps, Path(tmp))
            default = costs["default"]
            # A left-out group's cost is what the default preset pays for it; the others are as measured.
            shown = {name: default - costs[name] if name.startswith("-") else costs[name] for name in names}
            print(f"{workload:<26}{costs['step'] * 1e6:>10.0f}" + "".join(f"{shown[n] * 1e6:>20.1f}" for n in names))
    print(
        "figures: us of CPU a step; 'A/A' and 'default' over the unprobed step, a '-group' column what that "
        f"group costs within the default preset (default minus default without it); {load()}"
    )


if __name__ == "__main__":
    main()
