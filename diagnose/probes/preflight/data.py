"""Checks on the batch itself, before any model runs: labels in range, inputs finite and normalised."""

from __future__ import annotations

import torch

from diagnose.probes.preflight.context import Context, Skip, first_tensor
from diagnose.probes.preflight.outcome import Outcome

_CLASSIFICATION_TASKS = (None, "classification", "multiclass", "binary", "multilabel")


def measure_inputs(ctx: Context) -> Outcome:
    """Whether the inputs are finite, and their overall mean and standard deviation."""
    x = first_tensor(ctx.batch.inputs)
    if not (x.is_floating_point() or x.is_complex()):
        raise Skip(f"the inputs are {str(x.dtype).replace('torch.', '')} (indices, not measurements)")
    values = x.detach().double()
    finite = torch.isfinite(values)
    kept = values[finite]
    return Outcome(
        {
            "shape": list(x.shape),
            "nonfinite": int((~finite).sum()),
            "elements": int(values.numel()),
            "mean": float(kept.mean()) if kept.numel() else float("nan"),
            "std": float(kept.std()) if kept.numel() > 1 else float("nan"),
        }
    )


def measure_labels(ctx: Context) -> Outcome:
    """For a classifier: the smallest and largest label against 0..C-1 (the loss's ignore_index allowed)."""
    classes = ctx.num_classes or (2 if ctx.metadata.get("task") == "binary" else None)
    if classes is None or ctx.metadata.get("task") not in _CLASSIFICATION_TASKS:
        raise Skip("no num_classes in the metadata (or not a classification task)")
    y = ctx.batch.targets
    if not isinstance(y, torch.Tensor):
        raise Skip(f"the targets are not one tensor (got {type(y).__name__})")
    if y.is_floating_point() and y.dim() > 1 and y.shape[-1] == classes:
        raise Skip("the targets are per-class scores (soft or one-hot labels)")
    ignore = getattr(ctx.loss_fn, "ignore_index", None)
    labels = y.detach().reshape(-1)
    if ignore is not None:
        labels = labels[labels != ignore]
    high = 1 if ctx.metadata.get("task") == "binary" else classes - 1
    outside = (labels < 0) | (labels > high) | (labels != labels.round())
    fields = {
        "classes": classes,
        "low": 0,
        "high": high,
        "ignore_index": ignore,
        "count": int(labels.numel()),
        "outside": int(outside.sum()),
        "min": float(labels.min()) if labels.numel() else None,
        "max": float(labels.max()) if labels.numel() else None,
        "examples": sorted({float(v) for v in labels[outside][:100].tolist()})[:5],
    }
    blocks = f"labels outside 0..{high} would make the loss fail" if fields["outside"] else None
    return Outcome(fields, blocks=blocks)
