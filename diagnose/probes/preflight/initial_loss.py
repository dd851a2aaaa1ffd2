"""The loss of the untrained model on the batch, against what an uncertain classifier scores."""

from __future__ import annotations

import math

import torch

from diagnose.probes.preflight.context import Context, Skip
from diagnose.probes.preflight.outcome import Outcome


def expected_initial_loss(ctx: Context) -> tuple[float, str]:
    """Cross-entropy of a uniform guess: the entropy of the class prior when given, else ln C."""
    prior = ctx.metadata.get("class_prior")
    if isinstance(prior, (list, tuple)) and len(prior) >= 2:
        p = torch.tensor(prior, dtype=torch.float64)
        p = p[p > 0] / p.sum()
        return float(-(p * p.log()).sum()), "the entropy of the class prior"
    classes = ctx.num_classes or (2 if ctx.metadata.get("task") == "binary" else None)
    if classes is None:
        raise Skip("no num_classes in the metadata, so no loss to expect at initialisation")
    return math.log(classes), f"ln {classes} for {classes} classes"


def measure_initial_loss(ctx: Context) -> Outcome:
    expected, meaning = expected_initial_loss(ctx)
    trial = ctx.trial()
    trial.model.train()
    with torch.no_grad():
        loss = float(trial.loss(ctx.batch))
    return Outcome(
        {
            "loss": loss,
            "expected": expected,
            "meaning": meaning,
            "classes": ctx.num_classes,
            "prior_given": "class_prior" in ctx.metadata,
        }
    )
