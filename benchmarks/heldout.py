"""Diagnosis quality on runs trained fresh, outside the sample runs the rules are tested on.

Trains small models (MLP, CNN, GRU, transformer; Adam, SGD, schedules,
clipping) on generated data, healthy and with one planted fault each, records
them with the default probes, and checks the primary diagnosis: a healthy run
must get no warning or error, a faulty run's first warning or error must be
one of the rules that name its fault. Prints one line per run and the score.

    python benchmarks/heldout.py [NAME ...]     # about 3 minutes on two cores

Training on a CPU is not bit-exact from one machine to the next, so a run
that sits near a threshold can change its verdict; read a failure's message.
"""

from __future__ import annotations

import sys
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

import diagnose

Data = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]
VALIDATION = 512


def teacher(seed: int, n: int = 2048, dim: int = 32, classes: int = 5, random_labels: bool = False) -> Data:
    """Labels from a noisy linear teacher (or drawn at random); the last 512 examples validate."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, dim, generator=gen)
    y = (x @ torch.randn(dim, classes, generator=gen) + 0.5 * torch.randn(n, classes, generator=gen)).argmax(1)
    if random_labels:
        y = y[torch.randperm(n, generator=gen)]
    return x[:-VALIDATION], y[:-VALIDATION], x[-VALIDATION:], y[-VALIDATION:]


def images(seed: int, n: int = 3072, classes: int = 10) -> Data:
    """12x12 noisy copies of one prototype per class."""
    gen = torch.Generator().manual_seed(seed)
    prototypes = torch.randn(classes, 1, 12, 12, generator=gen)
    y = torch.randint(0, classes, (n,), generator=gen)
    x = prototypes[y] + 0.9 * torch.randn(n, 1, 12, 12, generator=gen)
    return x[:-VALIDATION], y[:-VALIDATION], x[-VALIDATION:], y[-VALIDATION:]


def sequences(seed: int, n: int = 3072, steps: int = 12) -> Data:
    """Four classes from the sign of a sum over the sequence and of one over its end."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, steps, 6, generator=gen)
    y = (x[:, :, 0].sum(1) > 0).long() + 2 * (x[:, -3:, 1].sum(1) > 0).long()
    return x[:-VALIDATION], y[:-VALIDATION], x[-VALIDATION:], y[-VALIDATION:]


def mlp(width: int = 128, depth: int = 2, act: type[nn.Module] = nn.ReLU, norm: bool = False) -> nn.Module:
    layers: list[nn.Module] = []
    size = 32
    for _ in range(depth):
        layers += [nn.Linear(size, width), *([nn.LayerNorm(width)] if norm else []), act()]
        size = width
    return nn.Sequential(*layers, nn.Linear(size, 5))


def cnn(batch_norm: bool = True) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.BatchNorm2d(16) if batch_norm else nn.Identity(),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(32, 10),
    )


class GRUClassifier(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.GRU(6, 48, batch_first=True)
        self.head = nn.Linear(48, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.rnn(x)[0][:, -1])


class TinyTransformer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(6, 32)
        layer = nn.TransformerEncoderLayer(32, 4, 64, 0.0, batch_first=True)
        self.enc = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(32, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.enc(self.inp(x)).mean(1))


def cosine(optimizer: torch.optim.Optimizer, steps: int) -> torch.optim.lr_scheduler.LRScheduler:
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)


def one_cycle(optimizer: torch.optim.Optimizer, steps: int) -> torch.optim.lr_scheduler.LRScheduler:
    return torch.optim.lr_scheduler.OneCycleLR(optimizer, optimizer.param_groups[0]["lr"], total_steps=steps)


