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


def _finite(values: np.ndarray) -> np.ndarray:
    """The finite values, read only: the array itself when all are (a long curve's million values
    are then not copied by a mask that keeps every one)."""
    keep = np.isfinite(values)
    return values if keep.all() else values[keep]


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
    values = _finite(values)
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
    if not keep.all():
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
    ``pred_lse_dev``, ``pred_zero_frac`` and ``target_neg_frac`` over the
    sampled steps. Outputs count as clamped at zero when at least a tenth of
    them are exactly 0 and none is below; for a regression loss, only when at
    least a tenth of the targets are negative too (a non-negative target may
    be meant to be predicted through a ReLU).
    """
    lo, hi = stats.get("pred_min", math.nan), stats.get("pred_max", math.nan)
    rowsum, lse, zeros = (stats.get(k, math.nan) for k in ("pred_rowsum_dev", "pred_lse_dev", "pred_zero_frac"))
    negative_targets = stats.get("target_neg_frac", math.nan)
    in_unit = lo >= 0 and hi <= 1
    if loss_fn == "CrossEntropyLoss" and in_unit and rowsum < tolerance:
        return {"kind": "softmax-into-cross-entropy", "pred_min": lo, "pred_max": hi, "rowsum_dev": rowsum}
    if loss_fn == "NLLLoss" and not (hi <= tolerance and lse < tolerance):
        return {"kind": "nll-on-raw-scores", "pred_min": lo, "pred_max": hi, "logsumexp_dev": lse}
    if loss_fn in ("BCEWithLogitsLoss", "MultiLabelSoftMarginLoss") and in_unit:
        return {"kind": "sigmoid-into-bce-with-logits", "pred_min": lo, "pred_max": hi}
    if loss_fn in ("CrossEntropyLoss", "BCEWithLogitsLoss") and lo == 0 and zeros >= 0.1:
        return {"kind": "logits-clamped-at-zero", "pred_min": lo, "zero_frac": zeros}
    if loss_fn in REGRESSION_LOSSES and lo == 0 and zeros >= 0.1 and negative_targets >= 0.1:
        return {"kind": "regression-clamped-at-zero", "zero_frac": zeros, "negative_targets": negative_targets}
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
    values = _finite(values)
    if len(values) < 10 or values[-1] >= 0:
        return None
    scale = max(float(np.median(np.abs(values[: max(len(values) // 10, 1)]))), 1e-12)
    orders = math.log10(abs(values[-1]) / scale) if values[-1] < 0 else 0.0
    if orders < min_orders:
        return None
    return {"start": float(values[0]), "end": float(values[-1]), "orders": orders}


def loss_below_label_bound(loss: Sequence[float], num_classes: int | None) -> dict | None:
    """A classification loss whose last tenth sits below ``-ln(K)``.

    Cross-entropy of a label is never negative, and subtracting an entropy
    bonus (weight at most 1) takes at most ``ln(K)`` off it: a loss further
    below zero than that is no likelihood of the labels at all.
    """
    values = np.asarray(loss, float)
    values = _finite(values)
    if len(values) < 10:
        return None
    bound = -math.log(max(int(num_classes or 2), 2))
    tail = float(np.median(values[-max(len(values) // 10, 1) :]))
    if tail >= bound:
        return None
    return {"start": float(values[0]), "end": float(values[-1]), "late_median": tail, "bound": bound}


# Losses that compare a value with a value: on a class index they treat "class 3" as "3.0".
REGRESSION_LOSSES = ("MSELoss", "L1Loss", "SmoothL1Loss", "HuberLoss")


def regression_loss_on_classes(loss_fn: str, input_shape: Sequence[int], num_classes: int | None) -> dict | None:
    """A regression loss given one value per sample for a task of three or more classes."""
    if loss_fn not in REGRESSION_LOSSES or not num_classes or num_classes < 3 or not input_shape:
        return None
    outputs = 1 if len(input_shape) == 1 else int(input_shape[-1])
    if outputs != 1:
        return None
    return {"loss_fn": loss_fn, "outputs": outputs, "num_classes": int(num_classes)}


# The largest weight decay in common use per optimizer: SGD's usual 1e-4 to 5e-4 (ResNet
# recipes), AdamW's 0.01 to 0.1 (BERT, GPT recipes) and up to 1 in grokking experiments.
USUAL_DECAY_LIMIT = {"SGD": 1e-2, "AdamW": 1.0}


def weight_decay_shrink(groups: Sequence[Mapping[str, Any]], optimizer: str, min_shrink: float) -> dict | None:
    """The parameter group whose weight decay shrinks the weights fastest, when its decay is
    beyond `USUAL_DECAY_LIMIT` and takes at least ``min_shrink`` of them each step (a shrink
    that comes from a huge learning rate with a usual decay is the learning rate's problem).

    SGD's decay adds ``wd * w`` to the gradient, so with momentum m a step takes
    ``lr * wd / (1 - m)`` of the weights in the steady state; AdamW's decoupled
    decay takes ``lr * wd``. Adam's coupled decay is normalised with the
    gradient and has no such closed form: it is not judged.
    """
    worst = None
    for index, group in enumerate(groups):
        lr, wd = float(group.get("lr") or 0), float(group.get("weight_decay") or 0)
        if optimizer == "SGD":
            momentum = float(group.get("momentum") or 0)
            shrink = lr * wd / (1 - momentum) if momentum < 1 else math.inf
        elif optimizer == "AdamW" or group.get("decoupled_weight_decay"):
            shrink = lr * wd
        else:
            continue
        usual = USUAL_DECAY_LIMIT["SGD" if optimizer == "SGD" else "AdamW"]
        if wd > usual and shrink >= min_shrink and (worst is None or shrink > worst["shrink"]):
            worst = {"group": index, "lr": lr, "weight_decay": wd, "shrink": shrink}
    if worst is not None:
        worst["half_life_steps"] = math.log(2) / -math.log1p(-min(worst["shrink"], 0.999999))
    return worst


def linear_stacks(modules: Sequence[Sequence[str]], model_class: str) -> list[tuple[str, str]]:
    """(first, second) Linear layers that are children of one ``nn.Sequential`` with only
    pass-through modules (Identity, Dropout, Flatten) between them: together one linear map.

    ``modules``: (qualified name, class name) in registration order, which is the
    order a Sequential runs its children in; ``model_class`` is the root's class.
    """
    types = dict((name, kind) for name, kind in modules)
    types[""] = model_class
    pairs = []
    last: tuple[str, str] | None = None  # (name, parent) of a Linear with only pass-through after it
    for name, kind in modules:
        parent = name.rpartition(".")[0]
        if types.get(parent) != "Sequential":
            continue
        if kind == "Linear":
            if last is not None and last[1] == parent:
                pairs.append((last[0], name))
            last = (name, parent)
        elif kind not in _PASS_THROUGH and (last is None or last[1] == parent):
            last = None
    return pairs


# Modules that keep a stack of Linear layers linear.
_PASS_THROUGH = ("Identity", "Dropout", "Flatten", "Unflatten")


def steps_without_gradient(grad_at_step: Sequence[float], grad_norm: Sequence[float], min_share: float) -> dict | None:
    """Sampled steps at which the optimizer held no gradient although backward made one."""
    at_step, norms = np.asarray(grad_at_step, float), np.asarray(grad_norm, float)
    keep = np.isfinite(at_step) & np.isfinite(norms) & (norms > 0)
    if keep.sum() < 3:
        return None
    empty = at_step[keep] == 0
    share = float(empty.mean())
    if share < min_share:
        return None
    return {"empty_steps": int(empty.sum()), "sampled_steps": int(keep.sum()), "share": share}


def clip_factor(grad_at_step: Sequence[float], grad_norm: Sequence[float]) -> np.ndarray:
    """Per sampled step: the norm the optimizer was handed over the norm backward made (1: unclipped)."""
    at_step, norms = np.asarray(grad_at_step, float), np.asarray(grad_norm, float)
    keep = np.isfinite(at_step) & np.isfinite(norms) & (norms > 0) & (at_step > 0)
    return at_step[keep] / norms[keep]


def clipped_far_below(factors: np.ndarray, max_factor: float, min_share: float) -> dict | None:
    """Clipping that cuts the gradient to ``max_factor`` of its norm or less at most steps."""
    if len(factors) < 3:
        return None
    cut = factors <= max_factor
    share = float(cut.mean())
    if share < min_share:
        return None
    return {"clipped_steps": int(cut.sum()), "sampled_steps": len(factors), "median_factor": float(np.median(factors))}


def undivided_accumulation(passes: Sequence[float], scale: Sequence[float], tolerance: float) -> dict | None:
    """Several backward passes per step, each with the loss at full weight (its gradient 1)."""
    passes_arr, scale_arr = np.asarray(passes, float), np.asarray(scale, float)
    passes_arr, scale_arr = passes_arr[np.isfinite(passes_arr)], scale_arr[np.isfinite(scale_arr)]
    if len(passes_arr) < 3 or len(scale_arr) < 3:
        return None
    micro = float(np.median(passes_arr))
    weight = float(np.median(scale_arr))
    if micro < 2 or abs(weight - 1) > tolerance:
        return None
    return {"backward_passes": micro, "loss_weight": weight, "sampled_steps": len(passes_arr)}


def never_clipped(factors: np.ndarray) -> bool:
    """True when at least 3 sampled steps were seen and none was clipped (factor 1 within float error)."""
    return len(factors) >= 3 and float(np.min(factors)) >= 1 - 1e-6


def gave_progress_back(loss: Sequence[float], min_rise: float) -> dict | None:
    """A positive loss whose end (median of the last tenth) is more than ``min_rise`` (log) above
    its best smoothed level (the lowest of 20 bin medians, as LR002 measures it)."""
    values = np.asarray(loss, float)
    values = _finite(values)
    if len(values) < 20 or (values <= 0).any():
        return None
    best = float(min(np.median(chunk) for chunk in np.array_split(values, 20)))
    end = float(np.median(values[-max(len(values) // 10, 1) :]))
    if not math.log(end / best) > min_rise:
        return None
    return {"best_loss": best, "end_loss": end}


def loss_at_label_entropy(
    loss: Sequence[float], label_entropy: float, num_classes: int, tolerance: float
) -> dict | None:
    """A training loss that never gets below the entropy of the batches' labels.

    Predicting each class with its frequency scores exactly that entropy; a
    model that has learned anything about which input carries which label
    scores less. Batches must be mixed (entropy at least half of ``ln(K)``),
    or sorted labels would make the bound trivial.
    """
    values = np.asarray(loss, float)
    values = _finite(values)
    if len(values) < 20 or num_classes < 2 or not label_entropy >= 0.5 * math.log(num_classes):
        return None
    late = float(np.median(values[-max(len(values) // 10, 1) :]))
    best = float(min(np.median(chunk) for chunk in np.array_split(values, 20)))
    if best < (1 - tolerance) * label_entropy:
        return None
    return {"late_loss": late, "best_loss": best, "label_entropy": label_entropy, "num_classes": num_classes}


def recurrent_axes_swapped(batch_first: bool, input_shape: Sequence[int], loss_batch: int) -> dict | None:
    """A recurrent layer given (batch, time, features) while it reads (time, batch, features), or
    the other way round: the loss's batch size is the axis the layer takes for time, not for the batch.

    Undecided (None) when time and batch have the same length.
    """
    if len(input_shape) != 3:
        return None
    batch, time = (input_shape[0], input_shape[1]) if batch_first else (input_shape[1], input_shape[0])
    if batch == time or loss_batch != time:
        return None
    return {"read_as_batch": int(batch), "read_as_time": int(time), "loss_batch": int(loss_batch)}
