"""Does every trainable parameter receive a gradient from one backward pass?"""

from __future__ import annotations

from diagnose.probes.preflight.context import Context
from diagnose.probes.preflight.outcome import Outcome


def measure_gradients(ctx: Context) -> Outcome:
    """Names of trainable parameters whose gradient is missing (not in the graph) or exactly zero."""
    trial = ctx.trial()
    trial.model.train()
    trial.loss(ctx.batch).backward()
    trainable = [(n, p) for n, p in trial.model.named_parameters() if p.requires_grad]
    missing = [n for n, p in trainable if p.grad is None]
    zero = [n for n, p in trainable if p.grad is not None and not bool(p.grad.any())]
    frozen = sum(1 for p in trial.model.parameters() if not p.requires_grad)
    return Outcome({"trainable": len(trainable), "frozen": frozen, "no_grad": missing, "zero_grad": zero})
