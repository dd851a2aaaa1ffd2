"""Bug signatures: cheap facts about the training loop itself, not about the curve.

Each probe here looks for the trace one common coding mistake leaves, at a
cost that does not show on the default preset: Python-side checks at one or a
few steps, or reductions on sampled steps only.

- `CarriedGradientProbe`: gradients already populated when a step's first
  backward begins (``optimizer.zero_grad()`` missing, or called once per epoch).
- `StepGradientProbe`: the gradient norm the optimizer is handed at its step, and
  how many backward passes fed it (``step()`` before ``backward()``, a clip far
  below the gradient norm, accumulation without dividing the loss).
- `OptimizerCoverageProbe`: parameters that receive gradients but sit in no
  optimizer parameter group (an optimizer built on part of the model).
- `TrainingModeProbe`: dropout and normalisation modules in eval mode while the
  optimizer steps (``model.eval()`` left on, a BatchNorm frozen by accident).
- `DuplicateRowsProbe`: weight matrices whose rows are identical (constant or
  symmetric initialisation), at the start and again after some steps.
- `WarningProbe`: Python and torch warnings raised during training, once per
  distinct message, with counts; the user's own warning display is kept.
- `RecurrentLayoutProbe`: each recurrent layer's ``batch_first`` and the shape it
  is first given in training, once (batch and time axes swapped).
"""

from __future__ import annotations

import math
import os
import warnings
from functools import partial
from typing import Any

import torch
from torch import nn
from torch.autograd import Variable

from diagnose.probes import backward_tap
from diagnose.probes.base import (
    HeldGradients,
    Probe,
    first_float_tensor,
    is_distributed_tensor,
    local_part,
    tensor_norms,
)
from diagnose.probes.presets import Schedule
from diagnose.probes.record import StepRecord
from diagnose.runfile import schema

# Steps after the first at which a loop that never resets its gradients shows
# it; a run shorter than the first scheduled sample is still covered.
_EARLY_STEPS = 3
# Steps after the first with gradients at which parameters outside the optimizer must not
# have moved for them to count as left out.
_CONFIRM_STEPS = 3


def _due_or_early(schedule: Schedule, step: int, first_step: int) -> bool:
    return schedule.due(step, first_step) or (schedule.every > 0 and first_step < step <= first_step + _EARLY_STEPS)


class CarriedGradientProbe(Probe):
    """``grad_carried``: the L2 norm of the gradients parameters already hold when a step's
    first backward begins; 0 when they were reset (to None or to zeros) since the last step.

    A gradient counts as carried only when it was present at the step's first
    forward *and* is still non-zero when its backward begins, so
    ``optimizer.zero_grad()`` called between forward and backward is a reset.
    Only the optimizer's own parameters count: parameters outside every
    parameter group are never reset by ``optimizer.zero_grad()``, and
    `OptimizerCoverageProbe` reports those.
    """

    name = "carried_gradients"

    def __init__(self, schedule: Schedule) -> None:
        super().__init__()
        self.schedule = schedule
        self._forward_seen = False
        self._present_at_forward = False
        self._backward_seen = False
        self._params: list[torch.Tensor] = []

    def attach(self, host: Any) -> None:
        super().attach(host)
        optimized = {id(p) for group in host.optimizer.param_groups for p in group["params"]}
        self._params = [p for _, p in host.params if id(p) in optimized]
        self._held = HeldGradients(self._params)

    def on_forward_start(self, record: StepRecord) -> None:
        if self._forward_seen or not _due_or_early(self.schedule, record.step, self.host.first_step):
            return
        self._forward_seen = True
        self._present_at_forward = any(p.grad is not None for p in self._params)

    def on_forward_end(self, record: StepRecord, output: Any) -> None:
        if not self._forward_seen or self._backward_seen:
            return
        tensor = first_float_tensor(output)
        if tensor is not None and tensor.requires_grad:
            tensor.register_hook(self.host.guard(self, self._on_backward_start))

    def _on_backward_start(self, grad: torch.Tensor) -> None:
        if self._backward_seen:
            return
        self._backward_seen = True
        self.host.record.fields["grad_carried"] = _grad_norm(self._held) if self._present_at_forward else 0.0

    def after_step(self, record: StepRecord) -> None:
        self._forward_seen = self._backward_seen = self._present_at_forward = False


def _grad_norm(params: HeldGradients) -> torch.Tensor | float:
    """L2 norm of the gradients ``params`` hold now, on their device; 0.0 when none holds one."""
    _, held, plain_key = params.read()
    if not held:
        return 0.0
    with torch.no_grad():  # a gradient made with create_graph=True: its norm joins no graph
        return torch.linalg.vector_norm(tensor_norms(held, plain_key=plain_key))


