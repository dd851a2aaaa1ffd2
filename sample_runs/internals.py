"""The scenarios of the probe-data rules (gradients, activations, memory, AMP), recorded by ``record.py``.

Every run is real training on CPU, seeded, a few seconds at most, written by
``diagnose.watch`` with schedules dense enough to see the problem and sparse
enough to keep each file at a few tens of KB. ``python sample_runs/record.py
dead-relu`` records one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

import diagnose

CLASSES = 4
FEATURES = 16
SPARSE = {"layer_grads": 5, "activations": 10, "updates": 10, "memory": 0}


@dataclass
class Scenario:
    """One recorded run: the model, how it is trained, and what the probes sample."""

    model: Callable[[], nn.Module]
    optimizer: Callable[[nn.Module], torch.optim.Optimizer]
    steps: int = 60
    batch: int = 64
    every: dict[str, int] = field(default_factory=lambda: dict(SPARSE))
    # Called after backward and before the optimizer step: (step, model) -> None.
    after_backward: Callable[[int, nn.Module], None] | None = None
    leak: bool = False
    # MiB held (and touched) for the whole run before training starts: a long-lived process's large baseline.
    ballast_mib: int = 0
    amp: bool = False
    clip: float | None = None
    regression: bool = False  # mean squared error on a continuous target instead of cross-entropy
    expect: str | None = None  # the rule this run is the bad example of; None for a healthy run
    about: str = ""
    file: str | None = None  # under examples/: <CODE>/bad.jsonl or healthy/<name>.jsonl unless given
    primary: str | None = None  # the finding that rightly comes first overall, when not ``expect``
    good_of: str | None = None  # the rule this run is a near miss of


def task(n: int = 1024, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A learnable 4-class problem: the class is decided by a random linear map of the input."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, FEATURES, generator=generator)
    teacher = torch.randn(FEATURES, CLASSES, generator=generator)
    return x, x @ teacher


def objective(scenario: Scenario, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    if scenario.regression:
        return nn.functional.mse_loss(output, target)
    return nn.functional.cross_entropy(output, target.argmax(dim=1))


def mlp(depth: int, width: int, act: Callable[[], nn.Module], *, norm: bool = False) -> nn.Sequential:
    layers: list[nn.Module] = []
    size = FEATURES
    for _ in range(depth):
        layers += [nn.Linear(size, width), *([nn.LayerNorm(width)] if norm else []), act()]
        size = width
    return nn.Sequential(*layers, nn.Linear(size, CLASSES))


def scaled(model: nn.Sequential, gain: float) -> nn.Sequential:
    """Multiply every Linear weight by ``gain`` (an initialisation that is too large)."""
    with torch.no_grad():
        for module in model:
            if isinstance(module, nn.Linear):
                module.weight.mul_(gain)
    return model


def negative_bias(model: nn.Sequential, bias: float) -> nn.Sequential:
    """Start the first Linear layer with a large negative bias: most of its ReLUs never fire."""
    with torch.no_grad():
        model[0].bias.fill_(bias)
    return model


class TwoBranch(nn.Module):
    """Two feature branches; the second one is detached by mistake, so it never learns."""

    def __init__(self) -> None:
        super().__init__()
        self.main = nn.Sequential(nn.Linear(FEATURES, 32), nn.ReLU())
        self.side = nn.Sequential(nn.Linear(FEATURES, 32), nn.ReLU())
        self.head = nn.Linear(64, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.cat([self.main(x), self.side(x).detach()], dim=1))


def sgd(lr: float, **kw: float) -> Callable[[nn.Module], torch.optim.Optimizer]:
    return lambda m: torch.optim.SGD(m.parameters(), lr=lr, **kw)


def adam(lr: float) -> Callable[[nn.Module], torch.optim.Optimizer]:
    return lambda m: torch.optim.Adam(m.parameters(), lr=lr)


def adamw(lr: float, decay: float) -> Callable[[nn.Module], torch.optim.Optimizer]:
    return lambda m: torch.optim.AdamW(m.parameters(), lr=lr, weight_decay=decay)


def decay_first_layer(lr: float, decay: float) -> Callable[[nn.Module], torch.optim.Optimizer]:
    """SGD with a huge weight decay on the first layer's weight: it shrinks to nothing, and with it
    every difference between inputs (a per-layer decay set 1000x too high)."""

    def build(model: nn.Module) -> torch.optim.Optimizer:
        first = model[0].weight
        rest = [p for p in model.parameters() if p is not first]
        return torch.optim.SGD([{"params": [first], "weight_decay": decay}, {"params": rest}], lr=lr)

    return build


def inject_inf(every: int) -> Callable[[int, nn.Module], None]:
    """Put an Inf into one gradient every ``every`` steps (what an overflowing fp16 backward does)."""

    def hook(step: int, model: nn.Module) -> None:
        if step % every == 0:
            next(model.parameters()).grad.view(-1)[0] = float("inf")

    return hook


SCENARIOS: dict[str, Scenario] = {
    # Bad runs: one problem each.
    "exploding": Scenario(
        lambda: mlp(3, 64, nn.Identity),
        sgd(0.12),
        steps=22,
        regression=True,
        every={**SPARSE, "layer_grads": 2},
        expect="GRD001",
        primary="LR001",
        about="a deep linear network regressed with a step size past the stability limit: every "
        "update overshoots further and the gradient grows geometrically",
    ),
    "vanishing": Scenario(
        lambda: mlp(10, 32, nn.Sigmoid),
        sgd(0.1),
        expect="GRD002",
        primary="BUG025",
        about="ten sigmoid layers: the first layers' gradients are a tiny fraction of the last's",
    ),
    "update-tiny": Scenario(
        lambda: mlp(2, 64, nn.ReLU), sgd(1e-5), expect="GRD003", about="plain SGD at 1e-5: the weights barely move"
    ),
    "update-huge": Scenario(
        lambda: mlp(2, 64, nn.ReLU),
        adamw(0.5, 1.0),
        expect="GRD003",
        file="GRD003/bad_huge.jsonl",
        about="AdamW at 0.5 with weight decay 1: updates the size of the weights",
    ),
    "dead-relu": Scenario(
        lambda: negative_bias(mlp(3, 64, nn.ReLU), -1.5),
        sgd(0.05),
        expect="ACT001",
        about="ReLU layers with a bias of -1.5: most units never fire",
    ),
    "saturated-tanh": Scenario(
        lambda: scaled(mlp(3, 64, nn.Tanh), 6.0),
        sgd(0.01),
        expect="ACT002",
        primary="INIT001",
        about="tanh layers initialised 6x too large: outputs stuck at +-1",
    ),
    "collapse": Scenario(
        lambda: mlp(3, 64, nn.ReLU),
        decay_first_layer(0.1, 8.0),
        expect="ACT003",
        primary="BUG020",
        about="weight decay 8 on the first layer: every input maps to the same representation",
    ),
    "detached-branch": Scenario(
        TwoBranch,
        adam(0.01),
        expect="GRD004",
        primary="BUG026",
        about="one branch's output is detached: its parameters never get a gradient",
    ),
    "memory-leak": Scenario(
        lambda: mlp(4, 256, nn.ReLU),
        adam(1e-3),
        steps=80,
        batch=256,
        leak=True,
        every={"layer_grads": 0, "activations": 0, "updates": 0, "memory": 1},
        expect="MEM001",
        about="each loss is kept with its graph: memory grows every step",
    ),
    "memory-leak-large-baseline": Scenario(
        lambda: mlp(4, 256, nn.ReLU),
        adam(1e-3),
        steps=80,
        batch=256,
        leak=True,
        ballast_mib=2048,
        every={"layer_grads": 0, "activations": 0, "updates": 0, "memory": 1},
        expect="MEM001",
        file="MEM001/bad_large_baseline.jsonl",
        about="the same leak in a process that already holds 2 GiB (a notebook that trained other models): "
        "memory grows by the same MiB per step, only a few percent of the total",
    ),
    "large-baseline": Scenario(
        lambda: mlp(4, 256, nn.ReLU),
        adam(1e-3),
        steps=80,
        batch=256,
        ballast_mib=2048,
        every={"layer_grads": 0, "activations": 0, "updates": 0, "memory": 1},
        file="MEM001/good.jsonl",
        about="the same training in a process that holds 2 GiB, without the leak: memory stays level",
    ),
    "amp-skips": Scenario(
        lambda: mlp(2, 64, nn.ReLU),
        sgd(0.05),
        steps=80,
        amp=True,
        after_backward=inject_inf(4),
        every={**SPARSE, "memory": 2},
        expect="AMP001",
        about="an Inf gradient every 4th step: the GradScaler skips a quarter of the steps",
    ),
    # Healthy runs: the same task, trained sensibly.
    "healthy-relu": Scenario(
        lambda: mlp(3, 64, nn.ReLU),
        adam(1e-3),
        steps=80,
        every={**SPARSE, "memory": 2},
        file="healthy/probed-relu.jsonl",
        about="a ReLU network trained with Adam at 1e-3",
    ),
    "healthy-tanh-norm": Scenario(
        lambda: mlp(4, 64, nn.Tanh, norm=True),
        sgd(0.05, momentum=0.9),
        steps=80,
        file="healthy/probed-tanh-norm.jsonl",
        about="a normalised tanh network trained with SGD and momentum",
    ),
    "healthy-amp": Scenario(
        lambda: mlp(3, 64, nn.ReLU),
        adam(1e-3),
        steps=80,
        amp=True,
        every={**SPARSE, "memory": 2},
        file="healthy/probed-amp.jsonl",
        about="the ReLU network under autocast with a GradScaler",
    ),
}


def example_name(path: Path) -> str:
    """``examples/ACT001/bad.jsonl`` -> ``ACT001-bad``: the run's name says what it is an example of."""
    return f"{path.parent.name}-{path.stem}"