def step_decay(optimizer: torch.optim.Optimizer, steps: int) -> torch.optim.lr_scheduler.LRScheduler:
    return torch.optim.lr_scheduler.StepLR(optimizer, steps // 3, 0.3)


def poison_at(step: int) -> Callable[[int, torch.Tensor, nn.Module], torch.Tensor]:
    """From ``step`` on the first layer's weights are infinite: NaN from there."""

    def corrupt(now: int, inputs: torch.Tensor, model: nn.Module) -> torch.Tensor:
        if now == step:
            with torch.no_grad():
                next(model.parameters()).mul_(float("inf"))
        return inputs

    return corrupt


def zero_inputs(now: int, inputs: torch.Tensor, model: nn.Module) -> torch.Tensor:
    return torch.zeros_like(inputs)


@dataclass
class Case:
    model: Callable[[], nn.Module]
    data: Callable[[], Data]
    expect: tuple[str, ...] = ()  # empty: healthy, no warning or error allowed
    optimizer: str = "adam"
    lr: float = 1e-3
    steps: int = 600
    batch: int = 64
    schedule: Callable | None = None
    clip: float | None = None
    corrupt: Callable[[int, torch.Tensor, nn.Module], torch.Tensor] | None = None
    metadata: dict = field(default_factory=dict)


STALL = ("CH001", "PLT001", "LR003")
CASES: dict[str, Case] = {
    # Healthy: enough data for the number of epochs.
    "mlp-adam": Case(mlp, lambda: teacher(21, n=20000), steps=800),
    "mlp-sgd-step-decay": Case(
        mlp, lambda: teacher(22, n=20000), optimizer="sgd", lr=0.05, schedule=step_decay, steps=800
    ),
    "mlp-one-cycle-short": Case(mlp, lambda: teacher(3), lr=3e-3, schedule=one_cycle, steps=300),
    "mlp-tanh": Case(lambda: mlp(act=nn.Tanh), lambda: teacher(6), steps=300),
    "mlp-short": Case(mlp, lambda: teacher(11), steps=120),
    "cnn-adam": Case(cnn, lambda: images(1), steps=500),
    "cnn-sgd-cosine": Case(cnn, lambda: images(2), optimizer="sgd", lr=0.05, schedule=cosine, steps=500),
    "cnn-no-batchnorm": Case(lambda: cnn(False), lambda: images(3), lr=2e-3, steps=500),
    "gru": Case(GRUClassifier, lambda: sequences(4), lr=3e-3, steps=500),
    "transformer": Case(TinyTransformer, lambda: sequences(5), steps=500),
    "transformer-cosine": Case(TinyTransformer, lambda: sequences(6), lr=2e-3, schedule=cosine, steps=800),
    # One fault each, and the rules that name it.
    "overfit-wide-mlp": Case(
        lambda: mlp(512, 3), lambda: teacher(17, n=1600), lr=3e-3, steps=1500, expect=("OVF001", "OVF002")
    ),
    "overfit-clipped-sgd": Case(
        mlp, lambda: teacher(10), optimizer="sgd", lr=0.1, clip=1.0, expect=("OVF001", "OVF002")
    ),
    "lr-100x-sgd": Case(mlp, lambda: teacher(12), optimizer="sgd", lr=8.0, expect=("LR001", "NF001")),
    "lr-500x-adam": Case(mlp, lambda: teacher(13), lr=0.5, expect=("LR001", "NF001", "LR002", *STALL)),
    "lr-high-cnn": Case(
        lambda: cnn(False),
        lambda: images(7),
        optimizer="sgd",
        lr=1.0,
        expect=("LR001", "NF001", "ACT001", "ACT003", "CH001"),
    ),
    "lr-high-transformer": Case(TinyTransformer, lambda: sequences(10), lr=0.05, expect=("LR001", "NF001", "CH001")),
    "lr-low-sgd": Case(mlp, lambda: teacher(14), optimizer="sgd", lr=1e-4, expect=("LR003", "GRD003", "CH001")),
    "lr-low-gru": Case(GRUClassifier, lambda: sequences(8), lr=3e-6, expect=STALL + ("GRD003",)),
    "labels-random": Case(mlp, lambda: teacher(15, n=20000, random_labels=True), steps=400, expect=("CH001",)),
    "labels-random-memorised": Case(
        lambda: mlp(512, 3), lambda: teacher(19, random_labels=True), lr=3e-3, steps=800, expect=("CH002",)
    ),
    "inputs-zeroed": Case(TinyTransformer, lambda: sequences(9), corrupt=zero_inputs, expect=("CH001", "ACT003")),
    "nan-at-300": Case(mlp, lambda: teacher(16), corrupt=poison_at(300), expect=("NF001",)),
    "batch-of-2": Case(mlp, lambda: teacher(18), lr=3e-3, batch=2, expect=("NOI001", "LR002")),
}


def optimizer_for(case: Case, model: nn.Module) -> torch.optim.Optimizer:
    if case.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), case.lr, momentum=0.9)
    return torch.optim.Adam(model.parameters(), case.lr)


def record(name: str, case: Case, folder: Path) -> Path:
    torch.manual_seed(0)
    model = case.model()
    x, y, x_val, y_val = case.data()
    optimizer = optimizer_for(case, model)
    schedule = case.schedule(optimizer, case.steps) if case.schedule else None
    classes = int(y.max()) + 1
    path = folder / f"{name}.jsonl"
    order = torch.Generator().manual_seed(1)
    with diagnose.watch(model, optimizer, path, metadata={"task": "multiclass", "num_classes": classes}) as w:
        for step in range(1, case.steps + 1):
            pick = torch.randint(0, len(x), (case.batch,), generator=order)
            inputs = case.corrupt(step, x[pick], model) if case.corrupt else x[pick]
            optimizer.zero_grad()
            out = model(inputs)
            loss = nn.functional.cross_entropy(out, y[pick])
            loss.backward()
            if case.clip:
                nn.utils.clip_grad_norm_(model.parameters(), case.clip)
            optimizer.step()
            if schedule:
                schedule.step()
            w.log(loss=loss, accuracy=(out.argmax(1) == y[pick]).float().mean())
            if step % 50 == 0:
                w.log(**evaluate(model, x_val, y_val))
    return path


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    model.eval()
    out = model(x)
    model.train()
    return {"val_loss": nn.functional.cross_entropy(out, y), "val_accuracy": (out.argmax(1) == y).float().mean()}


def judge(name: str, case: Case, folder: Path) -> bool:
    analysis = diagnose.analyze(diagnose.load(record(name, case, folder)))
    serious = [f for f in analysis.findings if f.severity.value in ("warning", "error")]
    right = not serious if not case.expect else bool(serious) and serious[0].code in case.expect
    shown = ", ".join(f.code for f in serious) or "clean"
    print(f"{'ok ' if right else 'BAD'} {name:<26} {shown}")
    if not right and serious:
        print(f"    {serious[0].code}: {serious[0].message}")
    return right


def main(names: list[str]) -> None:
    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    chosen = names or list(CASES)
    with tempfile.TemporaryDirectory() as folder:
        right = sum(judge(name, CASES[name], Path(folder)) for name in chosen)
    healthy = [n for n in chosen if not CASES[n].expect]
    print(f"{right}/{len(chosen)} right ({len(healthy)} healthy, {len(chosen) - len(healthy)} with a fault)")


if __name__ == "__main__":
    main(sys.argv[1:])
