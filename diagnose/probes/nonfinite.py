"""Where a NaN or Inf first appeared: the module, the pass (forward or backward), the step.

This has to run on every step: one step after the first NaN the weights are
poisoned and every module reports non-finite values, so the trail is gone.
It stays cheap by computing one L2 norm per module output in the forward pass
and per output gradient in the backward pass (a NaN or Inf anywhere in a
tensor makes its norm non-finite), keeping the norms on the device and
looking at them only when the step's values come to the host.

Modules that cannot turn finite inputs into non-finite outputs or gradients
(ReLU, dropout, pooling, ...) and plain containers are not hooked: they would
only repeat what their neighbours report.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any

import torch
from torch import nn

from diagnose.probes.base import Probe, first_float_tensor
from diagnose.probes.record import StepRecord
from diagnose.runfile import schema

_CANNOT_CREATE_NONFINITE = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.Tanh, nn.Sigmoid, nn.Hardtanh, nn.Hardsigmoid,
    nn.Hardswish, nn.GELU, nn.SiLU, nn.Mish, nn.Softsign, nn.Softmax,
    nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.Identity, nn.Flatten, nn.Unflatten,
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d,
    nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
    nn.Sequential, nn.ModuleList, nn.ModuleDict,
)


def _norm(tensor: torch.Tensor) -> torch.Tensor:
    return torch.linalg.vector_norm(tensor.detach(), dtype=torch.float32)


class NonFiniteProbe(Probe):
    """Reports the onset of non-finite values; with ``per_module`` also the module of origin."""

    name = "nonfinite"

    def __init__(self, per_module: bool) -> None:
        super().__init__()
        self.per_module = per_module
        self._names: list[str] = []
        self._types: list[str] = []
        self._forward: list[tuple[int, torch.Tensor]] = []
        self._backward: list[tuple[int, torch.Tensor]] = []
        self._in_episode = False

    def attach(self, host: Any) -> None:
        super().attach(host)
        if not self.per_module:
            return
        for name, module in host.modules:
            if isinstance(module, _CANNOT_CREATE_NONFINITE) or module is host.model:
                continue
            index = len(self._names)
            self._names.append(name)
            self._types.append(type(module).__name__)
            self.keep(module.register_forward_hook(host.guard(self, partial(self._on_output, index))))

    def _on_output(self, index: int, module: nn.Module, args: Any, output: Any) -> None:
        if not self.host.training_pass:
            return
        tensor = first_float_tensor(output)
        if tensor is None:
            return
        self._forward.append((index, _norm(tensor)))
        if tensor.requires_grad:
            tensor.register_hook(self.host.guard(self, partial(self._on_output_grad, index)))

    def _on_output_grad(self, index: int, grad: torch.Tensor) -> None:
        self._backward.append((index, _norm(grad)))

    def finish(self, record: StepRecord) -> None:
        for key, pairs in (("nf_forward", self._forward), ("nf_backward", self._backward)):
            if pairs:
                record.private[key + "_index"] = [i for i, _ in pairs]
                record.private[key] = torch.stack([n for _, n in pairs])
        self._forward = []
        self._backward = []

    def resolve(self, record: StepRecord) -> None:
        events = self._origins(record)
        if events and not self._in_episode:
            for detail in events:
                record.event(schema.EV_NONFINITE, **detail)
        self._in_episode = bool(events)

    def _origins(self, record: StepRecord) -> list[dict[str, Any]]:
        if any(e["event"] == schema.EV_SKIPPED_STEP for e in record.events):
            return []  # AMP overflow: the scaler skipped the step, as designed
        events = []
        forward = self._first_bad(record, "nf_forward")
        if forward is not None:
            index = record.private["nf_forward_index"][forward]
            events.append(self._describe("forward", index, "first module whose output held NaN/Inf"))
        backward = self._backward_origin(record)
        if backward is not None and forward is None:  # a NaN forward poisons backward too: not a second origin
            events.append(backward)
        loss = record.fields.get("loss")
        if not events and loss is not None and not math.isfinite(loss):
            events.append({"where": "loss", "value": loss,
                           "detail": "the loss was NaN/Inf while every module output was finite"})
        grad_norm = record.fields.get("grad_norm")
        if not events and grad_norm is not None and not math.isfinite(grad_norm):
            events.append({"where": "grad_norm", "value": grad_norm,
                           "detail": "a parameter gradient held NaN/Inf"})
        return events

    def _first_bad(self, record: StepRecord, key: str) -> int | None:
        """Position (in call order) of the first non-finite norm, or None."""
        norms = record.private.get(key)
        if norms is None:
            return None
        norms = norms if isinstance(norms, list) else [norms]
        return next((pos for pos, value in enumerate(norms) if not math.isfinite(value)), None)

    def _backward_origin(self, record: StepRecord) -> dict[str, Any] | None:
        position = self._first_bad(record, "nf_backward")
        if position is None:
            return None
        order = record.private["nf_backward_index"]
        if position == 0:
            return {"where": "backward", "module": None,
                    "detail": "the gradient of the model output was already NaN/Inf (loss function or its inputs)"}
        # Output gradients arrive in backward order. The first non-finite one was
        # produced by the backward of the module that received a finite gradient
        # just before it: that module turned a finite gradient into NaN/Inf.
        first_bad = self._names[order[position]]
        detail = f"finite gradient at its output, non-finite at its input (first seen at {first_bad})"
        return self._describe("backward", order[position - 1], detail)

    def _describe(self, where: str, index: int, detail: str) -> dict[str, Any]:
        return {"where": where, "module": self._names[index], "type": self._types[index], "detail": detail}
