"""What the loss is given, and what each layer is given, on sampled steps.

`LossInputProbe` sees the loss function: for the window between the end of the
model's forward and the optimizer step, a global forward hook is installed on
sampled steps only, and the first ``nn.modules.loss._Loss`` called in that
window (``criterion(output, target)``) is described: its class, the shapes it
was given, and a few reductions of its input (probabilities? log-probabilities?
clamped at zero?) and of its target (how many classes the batch holds, and
their entropy; for a float target, how much of it is negative). A loss written
as a function (``F.cross_entropy``) is not a module: then the model output is
described instead and ``metadata.loss_fn`` names the loss.

`LayerInputProbe` records statistics of the *input* of every Linear and
convolution on the activation schedule: the first one is the scale of the
features the model is fed, and the others show what a functional activation
(``torch.tanh``, ``F.relu`` inside a ``forward``) did to the layer before,
which a module hook cannot see.
"""

from __future__ import annotations

import math
import weakref
from collections import deque
from functools import partial
from typing import Any

import torch
from torch import nn
from torch.nn.modules.loss import _Loss

from diagnose.probes.activations import _AFFINE, _SATURATION, _unit_dims
from diagnose.probes.base import Probe, first_float_tensor
from diagnose.probes.presets import Schedule
from diagnose.probes.record import StepRecord
from diagnose.probes.signatures import _due_or_early
from diagnose.runfile import schema

PREDICTION_STATS = ("pred_min", "pred_max", "pred_rowsum_dev", "pred_lse_dev", "pred_zero_frac")
LABEL_STATS = ("label_entropy", "label_classes")
TARGET_STATS = ("target_neg_frac",)
# Targets with more classes than this (language-model vocabularies) are not counted.
_MAX_COUNTED_CLASSES = 4096


def prediction_stats(pred: torch.Tensor) -> torch.Tensor:
    """`PREDICTION_STATS` of what the loss was given, as one float32 vector on its device.

    ``pred_rowsum_dev``: mean |sum over the last dimension - 1| (0 for
    probabilities); ``pred_lse_dev``: mean |logsumexp over the last dimension|
    (0 for log-probabilities); NaN for a single output column.
    """
    x = pred.detach().float()
    nan = torch.full((), math.nan, device=x.device)
    rows = x.reshape(-1, x.shape[-1]) if x.dim() >= 2 else x.reshape(-1, 1)
    wide = rows.shape[-1] > 1
    rowsum_dev = (rows.sum(dim=-1) - 1).abs().mean() if wide else nan
    lse_dev = torch.logsumexp(rows, dim=-1).abs().mean() if wide else nan
    return torch.stack([x.min(), x.max(), rowsum_dev, lse_dev, (x == 0).float().mean()])


def label_stats(target: torch.Tensor) -> torch.Tensor | None:
    """Entropy (nats) of the batch's class counts and how many classes it holds; None
    for targets that are not class indices."""
    if target.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8, torch.bool):
        return None
    labels = target.detach().reshape(-1).long()
    labels = labels[labels >= 0]  # ignore_index is usually -100
    if labels.numel() == 0:
        return None
    counts = torch.bincount(labels.clamp(max=_MAX_COUNTED_CLASSES), minlength=2).float()
    p = counts[counts > 0] / labels.numel()
    return torch.stack([-(p * p.log()).sum(), (counts > 0).sum().float()])


def target_stats(target: torch.Tensor) -> torch.Tensor | None:
    """`TARGET_STATS` of a float target (regression): the share of values below zero, which
    a model clamped at zero (a ReLU after its last layer) cannot reach; None for class indices."""
    if not target.is_floating_point() or target.numel() == 0:
        return None
    return (target.detach() < 0).float().mean().reshape(1)


# How many sampled losses are watched for being kept alive, and how many steps a loss must be
# old to count: the loop's own variable holds the latest one (and a "previous loss" the one before).
_WATCHED_LOSSES = 8
_KEPT_AFTER_STEPS = 2


