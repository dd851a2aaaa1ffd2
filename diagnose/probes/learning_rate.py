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
        groups = self.host.optimizer.param_groups
        if len(groups) == 1:  # the usual optimizer: no list
            record.fields["lr"] = float(groups[0]["lr"])
            return
        lrs = [float(group["lr"]) for group in groups]
        record.fields["lr"] = lrs[0]
        record.fields["lrs"] = lrs
