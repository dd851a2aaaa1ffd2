"""Activation statistics per module, on sampled steps.

Hooks are installed for the first training forward pass of a sampled step
and removed right after it, so steps that are not sampled pay nothing.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any

import torch
from torch import nn

from diagnose.probes.base import Probe, first_float_tensor
from diagnose.probes.presets import Schedule
from diagnose.probes.record import StepRecord
from diagnose.runfile import schema

_RELU_LIKE = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.RReLU, nn.Hardtanh)
_TANH_LIKE = (nn.Tanh, nn.Hardtanh, nn.Softsign)
_SIGMOID_LIKE = (nn.Sigmoid, nn.Hardsigmoid)
_AFFINE = (nn.Linear, nn.Bilinear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.LazyLinear)
_SKIPPED = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.Identity, nn.Flatten)

STATS = (
    "act_mean",
    "act_std",
    "act_rms",
    "act_batch_std",
    "act_dir_spread",
    "act_zero_frac",
    "act_dead_frac",
    "act_neg_frac",
    "act_sat_frac",
    "act_nonfinite",
    "act_unit_samples",
)

# Saturation bands: tanh beyond 0.99 in magnitude, sigmoid below 0.01 or above
# 0.99, where the local derivative has fallen under ~2% of its maximum
# (Glorot & Bengio 2010 discuss saturated sigmoid/tanh units in these terms).
_SATURATION = 0.99


def _unit_dims(tensor: torch.Tensor) -> tuple[int, ...]:
    """Dimensions to reduce over to get one value per unit: batch, plus space/time for conv and sequences."""
    if tensor.dim() == 4 or tensor.dim() == 5:  # N, C, spatial...
        return (0, *range(2, tensor.dim()))
    if tensor.dim() == 3:  # N, C, L for conv1d; N, T, F for sequences: units on the last dim is the common case
        return (0, 1)
    return (0,)


def activation_stats(tensor: torch.Tensor, kind: str) -> torch.Tensor:
    """The ``STATS`` of one output as one float32 vector (NaN where a statistic does not apply)."""
    x = tensor.detach().float()
    nan = torch.full((), math.nan, device=x.device)
    std = x.std(correction=0) if x.numel() > 1 else nan
    batch_std = x.reshape(x.shape[0], -1).std(dim=0, correction=0).mean() if x.dim() >= 2 and x.shape[0] > 1 else nan
    dir_spread = _direction_spread(x) if x.dim() >= 2 and x.shape[0] > 1 else nan
    zero_frac = dead_frac = neg_frac = sat_frac = unit_samples = nan
    if kind in ("relu", "affine") and x.dim() >= 2:
        dims = _unit_dims(x)
        never_positive = ~(x > 0).any(dim=dims)
        dead_frac = never_positive.float().mean()
        # How many values each unit was seen over: "never positive" means little over a batch of 2.
        unit_samples = torch.full((), float(math.prod(x.shape[d] for d in dims)), device=x.device)
    if kind == "relu":
        zero_frac = (x == 0).float().mean()
    elif kind == "affine":
        neg_frac = (x <= 0).float().mean()
    elif kind == "tanh":
        sat_frac = (x.abs() > _SATURATION).float().mean()
    elif kind == "sigmoid":
        sat_frac = ((x < 1 - _SATURATION) | (x > _SATURATION)).float().mean()
    rms = torch.linalg.vector_norm(x) / math.sqrt(max(x.numel(), 1))
    return torch.stack(
        [
            x.mean(),
            std,
            rms,
            batch_std,
            dir_spread,
            zero_frac,
            dead_frac,
            neg_frac,
            sat_frac,
            (~torch.isfinite(rms)).float(),
            unit_samples,
        ]
    )


def _direction_spread(x: torch.Tensor) -> torch.Tensor:
    """sqrt(d) x the mean over features of the std across the batch of the L2-normalised outputs.

    SimSiam (Chen & He 2021, section 4.1) monitors this std to see collapse: about 1/sqrt(d) for
    outputs spread over the sphere, 0 when every output points the same way. Scaled by sqrt(d) it
    reads about 1 for spread outputs whatever the width, and it ignores the outputs' norms, so a
    collapse hidden by a growing or varying norm still shows.
    """
    flat = x.reshape(x.shape[0], -1)
    unit = flat / torch.linalg.vector_norm(flat, dim=1, keepdim=True).clamp_min(1e-12)
    return unit.std(dim=0, correction=0).mean() * math.sqrt(flat.shape[1])


def module_kind(module: nn.Module) -> str:
    if isinstance(module, _RELU_LIKE) and not isinstance(module, _TANH_LIKE):
        return "relu"
    if isinstance(module, _TANH_LIKE):
        return "tanh"
    if isinstance(module, _SIGMOID_LIKE):
        return "sigmoid"
    if isinstance(module, _AFFINE):
        return "affine"
    return "other"


class ActivationProbe(Probe):
    name = "activations"
    provides = tuple(f"layers.{stat}" for stat in STATS)

    def __init__(self, schedule: Schedule) -> None:
        super().__init__()
        self.schedule = schedule
        self._sampled_step: int | None = None

    def _watched(self) -> list[tuple[str, nn.Module]]:
        return [
            (name, m)
            for name, m in self.host.modules
            if m is not self.host.model and not list(m.children()) and not isinstance(m, _SKIPPED)
        ]

    def on_forward_start(self, record: StepRecord) -> None:
        if self._sampled_step == record.step or not self.schedule.due(record.step, self.host.first_step):
            return
        self._sampled_step = record.step
        for name, module in self._watched():
            hook = partial(self._on_output, name, module_kind(module))
            self.keep(module.register_forward_hook(self.host.guard(self, hook)))

    def _on_output(self, name: str, kind: str, module: nn.Module, args: Any, output: Any) -> None:
        tensor = first_float_tensor(output)
        if tensor is not None and tensor.numel() > 0:
            self.host.record.private.setdefault("activations", {})[name] = activation_stats(tensor, kind)

    def on_forward_end(self, record: StepRecord, output: Any) -> None:
        if self._sampled_step != record.step or not self._handles:
            return
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        tensor = first_float_tensor(output)
        if tensor is not None and tensor.numel() > 0:
            record.private.setdefault("activations", {})[schema.OUTPUT_MODULE] = activation_stats(tensor, "other")

    def resolve(self, record: StepRecord) -> None:
        for name, values in record.private.get("activations", {}).items():
            record.layer(name, **{stat: v for stat, v in zip(STATS, values, strict=True) if not math.isnan(v)})
