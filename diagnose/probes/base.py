"""The probe contract: small units that measure one quantity and never break training.

A probe gets callbacks at fixed points of a training step (see `Probe`), puts
what it measures into the step's `StepRecord` (tensors may stay on the
device), and turns its raw data into fields once the values are on the host
(`resolve`). Hooks a probe registers go through `ProbeHost.guard`, so an
exception inside one is recorded as a ``probe_error`` event and switches that
probe off instead of reaching the user's loop.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

if TYPE_CHECKING:
    from diagnose.probes.presets import Preset
    from diagnose.probes.record import StepRecord


class ProbeHost(Protocol):
    """What a probe may use of the `Watch` that runs it."""

    model: nn.Module
    optimizer: Any
    preset: Preset
    first_step: int
    modules: list[tuple[str, nn.Module]]

    @property
    def record(self) -> StepRecord: ...

    def guard(self, probe: Probe, fn: Callable[..., Any]) -> Callable[..., Any]: ...


class Hook:
    """A callable the watch registers on the user's model, optimizer or tensors.

    Hook dicts travel with the model when it is pickled (``torch.save(model)``)
    or deep-copied, and a closure over the watch cannot be pickled. A `Hook`
    pickles as a do-nothing hook made of the standard library alone
    (``object.__init__`` bound to None takes any arguments and returns None),
    so the copy is not watched and a saved model loads where diagnose is not
    installed.

    Inside a ``torch.compile`` graph a hook does nothing: traced, it would break the graph (or fail
    ``fullgraph=True``) and force recompilations, changing how the user's model runs. It leaves a
    mark instead (`ran_compiled`), so the watch knows what it could not see.
    """

    __slots__ = ("call",)

    def __init__(self, call: Callable[..., Any]) -> None:
        self.call = call

    def __call__(self, *args: Any) -> Any:
        if torch.compiler.is_compiling():
            mark_compiled()  # replayed by the compiled graph each time it runs
            return None
        return self.call(*args)

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return functools.partial, (object.__init__, None)


# Set (never read) inside compiled graphs: reading it there would make the compiler guard on its value.
_compiled_mark = False


def mark_compiled() -> None:
    """Say that a hook of diagnose ran inside a compiled graph (see `ran_compiled`)."""
    global _compiled_mark
    _compiled_mark = True


def ran_compiled() -> bool:
    """Whether a hook of diagnose sat inside a running ``torch.compile`` graph (and so did nothing)
    since the watch last finished a step (`clear_compiled_mark`)."""
    return _compiled_mark


def clear_compiled_mark() -> None:
    global _compiled_mark
    _compiled_mark = False


class Probe:
    """Base class. Override only the callbacks the probe needs."""

    name = "probe"
    # What the probe puts on the record: step fields ("grad_norm"), layer fields
    # ("layers.grad_norm") and shared values (`record.SHARED_VALUES`); and what
    # it reads that other probes provide. The watch runs providers first.
    provides: ClassVar[tuple[str, ...]] = ()
    needs: ClassVar[tuple[str, ...]] = ()

    def __init__(self) -> None:
        self.host: ProbeHost | None = None
        self.active = True
        self._handles: list[RemovableHandle] = []

    # -- lifecycle -----------------------------------------------------------
    def attach(self, host: ProbeHost) -> None:
        self.host = host

    def detach(self) -> None:
        self.active = False  # hooks on live tensors may still fire once; guard() drops them
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def keep(self, handle: RemovableHandle) -> None:
        """Remember a hook handle so that `detach` removes it."""
        self._handles.append(handle)

    # -- step callbacks (all optional) ---------------------------------------
    def on_forward_start(self, record: StepRecord) -> None:
        """A training forward pass of the model begins (several per step when accumulating)."""

    def on_forward_end(self, record: StepRecord, output: Any) -> None:
        """The model's training forward pass returned ``output``."""

    def on_output_grad(self, record: StepRecord, grad: torch.Tensor) -> None:
        """Backward has reached the model's training output, whose gradient is ``grad`` (read it, never
        change it). The watch puts one hook on the output for all the probes that implement this: each
        tensor hook costs a registration and a call from the autograd engine, every step."""

    def on_gradients_ready(self, record: StepRecord) -> None:
        """The caller says gradients are final and not yet clipped (see `Watch.gradients_ready`)."""

    def before_step(self, record: StepRecord) -> None:
        """The optimizer is about to step (with a closure, before its forward and backward)."""

    def after_step(self, record: StepRecord) -> None:
        """The optimizer has stepped."""

    def finish(self, record: StepRecord) -> None:
        """The step is over; stack per-step tensors here, still on the device."""

    def resolve(self, record: StepRecord) -> None:
        """Values are on the host now: turn ``record.private`` data into fields, layers, events."""


