"""Learning rate of every parameter group, read from the optimizer at each step."""

from __future__ import annotations

from diagnose.probes.base import Probe
from diagnose.probes.record import StepRecord


class LearningRateProbe(Probe):
    name = "learning_rate"
    provides = ("lr", "lrs")

    def before_step(self, record: StepRecord) -> None:
        # float() also covers a tensor lr (capturable optimizers); that is rare
        # enough that its synchronisation does not matter.
        lrs = [float(group["lr"]) for group in self.host.optimizer.param_groups]
        record.fields["lr"] = lrs[0]
        if len(lrs) > 1:
            record.fields["lrs"] = lrs
