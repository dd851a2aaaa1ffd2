"""The run file, format v1: one JSON object per line, append-only.

This module is the contract between whatever writes a run (our probes, a
user's script, another tool) and whatever reads it. It names the record kinds,
the canonical field names, and how non-finite floats are spelled.

Every native record carries ``"kind"``. A line without ``"kind"`` is the
*minimal form* (``{"step": 10, "loss": 0.52}``, ``{"step": 10, "val_loss":
0.61}``) and is sorted into step or evaluation records by its keys.

Strict JSON has no NaN or Infinity, and a NaN loss is exactly what a user of
this tool needs to see, so non-finite floats are written as the strings
``"NaN"``, ``"Infinity"`` and ``"-Infinity"``. Readers also accept the bare
tokens ``NaN``/``Infinity`` that Python's ``json`` module writes by default.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

SCHEMA = "diagnose.run/1"
SCHEMA_VERSION = 1

# Record kinds.
META = "meta"
STEP = "step"
EVAL = "eval"
LAYER = "layer"
EVENT = "event"
KINDS = (META, STEP, EVAL, LAYER, EVENT)

# Canonical step-record fields. Any other numeric key is kept as a user scalar.
STEP_FIELDS = {
    "step": "optimizer step number (1-based by default)",
    "loss": "training loss (mean over micro-batches when accumulating)",
    "lr": "learning rate of the first parameter group",
    "lrs": "learning rates of all parameter groups, when there is more than one",
    "grad_norm": "global L2 norm of all gradients (as clip_grad_norm_ reports it)",
    "step_time": "wall-clock seconds since the previous optimizer step",
    "rss": "process resident memory, bytes",
    "cuda_allocated": "bytes held by live tensors (torch.cuda.memory_allocated)",
    "cuda_reserved": "bytes held by the caching allocator (torch.cuda.memory_reserved)",
    "cuda_peak": "peak allocated bytes since start (torch.cuda.max_memory_allocated)",
    "cuda_total": "device memory capacity, bytes",
    "gpu_mem_used": "device memory in use as NVML sees it, bytes (all processes)",
    "gpu_mem_total": "device memory capacity as NVML sees it, bytes",
    "gpu_util": "GPU utilization percent from NVML",
    "loss_scale": "AMP GradScaler scale",
    "epoch": "epoch, when the source logs one",
    # Bug signatures (diagnose.probes.signatures, diagnose.probes.loss_inputs), on sampled steps.
    "grad_carried": "L2 norm of the gradients parameters already held when the step's first backward began"
                    " (0: reset since the last step)",
    "loss_grad_nonfinite": "1 when the gradient of the loss with respect to the model output held NaN/Inf",
    "pred_min": "smallest value the loss function was given (the model output when the loss is a function)",
    "pred_max": "largest value the loss function was given",
    "pred_rowsum_dev": "mean |sum over the last dimension - 1| of the loss input (0: probabilities)",
    "pred_lse_dev": "mean |logsumexp over the last dimension| of the loss input (0: log-probabilities)",
    "pred_zero_frac": "fraction of the loss input that is exactly zero",
    "label_entropy": "entropy (nats) of the class labels of the batch the loss saw",
    "label_classes": "number of distinct class labels in that batch",
}

# Canonical per-layer fields (one record per module per sampled step).
LAYER_FIELDS = {
    "module": "qualified module name as in model.named_modules()",
    "type": "module class name",
    "grad_norm": "L2 norm of the module's own parameter gradients",
    "param_norm": "L2 norm of the module's own parameters",
    "update_ratio": "||param after step - param before|| / ||param before||",
    "act_mean": "mean of the module output",
    "act_std": "standard deviation of the module output",
    "act_zero_frac": "fraction of output elements that are exactly zero (ReLU-like modules)",
    "act_dead_frac": "fraction of output units that are zero for every sample in the batch",
    "act_unit_samples": "how many values each unit was seen over for act_dead_frac (batch x positions)",
    "act_neg_frac": "fraction of output elements <= 0 (what a following ReLU would zero)",
    "act_sat_frac": "fraction of outputs saturated (|tanh| > 0.99, sigmoid < 0.01 or > 0.99)",
    "act_batch_std": "mean over features of the standard deviation across the batch",
    "act_nonfinite": "1 when the output held NaN or Inf",
    # Inputs of Linear/convolution layers (diagnose.probes.loss_inputs.LayerInputProbe).
    "in_absmax": "largest |value| of the layer input",
    "in_mean": "mean of the layer input",
    "in_std": "standard deviation of the layer input",
    "in_min": "smallest value of the layer input",
    "in_sat_frac": "fraction of the layer input beyond 0.99 in magnitude (a saturated tanh before it)",
    "in_zero_frac": "fraction of the layer input that is exactly zero",
    "in_dead_frac": "fraction of input features <= 0 for the whole batch (a dead ReLU before it)",
}

# Event names.
EV_NONFINITE = "nonfinite"
EV_SKIPPED_STEP = "skipped_step"
EV_PROBE_ERROR = "probe_error"
EV_OOM = "out_of_memory"
EV_EXCEPTION = "exception"
# Bug signatures.
EV_UNOPTIMIZED = "unoptimized"  # count, numel, trainable_numel, modules
EV_EVAL_MODE = "eval_mode"  # count, sensitive, model_training, modules, types
EV_DUPLICATE_ROWS = "duplicate_rows"  # module, type, rows, distinct, phase (start | training)
EV_WARNING = "warning"  # category, message, origin (file:line), count
EV_LOSS_FUNCTION = "loss_function"  # loss_fn, reduction, input_shape, target_shape, target_dtype, broadcast

_NONFINITE_STRINGS = {
    "nan": math.nan,
    "+nan": math.nan,
    "-nan": math.nan,
    "inf": math.inf,
    "+inf": math.inf,
    "infinity": math.inf,
    "+infinity": math.inf,
    "-inf": -math.inf,
    "-infinity": -math.inf,
}


def encode_float(value: float) -> float | str:
    """Spell a float so that strict JSON can carry it."""
    if math.isfinite(value):
        return value
    if math.isnan(value):
        return "NaN"
    return "Infinity" if value > 0 else "-Infinity"


def encode(obj: Any) -> Any:
    """Make a record JSON-safe: non-finite floats become strings, recursively."""
    if isinstance(obj, float):
        return encode_float(obj)
    if isinstance(obj, dict):
        return {k: encode(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [encode(v) for v in obj]
    return obj


def to_number(value: Any) -> float | None:
    """Read a value where a number belongs; None when it is not one.

    Accepts numbers, booleans, numeric strings and the non-finite spellings
    ("NaN", "Infinity", "inf", ...).
    """
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        special = _NONFINITE_STRINGS.get(text.lower())
        if special is not None:
            return special
        try:
            return float(text)
        except ValueError:
            return None
    return None


# Aliases that other tools and hand-written files use for the canonical names.
# Keys are compared lower-cased with "/" and "-" turned into "_".
_TRAIN_LOSS_ALIASES = {"loss", "train_loss", "training_loss", "train_loss_step", "trn_loss"}
_VAL_LOSS_ALIASES = {
    "val_loss",
    "eval_loss",
    "valid_loss",
    "validation_loss",
    "val_loss_epoch",
    "dev_loss",
}
_LR_ALIASES = {"lr", "learning_rate", "train_lr", "lr_abs"}
_GRAD_NORM_ALIASES = {"grad_norm", "gradient_norm", "norm", "grad_norm_total", "total_grad_norm"}
_ACCURACY_ALIASES = {"acc", "accuracy"}
_EVAL_PREFIXES = ("val_", "eval_", "valid_", "validation_", "test_", "dev_")


def normalise_key(key: str) -> str:
    return key.strip().lower().replace("/", "_").replace("-", "_").replace(" ", "_")


def canonical_step_key(key: str) -> str:
    """Map a step-record key to its canonical name (or its normalised self)."""
    norm = normalise_key(key)
    if norm in _TRAIN_LOSS_ALIASES:
        return "loss"
    if norm in _LR_ALIASES:
        return "lr"
    if norm in _GRAD_NORM_ALIASES:
        return "grad_norm"
    if norm in _ACCURACY_ALIASES:
        return "accuracy"
    if norm.startswith("train_"):
        return canonical_step_key(norm[len("train_") :])  # "train/learning_rate" -> "lr"
    return norm


def canonical_eval_key(key: str) -> str:
    """Map an evaluation key to ``val_*`` (``eval_loss`` -> ``val_loss``).

    ``test_*`` keeps its prefix (``test_loss`` -> ``val_test_loss``): a test
    score logged once at the end must not pass for the validation curve.
    """
    norm = normalise_key(key)
    if norm in _VAL_LOSS_ALIASES:
        return "val_loss"
    if norm.startswith("test_"):
        return "val_test_" + _metric_name(norm[len("test_") :])
    for prefix in _EVAL_PREFIXES:
        if norm.startswith(prefix):
            return "val_" + _metric_name(norm[len(prefix) :])
    return "val_" + _metric_name(norm)


def _metric_name(name: str) -> str:
    return "accuracy" if name in _ACCURACY_ALIASES else name


def is_eval_key(key: str) -> bool:
    norm = normalise_key(key)
    return norm in _VAL_LOSS_ALIASES or norm.startswith(_EVAL_PREFIXES)


# Under torch.distributed each rank writes its own file: run.jsonl -> run.rank3.jsonl.
_RANK_NAME = re.compile(r"^(?P<base>.+)\.rank(?P<rank>\d+)$")


def rank_file(path: Path, rank: int) -> Path:
    """The file rank ``rank`` writes for a run recorded to ``path``."""
    return path.with_name(f"{path.stem}.rank{rank}{path.suffix}")


def split_rank_name(path: Path) -> tuple[str, int] | None:
    """``run.rank3.jsonl`` -> (``run``, 3); None for a name without a rank."""
    found = _RANK_NAME.match(path.stem)
    return (found["base"], int(found["rank"])) if found else None
