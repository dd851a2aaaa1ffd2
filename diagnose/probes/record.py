"""One step's worth of measurements, and how device values reach the host.

Probes put tensors into a `StepRecord` as they are (still on the device,
still being computed). `materialize` turns every tensor of many records into
Python floats with one transfer per device, which is the only host-device
synchronisation the probes cause.

What one probe measures for another travels in the record's declared shared
values (below), never in another probe's ``private`` data; a probe names what
it provides and needs (`Probe.provides`, `Probe.needs`) and the watch orders
the probes from that.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

import torch

# Shared values: the names a probe lists in `Probe.provides` / `Probe.needs`
# besides the step fields (``"grad_norm"``) and layer fields (``"layers.act_std"``) it writes.
PARAM_GRAD_NORMS = "param_grad_norms"  # grad_index, grad_norms: per-parameter gradient norms of the step
SKIPPED_STEP = "skipped_step"  # skipped: an AMP GradScaler skipped this step's optimizer.step()
SHARED_VALUES = (PARAM_GRAD_NORMS, SKIPPED_STEP)


class StepRecord:
    """Everything measured during one optimizer step."""

    __slots__ = ("events", "fields", "grad_index", "grad_norms", "layers", "losses", "private", "skipped", "step")

    def __init__(self, step: int) -> None:
        self.step = step
        self.fields: dict[str, Any] = {}
        self.layers: dict[str, dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []
        # Raw per-probe data, turned into fields by the probe once on the host; read by that probe only.
        self.private: dict[str, Any] = {}
        self.losses: list[Any] = []
        # Shared values (see PARAM_GRAD_NORMS and SKIPPED_STEP above).
        self.grad_index: list[int] | None = None  # indices into the watch's params that had a gradient
        self.grad_norms: Any = None  # their L2 norms: a tensor, then floats after materialize
        self.skipped = False

    def layer(self, module: str, **values: Any) -> None:
        self.layers.setdefault(module, {}).update(values)

    def event(self, name: str, **detail: Any) -> None:
        self.events.append({"event": name, **detail})

    @property
    def empty(self) -> bool:
        return not (
            self.fields or self.layers or self.events or self.private or self.losses or self.grad_norms is not None
        )


def materialize(records: Iterable[StepRecord]) -> None:
    """Replace every tensor held by ``records`` with floats (0-d) or lists (n-d), in place."""
    slots: list[tuple[Any, Any, torch.Tensor]] = []
    for record in records:
        for container in (record.fields, record.private, record.losses, *record.layers.values()):
            _collect(container, slots)
        if isinstance(record.grad_norms, torch.Tensor):
            slots.append((record, "grad_norms", record.grad_norms))
    by_device: dict[torch.device, list[tuple[Any, Any, torch.Tensor]]] = defaultdict(list)
    for slot in slots:
        by_device[slot[2].device].append(slot)
    for group in by_device.values():
        flat = torch.cat([t.detach().reshape(-1).to(torch.float64) for _, _, t in group]).tolist()
        offset = 0
        for container, key, tensor in group:
            size = tensor.numel()
            values = flat[offset : offset + size]
            offset += size
            value = values[0] if tensor.dim() == 0 else values
            if isinstance(container, StepRecord):
                setattr(container, key, value)
            else:
                container[key] = value


def _collect(container: dict[str, Any] | list[Any], slots: list) -> None:
    """Find tensors in nested dicts and lists, remembering where each one sits."""
    items = container.items() if isinstance(container, dict) else enumerate(container)
    for key, value in items:
        if isinstance(value, torch.Tensor):
            slots.append((container, key, value))
        elif isinstance(value, (dict, list)):
            _collect(value, slots)