class StepGradientProbe(Probe):
    """On sampled steps: ``grad_at_step``, the L2 norm of the gradients the model's
    parameters hold when ``optimizer.step()`` begins (after any clipping; 0 when they hold
    none: the same parameters as ``grad_norm``, so an optimizer over part of the model, or
    over another model's parameters, compares like with like); ``backward_passes``, the
    backward passes through the model output since the
    last step, written only when there were several (gradient accumulation); and
    ``backward_missed_model``, 1 when ``backward()`` was called but none of its passes
    reached the model output (the loss is not connected to the model's graph).

    Set against ``grad_norm`` (read when backward ends, before clipping): equal when
    nothing touched the gradients in between, smaller by the clip factor when
    ``clip_grad_norm_`` cut them, 0 when ``step()`` ran before ``backward()``.
    """

    name = "step_gradients"

    def __init__(self, schedule: Schedule) -> None:
        super().__init__()
        self.schedule = schedule
        self._held = HeldGradients(())
        self._passes = 0
        self._calls = 0
        self._queued = False

    def attach(self, host: Any) -> None:
        super().attach(host)
        self._held = HeldGradients(p for _, p in host.params)
        self.keep(backward_tap.add(host.guard(self, self._on_backward_call)))

    def _on_backward_call(self, tensor: torch.Tensor) -> None:
        self._calls += 1

    def _sampled(self, step: int) -> bool:
        return _due_or_early(self.schedule, step, self.host.first_step)

    def on_forward_end(self, record: StepRecord, output: Any) -> None:
        if not self._sampled(record.step):
            return
        tensor = first_float_tensor(output)
        if tensor is not None and tensor.requires_grad:
            # Count only the backward calls after this forward: a loop that steps before its backward
            # calls the previous step's backward before this step's forward, and that one reached the model.
            self._calls = 0
            tensor.register_hook(self.host.guard(self, self._on_backward))

    def _on_backward(self, grad: torch.Tensor) -> None:
        if not self._queued:  # one count per backward pass, however many outputs it runs through
            self._queued = True
            Variable._execution_engine.queue_callback(self.host.guard(self, self._backward_ended))

    def _backward_ended(self) -> None:
        self._queued = False
        self._passes += 1

    def before_step(self, record: StepRecord) -> None:
        if self._sampled(record.step):
            record.fields["grad_at_step"] = _grad_norm(self._held)
            if self._passes > 1:
                record.fields["backward_passes"] = self._passes
            if self._calls and not self._passes:
                record.fields["backward_missed_model"] = 1

    def after_step(self, record: StepRecord) -> None:
        self._passes = self._calls = 0


class LossGradientProbe(Probe):
    """``loss_grad_nonfinite``: 1 at a step where the gradient of the loss with respect to
    the model output held NaN or Inf, i.e. the loss computation itself made it
    (``log(0)`` in a hand-written loss, a sigmoid output of exactly 0 or 1 fed to BCE).

    One norm of the output gradient per forward, kept on the device.
    """

    name = "loss_gradient"

    def __init__(self) -> None:
        super().__init__()
        self._norms: list[torch.Tensor] = []

    def on_output_grad(self, record: StepRecord, grad: torch.Tensor) -> None:
        self._norms.append(
            torch.linalg.vector_norm(
                grad.detach(), dtype=torch.float64 if grad.dtype == torch.float64 else torch.float32
            )
        )

    def finish(self, record: StepRecord) -> None:
        norms, self._norms = self._norms, []
        if len(norms) == 1:  # one backward through the output: its norm as it is, nothing to stack
            record.private["loss_grad_norms"] = norms[0]
        elif norms:
            record.private["loss_grad_norms"] = torch.stack([n.to(norms[0].device) for n in norms])

    def resolve(self, record: StepRecord) -> None:
        norms = record.private.get("loss_grad_norms")
        if norms is None:
            return
        norms = norms if isinstance(norms, list) else [norms]
        if not all(math.isfinite(n) for n in norms):
            record.fields["loss_grad_nonfinite"] = 1