class LossInputProbe(Probe):
    """Fields ``pred_*``, ``label_*``, ``target_*`` and ``graphs_kept`` on sampled steps and a
    ``loss_function`` event (whenever the loss module or its shapes change).

    ``graphs_kept``: of the last `_WATCHED_LOSSES` sampled loss tensors that carried a graph,
    how many made `_KEPT_AFTER_STEPS` or more steps ago are still alive (weak references:
    nothing is kept by the probe). A loop that stores its losses as tensors
    (``history.append(loss)``) keeps each one's autograd graph with it.
    """

    name = "loss_inputs"

    def __init__(self, schedule: Schedule, *, signatures: bool = True) -> None:
        super().__init__()
        self.schedule = schedule
        self.signatures = signatures  # target_neg_frac and graphs_kept (see `Preset.signatures`)
        self._hook: Any = None
        self._seen_step: int | None = None
        self._described: tuple | None = None
        self._losses: deque[tuple[int, weakref.ref]] = deque(maxlen=_WATCHED_LOSSES)

    def on_forward_end(self, record: StepRecord, output: Any) -> None:
        if self._seen_step == record.step or not _due_or_early(self.schedule, record.step, self.host.first_step):
            return
        self._seen_step = record.step
        tensor = first_float_tensor(output)
        if tensor is not None and tensor.numel() > 0:
            record.private["pred_stats"] = prediction_stats(tensor)  # replaced if a loss module shows up
        self._remove_hook()
        self._hook = nn.modules.module.register_module_forward_hook(self.host.guard(self, self._on_module))

    def _on_module(self, module: nn.Module, args: Any, output: Any) -> None:
        if not isinstance(module, _Loss) or not args:
            return
        self._remove_hook()
        record = self.host.record
        pred = first_float_tensor(args[0])
        target = args[1] if len(args) > 1 and isinstance(args[1], torch.Tensor) else None
        if pred is None or pred.numel() == 0:
            return
        record.private["pred_stats"] = prediction_stats(pred)
        if isinstance(output, torch.Tensor) and output.requires_grad and output.numel() == 1:
            output.register_hook(self.host.guard(self, self._on_loss_grad))
            if self.signatures:
                self._watch_kept(record.step, output)
        described = (("label_stats", label_stats), ("target_stats", target_stats))
        for key, stats in described if self.signatures else described[:1]:
            values = stats(target) if target is not None else None
            if values is not None:
                record.private[key] = values
        described = (
            type(module).__name__,
            getattr(module, "reduction", None),
            tuple(pred.shape),
            tuple(target.shape) if target is not None else None,
            str(target.dtype).replace("torch.", "") if target is not None else None,
        )
        if described != self._described:
            self._described = described
            name, reduction, pred_shape, target_shape, target_dtype = described
            record.event(
                schema.EV_LOSS_FUNCTION,
                loss_fn=name,
                reduction=reduction,
                input_shape=list(pred_shape),
                target_shape=list(target_shape) if target_shape is not None else None,
                target_dtype=target_dtype,
                broadcast=int(
                    target_shape is not None
                    and target_shape != pred_shape
                    and pred.dtype == getattr(target, "dtype", None)
                ),
            )

    def _watch_kept(self, step: int, loss: torch.Tensor) -> None:
        old = [ref for made, ref in self._losses if made <= step - _KEPT_AFTER_STEPS]
        if old:
            self.host.record.fields["graphs_kept"] = sum(ref() is not None for ref in old)
        self._losses.append((step, weakref.ref(loss)))

    def _on_loss_grad(self, grad: torch.Tensor) -> None:
        """How much of the loss module's value reaches backward: 1 for ``loss.backward()``,
        1/k for ``(loss / k).backward()``, the loss scale under AMP."""
        self.host.record.private.setdefault("loss_backward_scale", grad.detach().reshape(()).float())

    def before_step(self, record: StepRecord) -> None:
        self._remove_hook()  # no loss module between forward and step: the loss is a function

    def detach(self) -> None:
        self._remove_hook()
        super().detach()

    def _remove_hook(self) -> None:
        if self._hook is not None:
            self._hook.remove()
            self._hook = None

    def resolve(self, record: StepRecord) -> None:
        scale = record.private.get("loss_backward_scale")
        if scale is not None and math.isfinite(scale):
            record.fields["loss_backward_scale"] = scale
        for key, names in (
            ("pred_stats", PREDICTION_STATS),
            ("label_stats", LABEL_STATS),
            ("target_stats", TARGET_STATS),
        ):
            values = record.private.get(key)
            if values is not None:
                record.fields.update({n: v for n, v in zip(names, values, strict=True) if not math.isnan(v)})


LAYER_INPUT_STATS = ("in_absmax", "in_mean", "in_std", "in_min", "in_sat_frac", "in_zero_frac", "in_dead_frac")


def layer_input_stats(tensor: torch.Tensor) -> torch.Tensor:
    """`LAYER_INPUT_STATS` of the input of one layer, as one float32 vector on its device.

    ``in_sat_frac`` is the share of values beyond 0.99 in magnitude (what a
    saturated tanh gives); ``in_dead_frac`` the share of input features that
    are <= 0 for every sample of the batch (what a dead ReLU gives).
    """
    x = tensor.detach().float()
    std = x.std(correction=0) if x.numel() > 1 else torch.full((), math.nan, device=x.device)
    dead = (
        (~(x > 0).any(dim=_unit_dims(x))).float().mean() if x.dim() >= 2 else torch.full((), math.nan, device=x.device)
    )
    return torch.stack(
        [x.abs().max(), x.mean(), std, x.min(), (x.abs() > _SATURATION).float().mean(), (x == 0).float().mean(), dead]
    )


class LayerInputProbe(Probe):
    """Layer fields ``in_*`` for every Linear/convolution, on the activation schedule."""

    name = "layer_inputs"

    def __init__(self, schedule: Schedule) -> None:
        super().__init__()
        self.schedule = schedule
        self._sampled_step: int | None = None

    def on_forward_start(self, record: StepRecord) -> None:
        if self._sampled_step == record.step or not self.schedule.due(record.step, self.host.first_step):
            return
        self._sampled_step = record.step
        for name, module in self.host.modules:
            if isinstance(module, _AFFINE):
                hook = partial(self._on_input, name)
                self.keep(module.register_forward_pre_hook(self.host.guard(self, hook)))

    def _on_input(self, name: str, module: nn.Module, args: Any) -> None:
        tensor = first_float_tensor(args)
        stats = self.host.record.private.setdefault("layer_inputs", {})
        if tensor is not None and tensor.numel() > 0 and name not in stats:
            stats[name] = layer_input_stats(tensor)

    def on_forward_end(self, record: StepRecord, output: Any) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def resolve(self, record: StepRecord) -> None:
        for name, values in record.private.get("layer_inputs", {}).items():
            record.layer(name, **{s: v for s, v in zip(LAYER_INPUT_STATS, values, strict=True) if not math.isnan(v)})
