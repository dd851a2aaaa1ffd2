"""Whether a change to the probes left what they record as it was: seeded runs, their run files compared.

Trains each workload of `overhead.py` for 105 steps with each preset,
in three scenarios: clean; a weight set to NaN before step 15 (a NaN made in
forward); and a NaN gradient made in the backward of a middle layer at step 25
(the backward origin, read from the per-parameter gradient norms). One CPU
thread and a fixed seed make the runs repeat exactly; the fields that differ
from run to run whatever the code (the start time, pid and host of the first
record, ``step_time``, ``rss``) are masked. Live findings are off: they are
judged on their own thread. The diagnose tested is the one Python imports: set
PYTHONPATH to the tree, and run from outside it (a process started inside a
tree imports that tree's diagnose). Two such folders are then compared file by
file (``diff -rq``: no output, nothing changed).

    PYTHONPATH=/tmp/before python /path/to/benchmarks/same_records.py /tmp/records-before
    PYTHONPATH=/path/to/tree python /path/to/benchmarks/same_records.py /tmp/records-after
    diff -rq /tmp/records-before /tmp/records-after

``--only WORKLOAD`` (repeatable) writes that workload's files only.
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

import torch
from overhead import WORKLOADS
from torch import nn

import diagnose

PRESETS = ("minimal", "default", "full")
SCENARIOS = ("clean", "weight-nan", "backward-nan")
STEPS = 105  # past the duplicate-row check at step 100 and two samples of the 50-step schedules
_MASKED = frozenset({"started", "pid", "host", "step_time", "rss"})


def _poison_backward(module: nn.Module, args: object, output: torch.Tensor) -> None:
    output.register_hook(lambda grad: grad * float("nan"))


def record(folder: Path, workload: str, preset: str, scenario: str) -> Path:
    """Train one seeded run and write its run file, masked, into ``folder``."""
    torch.manual_seed(0)
    model, x, y, loss_fn = WORKLOADS[workload]()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    # Exact types: the attention's out_proj (a Linear subclass) is used without its forward being called.
    layers = [m for m in model.modules() if type(m) in (nn.Linear, nn.Conv2d)]
    middle = layers[len(layers) // 2]
    path = folder / f"{workload}-{preset}-{scenario}.jsonl"
    with warnings.catch_warnings(), diagnose.watch(model, optimizer, path, preset=preset, live=False) as w:
        warnings.simplefilter("ignore")
        for step in range(1, STEPS + 1):
            if scenario == "weight-nan" and step == 15:
                with torch.no_grad():
                    next(model.parameters()).view(-1)[0] = float("nan")
            hook = middle.register_forward_hook(_poison_backward) if scenario == "backward-nan" and step == 25 else None
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(x), y)
            loss.backward()
            optimizer.step()
            w.log(loss=loss)
            if hook is not None:
                hook.remove()
    lines = []
    for line in path.read_text().splitlines():
        fields = json.loads(line)
        lines.append(json.dumps({k: "*" if k in _MASKED else v for k, v in fields.items()}, sort_keys=True))
    path.write_text("\n".join(lines) + "\n")
    return path


def write(folder: Path, only: list[str] | None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    count = 0
    for workload in only or WORKLOADS:
        for preset in PRESETS:
            for scenario in SCENARIOS:
                record(folder, workload, preset, scenario)
                count += 1
    print(f"{count} run files in {folder} ({diagnose.__file__})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="where the run files go")
    parser.add_argument("--only", choices=WORKLOADS, action="append", help="this workload only (repeatable)")
    args = parser.parse_args()
    write(args.folder, args.only)


if __name__ == "__main__":
    main()
