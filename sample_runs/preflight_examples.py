"""The preflight examples (PRE rules), recorded by ``record.py``: each a small real model run through
`diagnose.preflight` on one batch of clustered data, with one planted mistake (bad) or without it (good).

No time budget: every experiment runs to its end, so re-recording on a slower
machine gives the same verdicts. ``python sample_runs/record.py pre-mixing``
records one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

import diagnose

CLASSES = 10
FEATURES = 20
BATCH = 32
METADATA = {"task": "classification", "num_classes": CLASSES}

Batch = tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class Scenario:
    """One preflight run: the model, the batch (or a loader of batches), the optimizer and the loss."""

    model: Callable[[], nn.Module]
    expect: str | None = None  # the rule this run is the bad example of
    good_of: str | None = None  # the rule this run is the near miss of (it must stay quiet)
    about: str = ""
    data: Callable[[], Any] = lambda: clusters()
    optimizer: Callable[[Any], torch.optim.Optimizer] = lambda params: torch.optim.Adam(params, lr=1e-3)
    loss_fn: Callable[[], nn.Module] = nn.CrossEntropyLoss
    file: str | None = None
    primary: str | None = None


def clusters(n: int = BATCH, seed: int = 0) -> Batch:
    """One Gaussian cluster per class, well separated: a working model learns a batch of it fast."""
    gen = torch.Generator().manual_seed(seed)
    centres = 1.5 * torch.randn(CLASSES, FEATURES, generator=torch.Generator().manual_seed(99))
    labels = torch.randint(0, CLASSES, (n,), generator=gen)
    return centres[labels] + torch.randn(n, FEATURES, generator=gen), labels


def batches(count: int = 8) -> list[Batch]:
    """A loader of ``count`` batches (the learning-rate range test walks through it)."""
    x, y = clusters(count * BATCH, seed=1)
    return [(x[i : i + BATCH], y[i : i + BATCH]) for i in range(0, len(x), BATCH)]


def mlp(hidden: int = 32, head_in: int | None = None) -> nn.Sequential:
    """``head_in`` other than ``hidden``: a last layer sized for another width (a shape mismatch)."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(FEATURES, hidden), nn.ReLU(), nn.Linear(head_in or hidden, CLASSES))


def last_layer_scaled(gain: float) -> nn.Sequential:
    model = mlp()
    with torch.no_grad():
        model[-1].weight.mul_(gain)
        model[-1].bias.mul_(gain)
    return model


def frozen(trainable: Callable[[nn.Sequential], nn.Module]) -> nn.Sequential:
    """Every parameter frozen except those of ``trainable(model)``."""
    model = mlp()
    model.requires_grad_(False)
    trainable(model).requires_grad_(True)
    return model


def fixed_last_bias() -> nn.Sequential:
    model = mlp()
    with torch.no_grad():
        model[-1].bias.zero_()
    model[-1].bias.requires_grad_(False)
    return model


