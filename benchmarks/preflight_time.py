"""How long ``diagnose.preflight`` takes on a model the size of the pytorch/examples MNIST CNN, on CPU.

The model is that example's ``Net`` (two convolutions, 1.2 M parameters) with
a loader of 20 batches of 64 MNIST-shaped images (random pixels, normalised
as the example does; random labels); one torch thread, as on a laptop core.
Prints the time of each check and the total against the default budget.

    python benchmarks/preflight_time.py [--threads 1] [--budget 30]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from diagnose.probes.preflight import preflight
from diagnose.probes.preflight.runner import BUDGET_S, time_spent


class Net(nn.Module):
    """The MNIST CNN of pytorch/examples (mnist/main.py)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 32, 3, 1), nn.Conv2d(32, 64, 3, 1)
        self.dropout1, self.dropout2 = nn.Dropout(0.25), nn.Dropout(0.5)
        self.fc1, self.fc2 = nn.Linear(9216, 128), nn.Linear(128, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        x = self.dropout1(torch.flatten(torch.max_pool2d(x, 2), 1))
        return torch.log_softmax(self.fc2(self.dropout2(torch.relu(self.fc1(x)))), dim=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--budget", type=float, default=BUDGET_S)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    loader = [
        ((torch.rand(64, 1, 28, 28, generator=gen) - 0.1307) / 0.3081, torch.randint(0, 10, (64,), generator=gen))
        for _ in range(20)
    ]
    with tempfile.TemporaryDirectory() as folder:
        start, cpu_start = time.perf_counter(), time.process_time()
        analysis = preflight(
            Net(),
            nn.NLLLoss(),
            loader,
            lambda p: torch.optim.Adadelta(p, lr=1.0),
            {"task": "multiclass", "num_classes": 10},
            path=Path(folder) / "pf.jsonl",
            budget_s=args.budget,
        )
        total, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    for _, event in analysis.run.events.iterrows():
        if isinstance(event.get("experiment"), str):  # the checks' records; other events have none
            print(f"  {event['experiment']:<14} {event.get('seconds', float('nan')):6.2f} s")
    print(time_spent(analysis.run))
    print(
        f"whole preflight call: {total:.2f} s (budget {args.budget:g} s) {'OK' if total <= args.budget else 'OVER'}, "
        f"{cpu:.2f} s of CPU (the wall time a free core would take; other processes inflate the first); "
        f"load average {', '.join(f'{v:.1f}' for v in os.getloadavg())}"
    )


if __name__ == "__main__":
    main()
