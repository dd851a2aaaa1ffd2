"""Optimizer steps skipped by an AMP GradScaler because the scaled gradients overflowed."""

from __future__ import annotations

from typing import Any

from diagnose.probes.base import Probe
from diagnose.probes.presets import Schedule
from diagnose.probes.record import SKIPPED_STEP, StepRecord
from diagnose.runfile import schema


class GradScalerProbe(Probe):
    """Wraps ``scaler.step`` on the instance: when it returns without the optimizer having stepped,
    the step was skipped."""

    name = "grad_scaler"
    provides = (SKIPPED_STEP, "loss_scale")

    def __init__(self, scaler: Any, schedule: Schedule) -> None:
        super().__init__()
        self.scaler = scaler
        self.schedule = schedule

    def attach(self, host: Any) -> None:
        super().attach(host)
        original = self.scaler.step

        def step(optimizer: Any, *args: Any, **kwargs: Any) -> Any:
            steps_before = host.optimizer_steps
            result = original(optimizer, *args, **kwargs)
            if self.active and host.optimizer_steps == steps_before:
                host.guard(self, self._skipped)()
            return result

        self.scaler.step = step

    def _skipped(self) -> None:
        record = self.host.record
        record.skipped = True
        record.event(
            schema.EV_SKIPPED_STEP,
            loss_scale=float(self.scaler.get_scale()),
            detail="GradScaler found inf/NaN gradients and skipped optimizer.step()",
        )
        self.host.end_step()

    def finish(self, record: StepRecord) -> None:
        if self.schedule.due(record.step, self.host.first_step) and self.scaler.is_enabled():
            # _scale is updated in place by scaler.update(); keep a copy for later.
            scale = getattr(self.scaler, "_scale", None)
            if scale is not None:
                record.fields["loss_scale"] = scale.detach().clone()

    def detach(self) -> None:
        super().detach()
        self.scaler.__dict__.pop("step", None)  # the class method shows through again