class TwoBranches(nn.Module):
    """Two parallel layers summed; ``detached=True`` cuts the side branch from the graph."""

    def __init__(self, detached: bool) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.detached = detached
        self.main = nn.Linear(FEATURES, 32)
        self.side = nn.Linear(FEATURES, 32)
        self.head = nn.Linear(32, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        side = self.side(x)
        return self.head(torch.relu(self.main(x) + (side.detach() if self.detached else side)))


class TimeSteps(nn.Module):
    """Reads (batch, time, features) and applies one layer per time step, time-major.

    ``mixing=True`` makes the time-major copy with ``reshape`` where ``transpose``
    was meant: each "time step" then holds pieces of several samples.
    """

    def __init__(self, mixing: bool, time: int = 4, width: int = 8) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.mixing = mixing
        self.step = nn.Linear(FEATURES // time, width)
        self.head = nn.Linear(time * width, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, time, _ = x.shape
        steps = x.reshape(time, batch, -1) if self.mixing else x.transpose(0, 1)
        hidden = torch.relu(self.step(steps)).transpose(0, 1).reshape(batch, -1)
        return self.head(hidden)


def as_sequences() -> Batch:
    x, y = clusters()
    return x.reshape(len(x), 4, FEATURES // 4), y


def with_inputs(change: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[], Batch]:
    def data() -> Batch:
        x, y = clusters()
        return change(x.clone()), y

    return data


def with_labels(change: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[], Batch]:
    def data() -> Batch:
        x, y = clusters()
        return x, change(y.clone())

    return data


def one_missing_value(x: torch.Tensor) -> torch.Tensor:
    x[5, 3] = float("nan")  # a missing measurement read as NaN
    return x


def missing_value_filled(x: torch.Tensor) -> torch.Tensor:
    x[5, 3] = x[:, 3].mean()  # the same gap, imputed with the column mean
    return x


def padded_labels(y: torch.Tensor) -> torch.Tensor:
    y[::8] = -100  # unlabelled samples marked with the loss's ignore_index
    return y


def sgd(lr: float) -> Callable[[Any], torch.optim.Optimizer]:
    return lambda params: torch.optim.SGD(params, lr=lr)


SCENARIOS: dict[str, Scenario] = {
    "pre-shape-mismatch": Scenario(
        lambda: mlp(hidden=32, head_in=64),
        expect="PRE001",
        about="the last layer expects 64 features where the hidden layer gives 32: every experiment that "
        "runs the model raises",
    ),
    "pre-shape-match": Scenario(
        lambda: mlp(hidden=64), good_of="PRE001", about="the same MLP with the hidden width and the head in agreement"
    ),
    "pre-one-based-labels": Scenario(
        mlp,
        expect="PRE002",
        data=with_labels(lambda y: y + 1),
        about="labels 1..10 for 10 classes (counted from 1): label 10 is out of range",
    ),
    "pre-ignored-labels": Scenario(
        mlp,
        good_of="PRE002",
        data=with_labels(padded_labels),
        about="every 8th label is -100, the cross-entropy's ignore_index: unlabelled, not out of range",
    ),
    "pre-nan-input": Scenario(
        mlp, expect="PRE003", data=with_inputs(one_missing_value), about="one missing measurement read as NaN"
    ),
    "pre-imputed-input": Scenario(
        mlp,
        good_of="PRE003",
        data=with_inputs(missing_value_filled),
        about="the same missing measurement filled with its column's mean",
    ),
    "pre-raw-inputs": Scenario(
        mlp,
        expect="PRE004",
        data=with_inputs(lambda x: 60 * x + 120),
        primary="PRE005",  # raw inputs make the untrained loss far from chance too
        about="features on a raw instrument scale: mean about 120, spread about 60",
    ),
    "pre-shifted-inputs": Scenario(
        mlp,
        good_of="PRE004",
        data=with_inputs(lambda x: 0.8 * x + 0.5),
        about="features a little off standard (mean about 0.5, spread about 1.3): close enough",
    ),
    "pre-head-init-100x": Scenario(
        lambda: last_layer_scaled(100.0),
        expect="PRE005",
        about="the last layer initialised 100x too large: the untrained loss is far above ln 10",
    ),
    "pre-head-init-2x": Scenario(
        lambda: last_layer_scaled(2.0),
        good_of="PRE005",
        about="the last layer initialised 2x larger than the default: still near ln 10",
    ),
    "pre-detached-branch": Scenario(
        lambda: TwoBranches(detached=True),
        expect="PRE006",
        about="one of two summed branches is detached: its weights never get a gradient",
    ),
    "pre-attached-branch": Scenario(
        lambda: TwoBranches(detached=False), good_of="PRE006", about="the same two branches, both in the graph"
    ),
    "pre-mixing": Scenario(
        lambda: TimeSteps(mixing=True),
        expect="PRE007",
        data=as_sequences,
        about="a time-major copy made with reshape instead of transpose: samples mix across the batch",
    ),
    "pre-transposed": Scenario(
        lambda: TimeSteps(mixing=False), good_of="PRE007", data=as_sequences, about="the same model with transpose"
    ),
    "pre-frozen": Scenario(
        lambda: frozen(lambda m: m[-1].bias),
        expect="PRE008",
        about="every weight frozen but the last bias (requires_grad_(False) on the whole model): "
        "one batch cannot be learned",
    ),
    "pre-fixed-last-bias": Scenario(
        fixed_last_bias,
        good_of="PRE008",
        about="only the last layer's bias frozen (deliberately fixed at zero): the weights still fit one batch",
    ),
    "pre-input-dropout-1": Scenario(
        lambda: nn.Sequential(nn.Dropout(1.0), mlp()),
        expect="PRE009",
        primary="PRE008",  # with every input zeroed, one batch cannot be learned either
        about="input dropout with p=1.0 (meant: 0.1): in training mode every input is zeroed",
    ),
    "pre-input-dropout-01": Scenario(
        lambda: nn.Sequential(nn.Dropout(0.1), mlp()), good_of="PRE009", about="input dropout with p=0.1"
    ),
    "pre-lr-8": Scenario(
        mlp,
        expect="PRE010",
        primary="PRE008",  # at 8.0 the one-batch training blows up
        data=batches,
        optimizer=sgd(8.0),
        about="SGD at 8.0, far past where the range test's loss is lowest",
    ),
    "pre-lr-01": Scenario(
        mlp, good_of="PRE010", data=batches, optimizer=sgd(0.1), about="SGD at 0.1, below the range test's minimum"
    ),
    "pre-lr-range": Scenario(
        mlp,
        expect="PRE011",
        data=batches,
        about="a healthy MLP with Adam at 1e-3 and a loader: the range test suggests a learning rate",
    ),
}


def record(scenario: Scenario, path: Path) -> None:
    """Run the preflight of ``scenario`` into the run file ``path``."""
    model = scenario.model()
    diagnose.preflight(
        model, scenario.loss_fn(), scenario.data(), scenario.optimizer, METADATA, path=path, budget_s=None
    )
