"""Gradient norms (global every step, per layer on a schedule) and update/parameter ratios.

The norms are read when backward has finished, before anything else touches
the gradients: a user who clips with ``clip_grad_norm_`` would otherwise have
us record the clipped norm, and the growth that clipping hides is exactly what
an exploding-gradient diagnosis needs. The global norm is the L2 norm of the
per-parameter L2 norms, which is how ``clip_grad_norm_`` computes it.

Sharded gradients (``fully_shard``, DTensor): each rank holds only its shards,
and the global norm needs every rank's. ``clip_grad_norm_`` gets it with an
all-reduce; the watch issues no collective at all (one at a moment the ranks do
not share, such as a timed flush, deadlocks them). Each rank records its part,
``grad_norm_shard`` (its shards' norm; a part several ranks hold counts once
among them), and the reader combines the ranks' files: the square root of the
sum of their squares is the norm ``clip_grad_norm_`` returns.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

import torch
from torch.autograd import Variable

from diagnose.probes.base import (
    HeldGradients,
    Probe,
    copies_of_local_part,
    first_float_tensor,
    is_distributed_tensor,
    is_sharded,
    ran_compiled,
    tensor_norms,
)
from diagnose.probes.presets import Schedule
from diagnose.probes.record import PARAM_GRAD_NORMS, StepRecord


def _shares(grads: list[torch.Tensor]) -> torch.Tensor:
    """Per gradient, the factor that makes the sum over ranks of the squared local norms the squared
    global norm: 1 for a shard only this rank holds, 1/sqrt(n) for a part n ranks hold alike (a
    replicated DTensor dimension, or a plain tensor beside sharded ones: the same on every rank)."""
    import torch.distributed as dist

    world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
    copies = [copies_of_local_part(g) if is_distributed_tensor(g) else world for g in grads]
    return torch.tensor([1.0 / math.sqrt(n) for n in copies], dtype=torch.float64)


def _layer_norms(norms: list[float], owners: list[str]) -> dict[str, float]:
    squares: dict[str, float] = defaultdict(float)
    for norm, owner in zip(norms, owners, strict=True):
        squares[owner] += norm * norm
    return {owner: math.sqrt(total) for owner, total in squares.items()}


class GradientProbe(Probe):
    name = "gradients"
    provides = (PARAM_GRAD_NORMS, "grad_norm", "layers.grad_norm", "grad_norm_shard", "layers.grad_norm_shard")

    def __init__(self, layer_schedule: Schedule, scaler: Any = None) -> None:
        super().__init__()
        self.layer_schedule = layer_schedule
        # Under AMP, backward produces gradients multiplied by the loss scale.
        self.scaler = scaler
        self._captured: tuple[list[int], torch.Tensor] | None = None
        self._callback_queued = False
        self.sharded = False  # gradients are DTensor shards: the norms are this rank's part only
        self._held = HeldGradients(())

    def attach(self, host: Any) -> None:
        super().attach(host)
        self._held = HeldGradients(param for _, param in host.params)
        # Guarded once: they are handed to torch at every step.
        self._backward_started = host.guard(self, self._on_backward_start)
        self._backward_ended = host.guard(self, self._capture)

    def on_forward_end(self, record: StepRecord, output: Any) -> None:
        # An output with a gradient: the watch's hook on it calls on_output_grad.
        tensor = first_float_tensor(output)
        if (tensor is None or not tensor.requires_grad) and not self._handles:
            self._hook_parameters()

    def on_output_grad(self, record: StepRecord, grad: torch.Tensor) -> None:
        self._on_backward_start(grad)

    def _hook_parameters(self) -> None:
        """For outputs the tensor hook cannot reach (None, an object holding the loss): notice the
        backward pass by its first accumulated parameter gradient instead, still before any clipping."""
        for _, param in self.host.params:
            if param.requires_grad:
                self.keep(param.register_post_accumulate_grad_hook(self._backward_started))

    def _on_backward_start(self, grad: torch.Tensor) -> None:
        if not self._callback_queued:
            self._callback_queued = True
            Variable._execution_engine.queue_callback(self._backward_ended)

    def on_gradients_ready(self, record: StepRecord) -> None:
        self._capture()

    def _capture(self) -> None:
        """End of backward: gradients are accumulated and not yet clipped."""
        self._callback_queued = False
        present, grads, plain_key = self._held.read()
        with torch.no_grad():  # a gradient made with create_graph=True: its norm joins no graph
            norms = tensor_norms(grads, plain_key=plain_key)
        plain = plain_key is not None
        if not plain and any(is_sharded(g) for g in grads):
            self.sharded = True
            norms = norms * _shares(grads).to(norms.device, norms.dtype)
        scale = getattr(self.scaler, "_scale", None) if self.scaler is not None and self.scaler.is_enabled() else None
        if scale is not None and norms.numel():
            norms = norms / scale.to(norms.device, torch.float32)  # stays on the device: no sync
        self._captured = (present, norms)

    def after_step(self, record: StepRecord) -> None:
        # Read after the step, not before: with optimizer.step(closure) the
        # forward and backward run inside the step, after its pre-hooks.
        if self._captured is None and ran_compiled() and not self._handles:
            # The model's own hooks ran inside a torch.compile graph: the gradients may be clipped by now.
            # Record no norm rather than a clipped one, and notice the next backward by its parameters.
            self._hook_parameters()
            return
        if self._captured is None:  # backward did not pass through the model output
            self._capture()
        self._store(record)

    def finish(self, record: StepRecord) -> None:
        # A loop that updates the weights itself; with an optimizer, a step it skipped (AMP overflow) has no norm.
        if self._captured is not None and self.host.optimizer is None:
            self._store(record)

    def _store(self, record: StepRecord) -> None:
        present, norms = self._captured
        self._captured = None
        if present:  # no gradient at all (a module without parameters) is no measurement, not a zero norm
            record.grad_index = present
            record.grad_norms = norms

    def resolve(self, record: StepRecord) -> None:
        norms = record.grad_norms
        if norms is None:
            return
        norms = norms if isinstance(norms, list) else [norms]
        key = "grad_norm_shard" if self.sharded else "grad_norm"
        record.fields[key] = math.sqrt(sum(n * n for n in norms))
        if self.layer_schedule.due(record.step, self.host.first_step):
            owners = [self.host.params[i][0] for i in record.grad_index]
            for module, norm in _layer_norms(norms, owners).items():
                record.layer(module, **{key: norm})


class UpdateRatioProbe(Probe):
    """Parameter norms and ||update|| / ||parameter|| per layer, on sampled steps (needs a weight copy)."""

    name = "update_ratio"
    provides = ("layers.param_norm", "layers.update_ratio")

    def __init__(self, schedule: Schedule) -> None:
        super().__init__()
        self.schedule = schedule
        self._before: list[torch.Tensor] | None = None
        self._trained: list[int] = []

    def before_step(self, record: StepRecord) -> None:
        if self.schedule.due(record.step, self.host.first_step):
            # Trainable now: a frozen layer is not a layer that learns slowly.
            # Sharded parameters (fully_shard) are left out: a ratio of one rank's shards is not the layer's.
            self._trained = [i for i, (_, p) in enumerate(self.host.params) if p.requires_grad and not is_sharded(p)]
            self._before = [self.host.params[i][1].detach().clone() for i in self._trained]

    def after_step(self, record: StepRecord) -> None:
        if not self._before:  # not sampled, or nothing trainable
            return
        after = [self.host.params[i][1].detach() for i in self._trained]
        record.private["update_norms"] = tensor_norms(torch._foreach_sub(after, self._before))
        record.private["param_norms"] = tensor_norms(self._before)
        record.private["update_index"] = self._trained
        self._before = None

    def resolve(self, record: StepRecord) -> None:
        updates = record.private.get("update_norms")
        if updates is None:
            return
        owners = [self.host.params[i][0] for i in record.private["update_index"]]
        update_norms = _layer_norms(_as_list(updates), owners)
        for module, param_norm in _layer_norms(_as_list(record.private["param_norms"]), owners).items():
            ratio = update_norms[module] / param_norm if param_norm > 0 else math.nan
            record.layer(module, param_norm=param_norm, update_ratio=ratio)


def _as_list(values: Any) -> list[float]:
    return values if isinstance(values, list) else [values]
