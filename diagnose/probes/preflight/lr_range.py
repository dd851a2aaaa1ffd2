"""The learning-rate range test (Smith 2017, "Cyclical Learning Rates for Training Neural Networks";
fastai's ``lr_find``).

On a copy of the model, raise the learning rate exponentially from
``start_lr`` to ``end_lr`` over ``steps`` steps, one batch per step, and
record the loss. Stop early once the smoothed loss exceeds ``stop_factor``
times the best smoothed loss so far (fastai's ``stop_div``), or turns
non-finite. The curve goes into the run file as step records with ``lr`` and
``lr_test_loss``; the rule `learning-rate-suggestion` reads the suggestion
off it.
"""

from __future__ import annotations

import math

from diagnose.probes.preflight.context import Context
from diagnose.probes.preflight.outcome import Outcome

START_LR = 1e-7
END_LR = 10.0
STEPS = 100
# fastai lr_find: stop when the smoothed loss passes 4x the best one.
STOP_FACTOR = 4.0
# fastai's exponential moving average of the loss, with bias correction.
BETA = 0.98


def measure_lr_range(ctx: Context, start_lr: float = START_LR, end_lr: float = END_LR, steps: int = STEPS) -> Outcome:
    trial = ctx.trial()
    trial.model.train()
    ratios = [
        g["lr"] / trial.optimizer.param_groups[0]["lr"] if trial.optimizer.param_groups[0]["lr"] else 1.0
        for g in trial.optimizer.param_groups
    ]
    curve: list[dict[str, float]] = []
    average, best = 0.0, math.inf
    for step, batch in zip(range(1, steps + 1), ctx.batches(), strict=False):
        trial.budget.stop_if_spent(step - 1, steps)
        lr = start_lr * (end_lr / start_lr) ** ((step - 1) / max(steps - 1, 1))
        for group, ratio in zip(trial.optimizer.param_groups, ratios, strict=True):
            group["lr"] = lr * ratio
        trial.optimizer.zero_grad(set_to_none=True)
        loss = trial.loss(batch)
        loss.backward()
        trial.optimizer.step()
        value = float(loss.detach())
        average = BETA * average + (1 - BETA) * value
        smoothed = average / (1 - BETA**step)
        curve.append({"step": step, "lr": lr, "lr_test_loss": value, "lr_test_smoothed": smoothed})
        if not math.isfinite(smoothed) or smoothed > STOP_FACTOR * best:
            break
        best = min(best, smoothed)
    stopped = curve[-1]["lr"] if len(curve) < steps else None
    return Outcome(
        {
            "start_lr": start_lr,
            "end_lr": end_lr,
            "steps": len(curve),
            "planned_steps": steps,
            "stop_factor": STOP_FACTOR,
            "diverged_at_lr": stopped,
            "user_lr": ctx.user_lr,
            "one_batch": ctx.loader is None,
        },
        steps=curve,
    )
