"""The decisions behind the bug rules, as small pure functions over recorded values.

Each function takes the values a probe recorded (plain numbers, arrays,
event rows as dicts) and returns the evidence of one bug, or None. The rules
in :mod:`diagnose.rules.bugs` call them on a finished `Run`; a live monitor
can call them on what it has so far.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from diagnose.runfile import schema


def carried_gradients(carried: Sequence[float], grad_norm: Sequence[float], min_share: float) -> dict | None:
    """Gradients already held at the first backward of a step, on sampled steps after the first.

    ``carried``/``grad_norm``: the ``grad_carried`` and ``grad_norm`` values at
    the same sampled steps (the first step, which never carries, left out).
    """
    carried_arr, norms = np.asarray(carried, float), np.asarray(grad_norm, float)
    if len(carried_arr) < 2:
        return None
    held = carried_arr > 0
    share = float(held.mean())
    if share < min_share:
        return None
    ratio = (
        float(np.nanmedian(carried_arr[held] / np.where(norms[held] > 0, norms[held], np.nan)))
        if np.isfinite(norms[held]).any()
        else math.nan
    )
    return {
        "carried_steps": int(held.sum()),
        "sampled_steps": len(carried_arr),
        "share": share,
        "carried_to_total": ratio,
    }


def gradient_growth(grad_norm: Sequence[float]) -> float:
    """Last over first gradient norm (medians of the first and last fifth): how much they piled up."""
    values = np.asarray(grad_norm, float)
    values = values[np.isfinite(values) & (values > 0)]
    if len(values) < 5:
        return math.nan
    fifth = max(len(values) // 5, 1)
    return float(np.median(values[-fifth:]) / np.median(values[:fifth]))


def exactly_zero_gradients(grad_norm: Sequence[float], min_share: float) -> dict | None:
    values = np.asarray(grad_norm, float)
    values = values[np.isfinite(values)]
    if len(values) < 3:
        return None
    share = float((values == 0).mean())
    return (
        {"zero_steps": int((values == 0).sum()), "steps": len(values), "share": share} if share >= min_share else None
    )


def frozen_layers(
    grad_norm: Mapping[str, Sequence[float]], update_ratio: Mapping[str, Sequence[float]], min_samples: int
) -> list[str]:
    """Modules whose parameters get a gradient but never move: every sampled update exactly zero."""
    frozen = []
    for module, ratios in update_ratio.items():
        ratios_arr = np.asarray(ratios, float)
        ratios_arr = ratios_arr[np.isfinite(ratios_arr)]
        grads = np.asarray(grad_norm.get(module, ()), float)
        if len(ratios_arr) >= min_samples and (ratios_arr == 0).all() and (grads[np.isfinite(grads)] > 0).any():
            frozen.append(module)
    return frozen


def learning_rate_collapse(steps: Sequence[float], lr: Sequence[float], within: float, min_drop: float) -> dict | None:
    """The learning rate fell by ``min_drop`` x or more within the first ``within`` of the run."""
    steps_arr, lr_arr = np.asarray(steps, float), np.asarray(lr, float)
    keep = np.isfinite(lr_arr) & (lr_arr >= 0)
    steps_arr, lr_arr = steps_arr[keep], lr_arr[keep]
    if len(lr_arr) < 20 or lr_arr[0] <= 0:
        return None
    cutoff = steps_arr[0] + within * (steps_arr[-1] - steps_arr[0])
    early = lr_arr[steps_arr <= cutoff]
    drop = lr_arr[0] / max(float(early.min()), 1e-300)
    if drop < min_drop or lr_arr[-1] > lr_arr[0] / min_drop:
        return None
    collapsed_at = float(steps_arr[np.argmax(lr_arr <= lr_arr[0] / min_drop)])
    return {
        "initial_lr": float(lr_arr[0]),
        "lr_at_cutoff": float(early[-1]),
        "cutoff_step": float(cutoff),
        "collapsed_at": collapsed_at,
        "drop": drop,
        "final_lr": float(lr_arr[-1]),
    }


def sorted_labels(
    entropy: Sequence[float], classes: Sequence[float], num_classes: int | None, max_share: float
) -> dict | None:
    """Batches hold far fewer classes than the data: the mean batch label entropy is under
    ``max_share`` of the entropy of the classes seen over all sampled batches."""
    entropy_arr, classes_arr = np.asarray(entropy, float), np.asarray(classes, float)
    keep = np.isfinite(entropy_arr) & np.isfinite(classes_arr)
    entropy_arr, classes_arr = entropy_arr[keep], classes_arr[keep]
    if len(entropy_arr) < 3:
        return None
    seen = max(int(num_classes or 0), int(classes_arr.max()))
    if seen < 2:
        return None
    # Reference: the entropy a batch of the same size would have with the classes
    # mixed, at most ln(classes seen) (classes balanced).
    reference = math.log(seen)
    share = float(np.mean(entropy_arr)) / reference
    if share > max_share:
        return None
    return {
        "batch_entropy": float(np.mean(entropy_arr)),
        "mixed_entropy": reference,
        "share": share,
        "classes_per_batch": float(np.median(classes_arr)),
        "classes": seen,
        "batches": len(entropy_arr),
    }


def softmax_ce_floor(num_classes: int) -> float:
    """Lowest loss ``CrossEntropyLoss`` can reach when it is fed probabilities.

    ``cross_entropy`` applies ``log_softmax`` to its input. Fed probabilities
    p in [0, 1], the best it can see is a one-hot p (the true class at 1, the
    others at 0), whose log_softmax at the true class is
    ``1 - log(e + K - 1)``; the loss is therefore at least
    ``log(e + K - 1) - 1 = log(1 + (K - 1) / e)``: 1.461 for K = 10, 0.313 for
    K = 2 (derived here from the definition of log_softmax).
    """
    return math.log(1 + (num_classes - 1) / math.e)


def output_loss_mismatch(loss_fn: str, stats: Mapping[str, float], tolerance: float) -> dict | None:
    """What the loss function was given against what it expects; None when they agree.

    ``stats``: medians of ``pred_min``, ``pred_max``, ``pred_rowsum_dev``,
    ``pred_lse_dev``, ``pred_zero_frac`` over the sampled steps.
    """
    lo, hi = stats.get("pred_min", math.nan), stats.get("pred_max", math.nan)
    rowsum, lse, zeros = (stats.get(k, math.nan) for k in ("pred_rowsum_dev", "pred_lse_dev", "pred_zero_frac"))
    in_unit = lo >= 0 and hi <= 1
    if loss_fn == "CrossEntropyLoss" and in_unit and rowsum < tolerance:
        return {"kind": "softmax-into-cross-entropy", "pred_min": lo, "pred_max": hi, "rowsum_dev": rowsum}
    if loss_fn == "NLLLoss" and not (hi <= tolerance and lse < tolerance):
        return {"kind": "nll-on-raw-scores", "pred_min": lo, "pred_max": hi, "logsumexp_dev": lse}
    if loss_fn in ("BCEWithLogitsLoss", "MultiLabelSoftMarginLoss") and in_unit:
        return {"kind": "sigmoid-into-bce-with-logits", "pred_min": lo, "pred_max": hi}
    if loss_fn in ("CrossEntropyLoss", "BCEWithLogitsLoss") and lo == 0 and zeros >= 0.1:
        return {"kind": "logits-clamped-at-zero", "pred_min": lo, "zero_frac": zeros}
    return None


_BROADCAST_WARNING = re.compile(r"target size .* different to the input size", re.IGNORECASE)


def broadcast_warning(messages: Sequence[str]) -> str | None:
    """The loss warning that says target and output were broadcast against each other."""
    return next((m for m in messages if _BROADCAST_WARNING.search(m)), None)


def unnormalised_inputs(absmax: float, std: float, mean: float, max_scale: float) -> dict | None:
    """Features reaching the first layer at a scale far from unit variance."""
    scale = max(abs(std), abs(mean)) if math.isfinite(std) else math.nan
    if not scale > max_scale:
        return None
    return {"input_absmax": absmax, "input_std": std, "input_mean": mean}


def functional_activation(
    kind: str, in_min: float, in_absmax: float, sat_frac: float, dead_frac: float, zero_frac: float, min_share: float
) -> dict | None:
    """A layer's input looks like the output of a saturated tanh or of dead ReLUs."""
    if kind == "tanh" and in_absmax <= 1.0 and in_min >= -1.0 and sat_frac >= min_share:
        return {"saturated": sat_frac}
    if kind == "relu" and in_min >= 0 and dead_frac >= min_share:
        return {"dead": dead_frac, "zero_frac": zero_frac}
    return None


