"""Tiny models and loops shared by the probe tests (real training, a few steps)."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

import diagnose


class Log(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.log(x)


class VectorNorm(nn.Module):
    """L2 norm of each row: its gradient is NaN for an all-zero row (0/0)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sqrt((x * x).sum(-1, keepdim=True))


def mlp(width: int = 16, classes: int = 3) -> nn.Sequential:
    return nn.Sequential(nn.Linear(8, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, classes))


def data(n: int = 32, classes: int = 3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 8, generator=generator)
    return x, torch.randint(0, classes, (n,), generator=generator)


def train(
    path: Path,
    model: nn.Module,
    steps: int = 12,
    *,
    lr: float = 0.05,
    perturb: Callable | None = None,
    loss_fn: Callable = nn.functional.cross_entropy,
    clip: float | None = None,
    device: str = "cpu",
    **options,
) -> list[float]:
    """Train with the probes attached; returns what clip_grad_norm_ reported at each step."""
    torch.manual_seed(0)
    model.to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    x, y = (tensor.to(device) for tensor in data())
    reported = []
    with diagnose.watch(model, optimizer, path, **options) as w:
        for step in range(1, steps + 1):
            inputs = perturb(step, model, x) if perturb else x
            optimizer.zero_grad()
            loss = loss_fn(model(inputs), y)
            loss.backward()
            if clip is not None:
                reported.append(float(torch.nn.utils.clip_grad_norm_(model.parameters(), clip)))
            optimizer.step()
            w.log(loss=loss)
    return reported


def train_amp(path: Path, *, device: str = "cpu", overflow_step: int = 3, steps: int = 6, **options) -> list[float]:
    """Mixed precision with a GradScaler whose scaled loss overflows (Inf) at ``overflow_step``, as fp16
    would; autocast to float16 on a GPU. Returns the unscaled norms clip_grad_norm_ reported, Inf included."""
    torch.manual_seed(0)
    model = mlp().to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    scaler = torch.amp.GradScaler(device, init_scale=2.0**12)
    x, y = (tensor.to(device) for tensor in data())
    precision = torch.autocast(device, dtype=torch.float16, enabled=device != "cpu")
    reported = []
    with diagnose.watch(model, optimizer, path, scaler=scaler, **options) as w:
        for step in range(1, steps + 1):
            optimizer.zero_grad()
            with precision:
                loss = nn.functional.cross_entropy(model(x), y)
            scaler.scale(loss * (math.inf if step == overflow_step else 1.0)).backward()
            scaler.unscale_(optimizer)
            reported.append(float(torch.nn.utils.clip_grad_norm_(model.parameters(), math.inf)))
            scaler.step(optimizer)
            scaler.update()
            w.log(loss=loss)
    return reported


def assert_amp_recorded(path: Path, reported: list[float], rel: float) -> None:
    """What `train_amp` must leave in the run file: the finite unscaled norms, the overflow as a skipped step."""
    run = diagnose.load(path)
    finite = [r for r in reported if math.isfinite(r)]
    assert len(finite) == len(reported) - 1
    assert run.series("grad_norm").to_numpy() == pytest.approx(finite, rel=rel)
    assert run.events["event"].tolist() == ["skipped_step"]


def train_then_fail(path: Path, fail: Callable[[], None], *, device: str = "cpu") -> None:
    """Four steps watched, ``fail()`` called after the third: whatever it raises leaves the watch's block."""
    model = mlp().to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    x, y = (tensor.to(device) for tensor in data())
    with diagnose.watch(model, optimizer, path) as w:
        for step in range(1, 5):
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
            w.log(loss=loss)
            if step == 3:
                fail()
