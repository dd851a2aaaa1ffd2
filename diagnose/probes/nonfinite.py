"""Where a NaN or Inf first appeared: the module, the pass (forward or backward), the step.

This has to run on every step: one step after the first NaN the weights are
poisoned and every module reports non-finite values, so the trail is gone.

Forward: each module's ``forward`` is wrapped (an instance attribute, not a
module hook: a hook takes `nn.Module.__call__`'s slow path, which cost ~8 us per
module per call on the 481-module benchmark model, the wrapper ~3 us) and the
wrapper only keeps the module's output. At the end of the model's forward the
outputs are looked at: on the CPU, where reading a value costs no device
synchronisation, only when the model's own output is not finite (one sum of
it), so a healthy step pays no reduction per module; on an accelerator, one
L2 norm per output in one multi-tensor reduction (`tensor_norms`), kept on the
device and read with the step's other values. Either way the first module in
call order whose output was non-finite made it. An output that the forward
later changes in place (an in-place ReLU after a Linear) is seen as it ends
up; a NaN survives that, so the origin is still found. On the CPU a NaN that
never reaches the model's output (masked out, or in a branch the output does
not use) is not a forward origin; if it poisons the gradients, the backward
origin below names it.

Backward: no hooks at all. The gradient probe already has one norm per
parameter gradient each step. Backward visits modules in the reverse of their
forward order, so a NaN created in backward shows in the parameters of every
module before it (in forward order) and in none after it: it was made between
the last module whose parameter gradients are non-finite and the next module,
in forward order, that owns parameters, which is where the module is named.

Modules that cannot turn finite inputs into non-finite outputs or gradients
(ReLU, dropout, pooling, ...) and plain containers are not hooked: they would
only repeat what their neighbours report.

Under ``torch.compile`` the hooks of the modules inside the compiled graph do
not run (see `Hook`), so no module inside it can be named: a NaN/Inf is then
attributed to the compiled model, from its output when the watched module's
own hooks run outside the graph (``watch(torch.compile(model))``), never to
the loss computation unless that output was finite.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
from torch import nn

from diagnose.probes.base import Probe, first_float_tensor, mark_compiled, ran_compiled, tensor_norms
from diagnose.probes.record import PARAM_GRAD_NORMS, SKIPPED_STEP, StepRecord
from diagnose.runfile import schema

_CANNOT_CREATE_NONFINITE = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.PReLU,
    nn.Tanh,
    nn.Sigmoid,
    nn.Hardtanh,
    nn.Hardsigmoid,
    nn.Hardswish,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Softsign,
    nn.Softmax,
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Dropout3d,
    nn.AlphaDropout,
    nn.Identity,
    nn.Flatten,
    nn.Unflatten,
    nn.MaxPool1d,
    nn.MaxPool2d,
    nn.MaxPool3d,
    nn.AdaptiveMaxPool1d,
    nn.AdaptiveMaxPool2d,
    nn.AdaptiveMaxPool3d,
    nn.AvgPool1d,
    nn.AvgPool2d,
    nn.AvgPool3d,
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveAvgPool3d,
    nn.Sequential,
    nn.ModuleList,
    nn.ModuleDict,
)


class _OutputTap:
    """Stands in for one module's ``forward``: calls it and keeps the output for
    `NonFiniteProbe.on_forward_end`. It runs for every module at every step, so it does as little
    as it can; a failure goes through `ProbeHost.guard` only then, and switches the probe off.
    Under torch.compile it only calls the forward and leaves the mark `ran_compiled` reads.

    Pickled or deep-copied with its model, it becomes the forward it wraps (its own reduction), so
    the copy is not watched and a saved model loads where diagnose is not installed."""

    __slots__ = ("__wrapped__", "host", "index", "probe", "report")

    def __init__(self, probe: NonFiniteProbe, index: int, forward: Any) -> None:
        self.__wrapped__ = forward  # inspect.signature() of the module's forward still reads the real one
        self.probe, self.host, self.index = probe, probe.host, index
        self.report = probe.host.guard(probe, _raise)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        output = self.__wrapped__(*args, **kwargs)
        if torch.compiler.is_compiling():
            mark_compiled()
            return output
        probe = self.probe
        if probe.active and self.host.training_pass:
            try:
                tensor = output if type(output) is torch.Tensor else first_float_tensor(output)
                if tensor is not None and tensor.is_floating_point():
                    # Not detached (a microsecond per module): the outputs are let go at the end of the
                    # model's forward, while their graph is alive anyway, and normed without a graph.
                    # Two flat lists, not a list of pairs: the call order is then kept as it is.
                    probe._called.append(self.index)
                    probe._outputs_seen.append(tensor)
            except Exception as exc:  # noqa: BLE001 - a probe never breaks training
                self.report(exc)
        return output

    def __reduce_ex__(self, protocol: Any) -> Any:
        return self.__wrapped__.__reduce_ex__(protocol)


class _TapHandle:
    """Puts a module's own ``forward`` back, unless something wrapped it after us (then the tap stays,
    doing nothing once its probe is off)."""

    def __init__(self, module: nn.Module, tap: _OutputTap, own: Any) -> None:
        self.module, self.tap, self.own = module, tap, own

    def remove(self) -> None:
        attributes = self.module.__dict__
        if attributes.get("forward") is not self.tap:
            return
        if self.own is None:
            del attributes["forward"]
        else:
            attributes["forward"] = self.own


def _tap(probe: NonFiniteProbe, index: int, module: nn.Module) -> _TapHandle:
    own = module.__dict__.get("forward")  # a forward someone set on the instance before us
    tap = _OutputTap(probe, index, module.forward)
    module.__dict__["forward"] = tap
    return _TapHandle(module, tap, own)


def _raise(exc: Exception) -> None:
    raise exc


def _finite_on_host(output: Any) -> bool | None:
    """Whether every floating-point tensor of a model output is finite, when they are all on the CPU
    (one sum each: a NaN or Inf anywhere makes it non-finite, and an overflowing sum only asks for a
    closer look); None when one is elsewhere, where reading it would synchronise the device."""
    if type(output) is torch.Tensor and output.is_floating_point():  # the usual output: no list to build
        return math.isfinite(output.detach().sum().item()) if output.device.type == "cpu" else None
    tensors = _float_tensors(output)
    if not tensors or any(t.device.type != "cpu" for t in tensors):
        return None
    return all(math.isfinite(t.detach().sum().item()) for t in tensors)


def _float_tensors(output: Any) -> list[torch.Tensor]:
    if isinstance(output, torch.Tensor):
        return [output] if output.is_floating_point() else []
    if isinstance(output, dict):
        output = list(output.values())
    elif dataclasses.is_dataclass(output) and not isinstance(output, type):
        output = [getattr(output, field.name) for field in dataclasses.fields(output)]
    if isinstance(output, (tuple, list)):
        return [t for item in output for t in _float_tensors(item)]
    return []


class NonFiniteProbe(Probe):
    """Reports the onset of non-finite values; with ``per_module`` also the module of origin."""

    name = "nonfinite"
    # It reads the loss (set by the watch), the global and per-parameter gradient
    # norms, and whether AMP skipped the step: it resolves after their providers.
    needs = (PARAM_GRAD_NORMS, "grad_norm", SKIPPED_STEP)

    def __init__(self, per_module: bool) -> None:
        super().__init__()
        self.per_module = per_module
        self._names: list[str] = []
        self._types: list[str] = []
        # The modules whose outputs this forward saw, in call order, and those outputs: looked at in
        # on_forward_end and let go there.
        self._called: list[int] = []
        self._outputs_seen: list[torch.Tensor] = []
        self._in_episode = False
        self._outputs: list[torch.Tensor] = []  # the model's outputs, kept when its modules ran compiled

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
            self.keep(_tap(self, index, module))

    def on_forward_end(self, record: StepRecord, output: Any) -> None:
        called, outputs = self._called, self._outputs_seen
        self._called, self._outputs_seen = [], []  # the outputs are not kept past the forward
        if called:
            order = record.private.get("nf_forward_index")
            if order is None:  # the step's first forward (the common case): its list is the order
                order, start = record.private.setdefault("nf_forward_index", called), 0
            else:
                start = len(order)
                order += called
            if not _finite_on_host(output):  # not finite, or not on the CPU: one norm per output, on its device
                with torch.no_grad():
                    norms = tensor_norms([t.detach() for t in outputs])
                record.private.setdefault("nf_forward", []).append([start, norms])
        if ran_compiled():
            tensor = first_float_tensor(output)
            if tensor is not None:
                self._outputs.append(tensor.detach())

    def finish(self, record: StepRecord) -> None:
        if ran_compiled():
            record.private["nf_compiled"] = tensor_norms(self._outputs) if self._outputs else []
        self._called, self._outputs_seen = [], []
        self._outputs = []

    def resolve(self, record: StepRecord) -> None:
        events = self._origins(record)
        if events and not self._in_episode:
            for detail in events:
                record.event(schema.EV_NONFINITE, **detail)
        self._in_episode = bool(events)

    def _origins(self, record: StepRecord) -> list[dict[str, Any]]:
        if record.skipped:
            return []  # AMP overflow: the scaler skipped the step, as designed
        events = []
        forward = self._first_bad(record)
        if forward is not None:
            index = record.private["nf_forward_index"][forward]
            events.append(self._describe(schema.WHERE_FORWARD, index, "first module whose output held NaN/Inf"))
        backward = self._backward_origin(record)
        if backward is not None and forward is None:  # a NaN forward poisons backward too: not a second origin
            events.append(backward)
        loss = record.fields.get("loss")
        if not events and loss is not None and not math.isfinite(loss) and "nf_compiled" in record.private:
            events += self._compiled_origin(record)
        if not events and loss is not None and not math.isfinite(loss):
            events.append(
                {
                    "where": schema.WHERE_LOSS,
                    "value": loss,
                    "detail": "the loss was NaN/Inf while every module output was finite",
                }
            )
        grad_norm = record.fields.get("grad_norm", record.fields.get("grad_norm_shard"))
        if not events and grad_norm is not None and not math.isfinite(grad_norm):
            events.append(
                {"where": schema.WHERE_GRAD_NORM, "value": grad_norm, "detail": "a parameter gradient held NaN/Inf"}
            )
        return events

    def _compiled_origin(self, record: StepRecord) -> list[dict[str, Any]]:
        """The non-finite loss of a step whose model ran under torch.compile: the compiled model made it,
        unless its output (when the watch saw it) was finite."""
        outputs = record.private["nf_compiled"]
        outputs = outputs if isinstance(outputs, list) else [outputs]
        if outputs and all(math.isfinite(norm) for norm in outputs):
            return []  # the output was finite: the loss computation made it
        seen = "the output of the compiled model held NaN/Inf" if outputs else "the loss was NaN/Inf"
        compiled = getattr(self.host.model, "_orig_mod", self.host.model)
        return [
            {
                "where": schema.WHERE_FORWARD,
                "module": schema.MODEL_MODULE,
                "type": type(compiled).__name__,
                "detail": f"{seen}; the model ran under torch.compile, whose modules cannot be hooked, "
                "so which of them made it is unknown",
            }
        ]

    def _first_bad(self, record: StepRecord) -> int | None:
        """Position (in call order) of the first module output whose norm is non-finite, or None."""
        for start, norms in record.private.get("nf_forward", ()):
            norms = norms if isinstance(norms, list) else [norms]
            bad = next((pos for pos, value in enumerate(norms) if not math.isfinite(value)), None)
            if bad is not None:
                return int(start) + bad
        return None

    def _backward_origin(self, record: StepRecord) -> dict[str, Any] | None:
        norms, present = record.grad_norms, record.grad_index
        if norms is None or "nf_forward_index" not in record.private:
            return None
        # The gradient probe's own total: under sharding a "grad_norm" may be one the user logged.
        total = record.fields.get("grad_norm_shard", record.fields.get("grad_norm"))
        if total is not None and math.isfinite(total):  # a finite sum of squares has no non-finite term
            return None
        norms = norms if isinstance(norms, list) else [norms]
        owners = [self.host.params[i][0] for i in present]
        poisoned = {owner for owner, norm in zip(owners, norms, strict=True) if not math.isfinite(norm)}
        if not poisoned:
            return None
        order = [self._names[i] for i in dict.fromkeys(record.private["nf_forward_index"])]
        last_bad = max((pos for pos, name in enumerate(order) if name in poisoned), default=None)
        if last_bad is None:
            return {"where": schema.WHERE_BACKWARD, "module": None, "detail": "a parameter gradient held NaN/Inf"}
        owning = set(owners)
        following = next((pos for pos in range(last_bad + 1, len(order)) if order[pos] in owning), len(order))
        between = order[last_bad + 1 : following]
        culprit = between[-1] if len(between) == 1 else order[last_bad]
        clean = f"finite at {order[following]}" if following < len(order) else "finite after it"
        detail = f"parameter gradients {clean}, NaN/Inf from {order[last_bad]} back"
        if len(between) > 1:
            detail += f"; made in the backward of one of: {', '.join(between)}"
        return self._describe(schema.WHERE_BACKWARD, self._names.index(culprit), detail)

    def _describe(self, where: str, index: int, detail: str) -> dict[str, Any]:
        return {"where": where, "module": self._names[index], "type": self._types[index], "detail": detail}
