"""The demo: train a small classifier twice, once healthy and once with a classic fault.

Data are generated (Gaussian clusters, one per class), so the demo needs no
download and runs in seconds on a laptop CPU. Both runs are recorded with the
probes (`diagnose.watch`), exactly as a user's training would be.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

import diagnose

NUM_CLASSES = 10
FEATURES = 32
BATCH = 64
EVAL_EVERY = 50
HEALTHY_LR = 0.05
# The fault: a learning rate one hundred times too high.
FAULT_FACTOR = 100


@dataclass(frozen=True)
class DemoRun:
    name: str
    lr: float
    description: str


RUNS = (
    DemoRun("healthy", HEALTHY_LR, f"plain SGD, learning rate {HEALTHY_LR}"),
    DemoRun(
        "lr-too-high",
        HEALTHY_LR * FAULT_FACTOR,
        f"the same, learning rate {HEALTHY_LR * FAULT_FACTOR:g} ({FAULT_FACTOR}x too high)",
    ),
)


def make_data(seed: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` points in clusters, one per class, with enough overlap that the task is not trivial."""
    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(NUM_CLASSES, FEATURES, generator=torch.Generator().manual_seed(1234)) * 1.5
    labels = torch.randint(0, NUM_CLASSES, (n,), generator=gen)
    points = centres[labels] + torch.randn(n, FEATURES, generator=gen) * 2.0
    return points, labels


def make_model(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(FEATURES, 128),
        nn.ReLU(),
        nn.Linear(128, 128),
        nn.ReLU(),
        nn.Linear(128, NUM_CLASSES),
    )


def train(
    path: Path, demo_run: DemoRun, *, steps: int = 400, seed: int = 0, on_step: Callable[[int], None] | None = None
) -> Path:
    """Train one run with the probes attached and write its run file to ``path`` (replaced if present)."""
    path.unlink(missing_ok=True)
    x, y = make_data(seed, steps * BATCH)
    val_x, val_y = make_data(seed + 1, 1000)
    model = make_model(seed)
    optimizer = torch.optim.SGD(model.parameters(), lr=demo_run.lr)
    criterion = nn.CrossEntropyLoss()
    metadata = {
        "task": "multiclass",
        "num_classes": NUM_CLASSES,
        "loss_fn": "cross_entropy",
        "description": demo_run.description,
    }
    with diagnose.watch(model, optimizer, path=path, preset="default", metadata=metadata, name=demo_run.name) as w:
        for step in range(1, steps + 1):
            batch = slice((step - 1) * BATCH, step * BATCH)
            optimizer.zero_grad()
            loss = criterion(model(x[batch]), y[batch])
            loss.backward()
            optimizer.step()
            w.log(loss=loss)
            if step % EVAL_EVERY == 0:
                w.log(**_evaluate(model, criterion, val_x, val_y))
            if on_step is not None:
                on_step(step)
    return path


def _evaluate(model: nn.Module, criterion: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    model.eval()
    with torch.no_grad():
        logits = model(x)
        result = {
            "val_loss": criterion(logits, y).item(),
            "val_accuracy": (logits.argmax(1) == y).float().mean().item(),
        }
    model.train()
    return result