class OptimizerCoverageProbe(Probe):
    """An ``unoptimized`` event: trainable parameters that received a gradient at the first
    step, belong to no parameter group of the watched optimizer, and have not moved a few
    steps later (a second optimizer, or a hand-written update, that trains them is no bug)."""

    name = "optimizer_coverage"

    def __init__(self) -> None:
        super().__init__()
        self._done = False
        # (step, left-out parameters with their owners, their norms at that step), until confirmed.
        self._suspects: tuple[int, list[tuple[str, nn.Parameter]], torch.Tensor] | None = None

    def after_step(self, record: StepRecord) -> None:
        if self._done:
            return
        if self._suspects is None:
            self._find_suspects(record)
        elif record.step >= self._suspects[0] + _CONFIRM_STEPS:
            self._done = True
            self._confirm(record)

    def _find_suspects(self, record: StepRecord) -> None:
        with_grad = [(owner, p) for owner, p in self.host.params if p.grad is not None]
        if not with_grad:
            return  # gradients not there yet (or reset before the step): look again next step
        optimized = {id(p) for group in self.host.optimizer.param_groups for p in group["params"]}
        left_out = [(owner, p) for owner, p in with_grad if id(p) not in optimized]
        if left_out:
            self._suspects = (record.step, left_out, _norms_of(left_out))
        else:
            self._done = True

    def _confirm(self, record: StepRecord) -> None:
        _, left_out, before = self._suspects
        unmoved = before.eq(_norms_of(left_out)).tolist()  # one host transfer, once per run
        still = [item for item, same in zip(left_out, unmoved, strict=True) if same]
        if still:
            record.event(
                schema.EV_UNOPTIMIZED,
                count=len(still),
                numel=sum(p.numel() for _, p in still),
                trainable_numel=sum(p.numel() for _, p in self.host.params),
                modules=list(dict.fromkeys(owner for owner, _ in still))[:20],
            )


def _norms_of(params: list[tuple[str, nn.Parameter]]) -> torch.Tensor:
    """One norm per parameter, stacked: a fingerprint that any real update changes."""
    norms = torch._foreach_norm([local_part(p.detach()) for _, p in params])
    return torch.stack([n.to(torch.float64) for n in norms])


# Modules whose forward differs between train() and eval(): the ones a wrong mode changes.
_MODE_SENSITIVE = (
    nn.modules.dropout._DropoutNd,
    nn.modules.batchnorm._BatchNorm,
    nn.modules.instancenorm._InstanceNorm,
)


def _mode_sensitive(module: nn.Module) -> bool:
    """Dropout and normalisation with running statistics."""
    if isinstance(module, nn.modules.instancenorm._InstanceNorm):
        return module.track_running_stats
    return isinstance(module, _MODE_SENSITIVE)


def _frozen(module: nn.Module) -> bool:
    """All own parameters frozen: a frozen BatchNorm kept in eval mode is the usual way to
    fine-tune, not a mistake."""
    own = list(module.parameters(recurse=False))
    return bool(own) and not any(p.requires_grad for p in own)


class TrainingModeProbe(Probe):
    """An ``eval_mode`` event when the optimizer steps while dropout or normalisation
    modules are in eval mode (``training`` False); written again when that changes."""

    name = "training_mode"

    def __init__(self, schedule: Schedule) -> None:
        super().__init__()
        self.schedule = schedule
        self._sensitive: list[tuple[str, nn.Module]] = []
        self._last: tuple[str, ...] | None = None

    def attach(self, host: Any) -> None:
        super().attach(host)
        self._sensitive = [(name, m) for name, m in host.modules if _mode_sensitive(m)]

    def before_step(self, record: StepRecord) -> None:
        if not self._sensitive or not _due_or_early(self.schedule, record.step, self.host.first_step):
            return
        in_eval = tuple(name for name, module in self._sensitive if not module.training and not _frozen(module))
        if in_eval == self._last or (self._last is None and not in_eval):
            self._last = in_eval
            return
        self._last = in_eval
        types = [type(module).__name__ for name, module in self._sensitive if name in in_eval]
        record.event(
            schema.EV_EVAL_MODE,
            count=len(in_eval),
            sensitive=len(self._sensitive),
            model_training=int(self.host.model.training),
            modules=list(in_eval[:20]),
            types=sorted(set(types)),
        )


# Matrices larger than this are compared with their first row only (a full
# row-uniqueness sort of a large embedding table would cost a noticeable pause).
_UNIQUE_ROWS_MAX_NUMEL = 1 << 22
_DUPLICATE_ROW_STEPS = (10, 100)


def distinct_rows(weight: torch.Tensor) -> int:
    """How many different rows a weight matrix has (first dimension = output units)."""
    rows = weight.detach().reshape(weight.shape[0], -1)
    if rows.numel() <= _UNIQUE_ROWS_MAX_NUMEL:
        return int(torch.unique(rows, dim=0).shape[0])
    same_as_first = bool((rows == rows[0]).all())
    return 1 if same_as_first else rows.shape[0]