def dependency_order(probes: Sequence[Probe]) -> list[Probe]:
    """The probes with the providers of every value a probe needs before it, otherwise in the order given.

    A value nobody provides is simply absent (no optimizer: no gradient norms).
    """
    remaining = list(probes)
    ordered: list[Probe] = []
    while remaining:
        ready = next(
            (p for p in remaining if not any(q is not p and set(p.needs) & set(q.provides) for q in remaining)), None
        )
        if ready is None:
            raise ValueError("probes need each other's values: " + ", ".join(p.name for p in remaining))
        ordered.append(ready)
        remaining.remove(ready)
    return ordered


# Exact types that are never a DTensor: a failing hasattr on a tensor costs microseconds.
_PLAIN_TENSORS = (torch.Tensor, nn.Parameter)


def local_part(tensor: Any) -> Any:
    """The part of ``tensor`` this process holds, without communicating: a DTensor's local shard
    (``fully_shard``, tensor parallelism), otherwise the tensor itself."""
    return tensor.to_local() if is_distributed_tensor(tensor) else tensor


def is_distributed_tensor(tensor: Any) -> bool:
    if type(tensor) in _PLAIN_TENSORS:  # the common case, asked for every gradient at every step
        return False
    return hasattr(tensor, "to_local") and hasattr(tensor, "placements")


def copies_of_local_part(tensor: Any) -> int:
    """How many ranks hold the same local part of a DTensor: the product of its replicated mesh
    dimensions (1 under plain ``fully_shard``, the replica count under HSDP); 1 for a plain tensor."""
    if not is_distributed_tensor(tensor):
        return 1
    mesh = tensor.device_mesh
    return math.prod(mesh.size(dim) for dim, placement in enumerate(tensor.placements) if placement.is_replicate())


def is_sharded(tensor: Any) -> bool:
    """A DTensor split across ranks: its local part is not the whole tensor."""
    return is_distributed_tensor(tensor) and any(placement.is_shard() for placement in tensor.placements)


def first_float_tensor(output: Any) -> Any:
    """The first floating-point tensor in a module output (tensor, tuple, list, dict or dataclass)."""
    if isinstance(output, torch.Tensor):
        return output if output.is_floating_point() else None
    if isinstance(output, (tuple, list)):
        for item in output:
            found = first_float_tensor(item)
            if found is not None:
                return found
    if isinstance(output, dict):
        for item in output.values():
            found = first_float_tensor(item)
            if found is not None:
                return found
    if dataclasses.is_dataclass(output) and not isinstance(output, type):
        return first_float_tensor([getattr(output, field.name) for field in dataclasses.fields(output)])
    return None


# On the CPU, torch._foreach_norm is a loop of one norm call per tensor, and for a tensor this small
# (elements) that call costs more than copying it: small tensors of one shape are stacked and normed
# in one call instead (measured on the 481-module benchmark model: 642 gradients in ~1 ms, not ~4 ms).
_STACKED_BELOW = 4096


def tensor_norms(tensors: list[torch.Tensor], *, plain_key: Any = None) -> torch.Tensor:
    """Per-tensor L2 norms as one float32 tensor (float64 when any input is), one multi-tensor kernel per
    device (on the CPU, one per shape of small tensors). A sparse gradient (``nn.Embedding(sparse=True)``)
    counts by its stored values.

    ``plain_key``: from a caller that norms the same kind of list every step (the gradients of the same
    parameters), a hashable that says the tensors are plain, dense, on one CPU device and of the shapes
    they had the last time with this key; it spares looking at every tensor again (~0.3 ms for the
    642 gradients of the overhead benchmark's 481-module model)."""
    if not tensors:
        return torch.zeros(0)
    if plain_key is not None:
        try:
            return _cpu_norms(tensors, torch.float32, plain_key)
        except RuntimeError:  # the shapes changed under the key: plan again from the tensors
            _PLANS.pop(plain_key, None)
    if all(type(t) is torch.Tensor and t.layout is torch.strided for t in tensors):  # plain dense: no conversion
        dtype = torch.float64 if any(t.dtype is torch.float64 for t in tensors) else torch.float32
        try:
            if tensors[0].device.type == "cpu":
                return _cpu_norms(tensors, dtype)
            return torch.stack(torch._foreach_norm(tensors, 2, dtype=dtype))
        except RuntimeError:  # tensors on several devices: grouped below
            pass
    tensors = [t.coalesce().values() if t.is_sparse else local_part(t) for t in tensors]
    dtype = torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32
    by_device: dict[torch.device, list[int]] = defaultdict(list)
    for index, tensor in enumerate(tensors):
        by_device[tensor.device].append(index)
    if len(by_device) == 1:
        return torch.stack(torch._foreach_norm(tensors, 2, dtype=dtype))
    # Model spread over devices: gather the (tiny) norm vectors on the first device.
    target = tensors[0].device
    result = torch.empty(len(tensors), dtype=dtype, device=target)
    for indices in by_device.values():
        part = torch.stack(torch._foreach_norm([tensors[i] for i in indices], 2, dtype=dtype))
        result[torch.tensor(indices, device=target)] = part.to(target)
    return result