def identical_units(events: Sequence[Mapping[str, Any]]) -> list[dict]:
    """Layers whose weight rows were all identical at the start: a non-zero constant at once, an
    all-zero matrix only if it was still identical after training steps (a zero-initialised
    adapter such as LoRA's B matrix separates by itself)."""
    start = {e["module"]: e for e in events if e.get("phase") == schema.DUPLICATE_ROWS_START and e.get("distinct") == 1}
    stayed = {
        e["module"] for e in events if e.get("phase") == schema.DUPLICATE_ROWS_TRAINING and e.get("distinct") == 1
    }
    return [dict(e, stayed=module in stayed) for module, e in start.items() if not e.get("zero") or module in stayed]


def falls_below_zero_without_bound(loss: Sequence[float], min_orders: float) -> dict | None:
    """A loss that crosses zero and keeps falling by orders of magnitude (log-likelihoods of raw scores)."""
    values = np.asarray(loss, float)
    values = values[np.isfinite(values)]
    if len(values) < 10 or values[-1] >= 0:
        return None
    scale = max(float(np.median(np.abs(values[: max(len(values) // 10, 1)]))), 1e-12)
    orders = math.log10(abs(values[-1]) / scale) if values[-1] < 0 else 0.0
    if orders < min_orders:
        return None
    return {"start": float(values[0]), "end": float(values[-1]), "orders": orders}
