"""Training on one small batch: can the model overfit it, and does it need its inputs to?

Both are from Karpathy's "A Recipe for Training Neural Networks" (2019):
"overfit one batch" (a model that cannot drive the loss of a few examples
towards zero has a bug, a frozen part, or far too little capacity), and the
"input-independent baseline" (train once with the inputs zeroed: a model that
uses its inputs must do clearly better with the real ones).
"""

from __future__ import annotations

import torch

from diagnose.probes.preflight.context import Context, map_inputs
from diagnose.probes.preflight.outcome import Outcome

SAMPLES = 16
STEPS = 200
# The overfit training stops once the loss has fallen this many times below its first value: ten
# times the fall the cannot-overfit rule asks for (PRE008, 10x), so stopping there changes no
# verdict, and a model that can memorise the batch is through in a few dozen steps instead of 200.
ENOUGH_FALL = 100.0


def measure_overfit(ctx: Context, steps: int = STEPS, samples: int = SAMPLES) -> Outcome:
    """The loss before and after up to ``steps`` steps on the first ``samples`` samples, at the user's
    settings (fewer once the loss has fallen `ENOUGH_FALL` times)."""
    batch = ctx.batch.first(samples)
    losses = ctx.trial().fit(batch, steps, until_fall=ENOUGH_FALL)
    ctx.overfit_losses = losses
    return Outcome(
        {
            "steps": len(losses) - 1,
            "samples": batch.size,
            "lr": ctx.user_lr,
            "first": losses[0],
            "last": losses[-1],
            "best": min(losses),
        }
    )


def measure_baseline(ctx: Context, steps: int = STEPS, samples: int = SAMPLES) -> Outcome:
    """Final losses of two equal trainings on one small batch: with the real inputs and with zeros.
    The real-input training is the overfit experiment's (the same copy, batch and settings); the
    zeroed copy trains for as many steps as it ran."""
    batch = ctx.batch.first(samples)
    real = ctx.overfit_losses or ctx.trial().fit(batch, steps, until_fall=ENOUGH_FALL)
    done = len(real) - 1
    zeroed = ctx.trial().fit(batch.with_inputs(map_inputs(batch.inputs, _zeros)), done)
    return Outcome({"steps": done, "samples": batch.size, "real": real[-1], "zeroed": zeroed[-1]})


def _zeros(tensor: torch.Tensor) -> torch.Tensor:
    return tensor if tensor.dtype == torch.bool else torch.zeros_like(tensor)
