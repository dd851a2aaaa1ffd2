"""Probe presets, cheapest first, and the schedules that decide when a probe samples.

Cost grows with what a preset samples, not with its name: ``minimal`` hooks
only the optimizer; ``default`` adds per-module non-finite tracking on every
step (a NaN trail is gone one step later, so it cannot be sampled) and the
per-layer statistics on a schedule; ``full`` samples everything far more often.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace

from diagnose.errors import ConfigError


@dataclass(frozen=True)
class Schedule:
    """Sample on the first step and then every ``every`` steps; ``0`` means never."""

    every: int

    def due(self, step: int, first_step: int) -> bool:
        if self.every <= 0:
            return False
        return step == first_step or step % self.every == 0


@dataclass(frozen=True)
class Preset:
    name: str
    nonfinite: bool  # per-module forward/backward origin of NaN/Inf, every step
    layer_grads: Schedule  # per-layer gradient norms (the global norm is every step)
    activations: Schedule  # per-module activation statistics
    updates: Schedule  # parameter norms and update/parameter ratios (copies the weights)
    memory: Schedule  # RSS and CUDA allocator counters
    nvml: Schedule  # NVML device memory and utilisation (a driver call, slower)
    # The bug signatures (`diagnose.probes.signatures`, and the target and kept-graph signals of
    # `diagnose.probes.loss_inputs`): on in every preset; off only to measure what they cost
    # (benchmarks/overhead.py), since the bug rules read them.
    signatures: bool = True

    def with_overrides(self, every: Mapping[str, int] | None) -> Preset:
        if not every:
            return self
        schedules = {f.name for f in fields(self) if f.type in (Schedule, "Schedule")}
        unknown = set(every) - schedules
        if unknown:
            raise ConfigError(f"unknown probe schedule(s) {sorted(unknown)}; known: {sorted(schedules)}")
        return replace(self, **{key: Schedule(int(value)) for key, value in every.items()})


PRESETS: dict[str, Preset] = {
    "minimal": Preset("minimal", False, Schedule(0), Schedule(0), Schedule(0), Schedule(50), Schedule(0)),
    "default": Preset("default", True, Schedule(10), Schedule(50), Schedule(50), Schedule(10), Schedule(50)),
    "full": Preset("full", True, Schedule(1), Schedule(10), Schedule(10), Schedule(1), Schedule(10)),
}


def get_preset(name: str | Preset) -> Preset:
    if isinstance(name, Preset):
        return name
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown probe preset {name!r}; choose one of {', '.join(PRESETS)}") from None
