"""Gradient norms (global every step, per layer on a schedule) and update/parameter ratios.

The norms are read when backward has finished, before anything else touches
the gradients: a user who clips with ``clip_grad_norm_`` would otherwise have
us record the clipped norm, and the growth that clipping hides is exactly what
an exploding-gradient diagnosis needs. The global norm is the L2 norm of the
per-parameter L2 norms, which is how ``clip_grad_norm_`` computes it.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

import torch
from torch.autograd import Variable

from diagnose.probes.base import Probe, first_float_tensor
from diagnose.probes.presets import Schedule
from diagnose.probes.record import PARAM_GRAD_NORMS, StepRecord


def _norms(tensors: list[torch.Tensor]) -> torch.Tensor:
    """Per-tensor L2 norms as one float32 tensor (one multi-tensor kernel per device)."""
    if not tensors:
        return torch.zeros(0)
    by_device: dict[torch.device, list[int]] = defaultdict(list)
    for index, tensor in enumerate(tensors):
        by_device[tensor.device].append(index)
    if len(by_device) == 1:
        return torch.stack(torch._foreach_norm(tensors, 2, dtype=torch.float32))
    # Model spread over devices: gather the (tiny) norm vectors on the first device.
    target = tensors[0].device
    result = torch.empty(len(tensors), dtype=torch.float32, device=target)
    for indices in by_device.values():
        part = torch.stack(torch._foreach_norm([tensors[i] for i in indices], 2, dtype=torch.float32))
        result[torch.tensor(indices, device=target)] = part.to(target)
    return result


def _layer_norms(norms: list[float], owners: list[str]) -> dict[str, float]:
    squares: dict[str, float] = defaultdict(float)
    for norm, owner in zip(norms, owners, strict=True):
        squares[owner] += norm * norm
    return {owner: math.sqrt(total) for owner, total in squares.items()}


class GradientProbe(Probe):
    name = "gradients"
    provides = (PARAM_GRAD_NORMS, "grad_norm", "layers.grad_norm")

    def __init__(self, layer_schedule: Schedule, scaler: Any = None) -> None:
        super().__init__()
        self.layer_schedule = layer_schedule
        # Under AMP, backward produces gradients multiplied by the loss scale.
        self.scaler = scaler
        self._captured: tuple[list[int], torch.Tensor] | None = None
        self._callback_queued = False

    def on_forward_end(self, record: StepRecord, output: Any) -> None:
        tensor = first_float_tensor(output)
        if tensor is not None and tensor.requires_grad:
            # A hook on a tensor dies with the tensor; no handle to keep.
            tensor.register_hook(self.host.guard(self, self._on_backward_start))

    def _on_backward_start(self, grad: torch.Tensor) -> None:
        if not self._callback_queued:
            self._callback_queued = True
            Variable._execution_engine.queue_callback(self.host.guard(self, self._capture))

    def on_gradients_ready(self, record: StepRecord) -> None:
        self._capture()

    def _capture(self) -> None:
        """End of backward: gradients are accumulated and not yet clipped."""
        self._callback_queued = False
        present = [i for i, (_, p) in enumerate(self.host.params) if p.grad is not None]
        norms = _norms([self.host.params[i][1].grad.detach() for i in present])
        scale = getattr(self.scaler, "_scale", None) if self.scaler is not None and self.scaler.is_enabled() else None
        if scale is not None and norms.numel():
            norms = norms / scale.to(norms.device, torch.float32)  # stays on the device: no sync
        self._captured = (present, norms)

    def after_step(self, record: StepRecord) -> None:
        # Read after the step, not before: with optimizer.step(closure) the
        # forward and backward run inside the step, after its pre-hooks.
        if self._captured is None:  # backward did not pass through the model output
            self._capture()
        present, norms = self._captured
        self._captured = None
        record.grad_index = present
        record.grad_norms = norms

    def resolve(self, record: StepRecord) -> None:
        norms = record.grad_norms
        if norms is None:
            return
        norms = norms if isinstance(norms, list) else [norms]
        record.fields["grad_norm"] = math.sqrt(sum(n * n for n in norms))
        if self.layer_schedule.due(record.step, self.host.first_step):
            owners = [self.host.params[i][0] for i in record.grad_index]
            for module, norm in _layer_norms(norms, owners).items():
                record.layer(module, grad_norm=norm)


class UpdateRatioProbe(Probe):
    """Parameter norms and ||update|| / ||parameter|| per layer, on sampled steps (needs a weight copy)."""

    name = "update_ratio"
    provides = ("layers.param_norm", "layers.update_ratio")

    def __init__(self, schedule: Schedule) -> None:
        super().__init__()
        self.schedule = schedule
        self._before: list[torch.Tensor] | None = None

    def before_step(self, record: StepRecord) -> None:
        if self.schedule.due(record.step, self.host.first_step):
            self._before = [p.detach().clone() for _, p in self.host.params]

    def after_step(self, record: StepRecord) -> None:
        if self._before is None:
            return
        after = [p.detach() for _, p in self.host.params]
        record.private["update_norms"] = _norms(torch._foreach_sub(after, self._before))
        record.private["param_norms"] = _norms(self._before)
        self._before = None

    def resolve(self, record: StepRecord) -> None:
        updates = record.private.get("update_norms")
        if updates is None:
            return
        owners = [owner for owner, _ in self.host.params]
        update_norms = _layer_norms(_as_list(updates), owners)
        for module, param_norm in _layer_norms(_as_list(record.private["param_norms"]), owners).items():
            ratio = update_norms[module] / param_norm if param_norm > 0 else math.nan
            record.layer(module, param_norm=param_norm, update_ratio=ratio)


def _as_list(values: Any) -> list[float]:
    return values if isinstance(values, list) else [values]