def record(scenario: Scenario, path: Path) -> None:
    """Train ``scenario`` with the probes attached, into the run file ``path``."""
    torch.manual_seed(0)
    x, y = task()
    model = scenario.model()
    optimizer = scenario.optimizer(model)
    scaler = torch.amp.GradScaler("cpu") if scenario.amp else None
    kept: list[torch.Tensor] = []  # the leak: losses with their graphs, never freed
    ballast = torch.ones(scenario.ballast_mib * 2**18)  # float32: 2**18 values per MiB, every page touched
    metadata = {"task": "multiclass", "num_classes": CLASSES, "scenario": scenario.about}
    with diagnose.watch(
        model, optimizer, path, name=example_name(path), metadata=metadata, scaler=scaler, every=scenario.every
    ) as w:
        for step in range(1, scenario.steps + 1):
            batch = torch.randint(0, len(x), (scenario.batch,), generator=torch.Generator().manual_seed(step))
            loss = _step(scenario, model, optimizer, scaler, x[batch], y[batch], step)
            if scenario.leak:
                kept.append(loss)
            w.log(loss=loss.detach())
    del ballast  # held until training is over, as the rest of a long-lived process is


def _step(
    scenario: Scenario,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None,
    x: torch.Tensor,
    y: torch.Tensor,
    step: int,
) -> torch.Tensor:
    optimizer.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=scenario.amp):
        loss = objective(scenario, model(x), y)
    if scaler is None:
        loss.backward(retain_graph=scenario.leak)
        if scenario.after_backward:
            scenario.after_backward(step, model)
        if scenario.clip:
            nn.utils.clip_grad_norm_(model.parameters(), scenario.clip)
        optimizer.step()
        return loss
    scaler.scale(loss).backward()
    if scenario.after_backward:
        scenario.after_backward(step, model)
    scaler.step(optimizer)
    scaler.update()
    return loss