class DuplicateRowsProbe(Probe):
    """``duplicate_rows`` events: weight matrices with identical rows (units that compute
    the same thing), checked before training and after steps 10 and 100: identical
    rows that stay identical under training never separate."""

    name = "duplicate_rows"

    def attach(self, host: Any) -> None:
        super().attach(host)
        self._record_duplicates(host.record, when=schema.DUPLICATE_ROWS_START)

    def after_step(self, record: StepRecord) -> None:
        if record.step - self.host.first_step + 1 in _DUPLICATE_ROW_STEPS:
            self._record_duplicates(record, when=schema.DUPLICATE_ROWS_TRAINING)

    def _record_duplicates(self, record: StepRecord, when: str) -> None:
        for name, module in self.host.modules:
            weight = getattr(module, "weight", None)
            if not isinstance(weight, nn.Parameter) or weight.dim() < 2 or weight.shape[0] < 2:
                continue
            if is_distributed_tensor(weight):  # a shard holds some rows only: none of them to compare
                continue
            distinct = distinct_rows(weight)
            if distinct < weight.shape[0]:
                record.event(
                    schema.EV_DUPLICATE_ROWS,
                    module=name or schema.MODEL_MODULE,
                    type=type(module).__name__,
                    rows=int(weight.shape[0]),
                    distinct=distinct,
                    phase=when,
                    zero=int(distinct == 1 and not bool(weight.detach().reshape(-1)[0] != 0)),
                )


class WarningProbe(Probe):
    """``warning`` events: each distinct warning raised while the watch is open, with the
    step it first appeared and how often it was shown. The display the user had
    (``warnings.showwarning``) still runs: nothing is swallowed."""

    name = "warnings"

    def __init__(self) -> None:
        super().__init__()
        self._previous: Any = None
        self._counts: dict[tuple[str, str, str], int] = {}
        self._changed: set[tuple[str, str, str]] = set()

    def attach(self, host: Any) -> None:
        super().attach(host)
        self._previous = warnings.showwarning
        warnings.showwarning = self._show

    def detach(self) -> None:
        if warnings.showwarning == self._show:
            warnings.showwarning = self._previous
        super().detach()

    def _show(
        self, message: Any, category: type[Warning], filename: str, lineno: int, *args: Any, **kwargs: Any
    ) -> None:
        try:
            if self.active and not str(message).startswith("diagnose:"):
                self._count(str(message), category.__name__, f"{os.path.basename(filename)}:{lineno}")
        finally:
            self._previous(message, category, filename, lineno, *args, **kwargs)

    def _count(self, message: str, category: str, origin: str) -> None:
        key = (category, message[:500], origin)
        self._counts[key] = self._counts.get(key, 0) + 1
        self._changed.add(key)

    def finish(self, record: StepRecord) -> None:
        if not self._changed:
            return
        for category, message, origin in sorted(self._changed):
            record.event(
                schema.EV_WARNING,
                category=category,
                message=message,
                origin=origin,
                count=self._counts[(category, message, origin)],
            )
        self._changed.clear()


class RecurrentLayoutProbe(Probe):
    """A ``recurrent_input`` event per ``nn.RNN``/``LSTM``/``GRU``: its ``batch_first`` and the
    shape of the input it is given at its first call with gradients enabled (training), once.
    Set against the batch the loss sees, it shows batch and time axes read the wrong way round."""

    name = "recurrent_layout"

    def __init__(self) -> None:
        super().__init__()
        self._seen: set[str] = set()

    def attach(self, host: Any) -> None:
        super().attach(host)
        for name, module in host.modules:
            if isinstance(module, nn.RNNBase):
                self.keep(module.register_forward_pre_hook(host.guard(self, partial(self._on_call, name))))

    def _on_call(self, name: str, module: nn.RNNBase, args: tuple[Any, ...]) -> None:
        if name in self._seen or not torch.is_grad_enabled():
            return
        self._seen.add(name)
        x = args[0] if args else None
        if isinstance(x, torch.Tensor) and x.dim() == 3:  # packed and unbatched inputs have no axes to swap
            self.host.record.event(
                schema.EV_RECURRENT_INPUT,
                module=name or schema.MODEL_MODULE,
                type=type(module).__name__,
                batch_first=int(module.batch_first),
                input_shape=list(x.shape),
            )