def _cpu_norms(tensors: list[torch.Tensor], dtype: torch.dtype, key: Any = None) -> torch.Tensor:
    """`tensor_norms` of dense tensors on the CPU: small ones stacked by shape and dtype, the rest one by one."""
    plan = _PLANS.get(key) if key is not None else None
    if plan is None:
        layout = tuple((t.shape, t.dtype) for t in tensors)
        plan = _PLANS.get(layout)
        if plan is None:
            if len(_PLANS) >= 16:  # the gradients and outputs of a few models: a plan per list, kept
                _PLANS.clear()
            plan = _PLANS[layout] = _stacking_plan(layout)
        if key is not None:
            _PLANS[key] = plan
    groups, order = plan
    if order is None:
        return torch.stack(torch._foreach_norm(tensors, 2, dtype=dtype))
    parts = []
    for indices, stacked in groups:
        group = [tensors[i] for i in indices]
        if stacked:
            parts.append(torch.linalg.vector_norm(torch.stack(group).reshape(len(group), -1), dim=1, dtype=dtype))
        else:
            parts.append(torch.stack(torch._foreach_norm(group, 2, dtype=dtype)))
    return torch.cat(parts)[order]


# The getter of ``Tensor.grad`` itself: read on a Parameter (a Tensor subclass), ``param.grad`` goes
# through the subclass's attribute lookup first (321 of them: 38 us, the getter mapped over them 26 us).
# Only for plain parameters: another subclass may define its own ``grad``.
_GRAD = torch._C.TensorBase.grad.__get__


class HeldGradients:
    """The gradients a fixed list of parameters holds, read step after step, with the ``plain_key``
    `tensor_norms` takes for them (see there): worked out again only when the set of parameters
    holding a gradient changes."""

    def __init__(self, params: Sequence[torch.Tensor]) -> None:
        self.params = list(params)
        self._plain = all(type(param) in (nn.Parameter, torch.Tensor) for param in self.params)
        self._seen: tuple[list[int], Any] | None = None

    def read(self) -> tuple[list[int], list[torch.Tensor], Any]:
        """(positions of the parameters holding a gradient, those gradients, their plain key or None)."""
        # Hundreds of parameters, every step.
        grads = list(map(_GRAD, self.params)) if self._plain else [param.grad for param in self.params]
        present = [index for index, grad in enumerate(grads) if grad is not None]
        if len(present) < len(grads):
            grads = [grads[index] for index in present]
        if self._seen is None or self._seen[0] != present:
            self._seen = (present, _plain_key(id(self), present, grads))
        return present, grads, self._seen[1]


def _plain_key(owner: int, present: list[int], grads: list[torch.Tensor]) -> Any:
    """`tensor_norms`' ``plain_key`` for these gradients: None unless they are plain dense float32 tensors
    on the CPU (float64 ones are normed in float64, by the general path)."""
    plain = all(
        type(g) is torch.Tensor and g.layout is torch.strided and g.dtype is torch.float32 and g.device.type == "cpu"
        for g in grads
    )
    return (owner, tuple(present)) if plain and grads else None


_Plan = tuple[list[tuple[list[int], bool]], "torch.Tensor | None"]
_PLANS: dict[tuple[Any, ...], _Plan] = {}


def _stacking_plan(layout: tuple[tuple[torch.Size, torch.dtype], ...]) -> _Plan:
    """Groups of positions to norm together (stacked, or one by one for large tensors) and the
    permutation that puts their norms back in order; no permutation when few tensors share a shape."""
    by_shape: dict[Any, list[int]] = defaultdict(list)
    for index, (shape, dtype) in enumerate(layout):
        by_shape[(shape, dtype) if shape.numel() < _STACKED_BELOW else None].append(index)
    if len(by_shape) > len(layout) / 4:  # few tensors per shape: the stacking would save little
        return [], None
    groups = [(indices, key is not None) for key, indices in by_shape.items()]
    positions = torch.tensor([i for indices, _ in groups for i in indices])
    return groups, torch.argsort(positions)
