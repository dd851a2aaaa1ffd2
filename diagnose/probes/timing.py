"""Wall-clock time per optimizer step, measured on the host without synchronising.

On a GPU the host runs ahead of the device, so a single step's time is only
approximate; the probes synchronise once per flush, which keeps the average right.
"""

from __future__ import annotations

import time

from diagnose.probes.base import Probe
from diagnose.probes.record import StepRecord


class StepTimeProbe(Probe):
    name = "step_time"
    provides = ("step_time",)

    def __init__(self) -> None:
        super().__init__()
        self._last: float | None = None

    def on_forward_start(self, record: StepRecord) -> None:
        if self._last is None:
            self._last = time.perf_counter()

    def after_step(self, record: StepRecord) -> None:
        self._stamp(record)

    def finish(self, record: StepRecord) -> None:
        if "step_time" not in record.fields:  # no optimizer attached: the step ends here
            self._stamp(record)

    def _stamp(self, record: StepRecord) -> None:
        now = time.perf_counter()
        if self._last is not None:
            record.fields["step_time"] = now - self._last
        self._last = now
