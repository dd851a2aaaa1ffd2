"""The run file, format v1: one JSON object per line, append-only.

This module is the whole contract between whatever writes a run (our probes,
the preflight experiments, a user's script, another tool) and whatever reads it: the
record kinds, every key of every kind, every event with its keys and their
allowed values, the module names that are not modules, and how non-finite
floats are spelled. Writers and readers take names from here, not literals.

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
from collections.abc import Mapping
from dataclasses import dataclass, field
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

# Every declaration below is one line per name: a writer that adds a key adds
# its line here (and to docs/run-format.md); tests/test_schema.py records real
# runs and fails on any key written that is not declared.

# Keys of the first record of a session (``kind: meta``).
META_FIELDS = {
    "kind": "the record kind, always first",
    "schema": "format identifier, diagnose.run/1",
    "name": "run name (defaults to the file name)",
    "started": "ISO 8601 UTC start time",
    "torch": "torch version",
    "python": "Python version",
    "host": "host name",
    "pid": "process id of the writer",
    "device": "device of the model's first parameter",
    "model": "class, parameters, trainable, dtype, modules ([name, type] in definition order)",
    "optimizer": "type and groups (hyperparameters per parameter group, num_params)",
    "metadata": "what the user passed: task, num_classes, loss_fn, class_prior, anything else",
    "probes": "the preset and the sampling interval of each probe",
    "rank": "rank of this process under torch.distributed",
    "world_size": "number of ranks under torch.distributed",
    "distributed": "the distributed recording options and backend",
    "preflight": "true for a run file written by diagnose.preflight",
    "batch_size": "size of the batch the preflight experiments ran on",
    "budget_s": "the wall-clock seconds the preflight experiments were given, shared between them",
}

# Canonical step-record fields. Any other numeric key is kept as a user scalar.
STEP_FIELDS = {
    "step": "optimizer step number (1-based by default)",
    "loss": "training loss (mean over micro-batches when accumulating)",
    "accuracy": "training accuracy, when the user logs it (acc, accuracy, and top-1 names: accuracy_top1, acc1)",
    "lr": "learning rate of the first parameter group",
    "lrs": "learning rates of all parameter groups, when there is more than one",
    "grad_norm": "global L2 norm of all gradients (as clip_grad_norm_ reports it)",
    "grad_norm_shard": "this rank's part of grad_norm when gradients are sharded (fully_shard, DTensor): the L2 norm"
    " of its shards, a part n ranks hold alike counted 1/n; grad_norm is the root of the sum of the ranks' squares",
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
    "grad_at_step": "L2 norm of the gradients the model's parameters held when optimizer.step() began"
    " (after any clipping; 0: none)",
    "backward_passes": "backward passes through the model output since the last step, when more than one",
    "backward_missed_model": "1 when backward() was called since the last step but no pass reached the model output",
    "loss_backward_scale": "gradient that reached the loss module's output in backward (1: loss.backward(),"
    " 1/k: (loss / k).backward())",
    "pred_min": "smallest value the loss function was given (the model output when the loss is a function)",
    "pred_max": "largest value the loss function was given",
    "pred_rowsum_dev": "mean |sum over the last dimension - 1| of the loss input (0: probabilities)",
    "pred_lse_dev": "mean |logsumexp over the last dimension| of the loss input (0: log-probabilities)",
    "pred_zero_frac": "fraction of the loss input that is exactly zero",
    "label_entropy": "entropy (nats) of the class labels of the batch the loss saw",
    "label_classes": "number of distinct class labels in that batch",
    "target_neg_frac": "fraction of a float (regression) target below zero, in the batch the loss saw",
    "graphs_kept": "of the last 8 sampled loss tensors with a graph, those made 2+ steps ago still alive",
    "data_time": "host seconds from the previous optimizer step to this step's first forward (distributed)",
    "forward_time": "host seconds from the step's first training forward to the end of its last (distributed)",
    "forward_wait": "the part of forward_time before the model's first submodule started, where DDP broadcasts"
    " buffers and ranks wait for each other (distributed)",
    "param_checksum": "float64 sum of all parameters after the step (distributed)",
    "ranks_loss_min": "smallest loss over the ranks (rank 0, gather mode)",
    "ranks_loss_mean": "mean loss over the ranks (rank 0, gather mode)",
    "ranks_loss_max": "largest loss over the ranks (rank 0, gather mode)",
    "ranks_grad_norm_min": "smallest gradient norm over the ranks (rank 0, gather mode)",
    "ranks_grad_norm_max": "largest gradient norm over the ranks (rank 0, gather mode)",
    "ranks_lead_time_min": "shortest data_time + forward_time - forward_wait over the ranks (rank 0, gather mode)",
    "ranks_lead_time_max": "longest data_time + forward_time - forward_wait over the ranks (rank 0, gather mode)",
    "slowest_rank": "rank with the longest lead time (rank 0, gather mode)",
    "ranks_checksum_spread": "largest minus smallest param_checksum over the ranks (rank 0, gather mode)",
    "lr_test_loss": "loss at this step of the preflight learning-rate range test",
    "lr_test_smoothed": "the same, exponentially smoothed",
}

# Evaluation-record fields: val_loss and val_accuracy are canonical, every other
# val_* key is an evaluation metric the user logged (test_* becomes val_test_*).
EVAL_FIELDS = {
    "step": "step the evaluation was made at",
    "val_loss": "validation loss",
    "val_accuracy": "validation accuracy",
}
EVAL_METRIC_PREFIX = "val_"

# Module names that are not in model.named_modules(): the model itself (whose
# name there is "") and its output, recorded like a module by the activation probe.
MODEL_MODULE = "(model)"
OUTPUT_MODULE = "(output)"
OUTPUT_TYPE = "output"  # the ``type`` of the OUTPUT_MODULE layer records

# Canonical per-layer fields (one record per module per sampled step).
LAYER_FIELDS = {
    "step": "step the values were sampled at",
    "module": "qualified module name as in model.named_modules(), or MODEL_MODULE / OUTPUT_MODULE",
    "type": "module class name (OUTPUT_TYPE for the model output)",
    "grad_norm": "L2 norm of the module's own parameter gradients",
    "grad_norm_shard": "this rank's part of the module's grad_norm when gradients are sharded (as the step field)",
    "param_norm": "L2 norm of the module's own parameters",
    "update_ratio": "||param after step - param before|| / ||param before||",
    "act_mean": "mean of the module output",
    "act_std": "standard deviation of the module output",
    "act_rms": "root mean square of the module output",
    "act_zero_frac": "fraction of output elements that are exactly zero (ReLU-like modules)",
    "act_dead_frac": "fraction of output units that are zero for every sample in the batch",
    "act_unit_samples": "how many values each unit was seen over for act_dead_frac (batch x positions)",
    "act_neg_frac": "fraction of output elements <= 0 (what a following ReLU would zero)",
    "act_sat_frac": "fraction of outputs saturated (|tanh| > 0.99, sigmoid < 0.01 or > 0.99)",
    "act_batch_std": "mean over features of the standard deviation across the batch",
    "act_dir_spread": "sqrt(features) x the mean over features of the standard deviation across the batch "
    "of the L2-normalised output (SimSiam's collapse monitor: ~1 spread, 0 collapsed)",
    "act_nonfinite": "1 when the output held NaN or Inf",
    # Inputs of Linear/convolution layers (diagnose.probes.loss_inputs.LayerInputProbe).
    "in_absmax": "largest |value| of the layer input",
    "in_mean": "mean of the layer input",
    "in_std": "standard deviation of the layer input",
    "in_min": "smallest value of the layer input",
    "in_sat_frac": "fraction of the layer input beyond 0.99 in magnitude (a saturated tanh before it)",
    "in_zero_frac": "fraction of the layer input that is exactly zero",
    "in_dead_frac": "fraction of input features <= 0 for the whole batch (a dead ReLU before it)",
    "param_checksum": "float64 sum of the module's own parameters after the step (distributed)",
}


@dataclass(frozen=True)
class Event:
    """One event name: what it says, the keys it carries besides ``kind``, ``step``
    and ``event``, and the allowed values of the keys that take only a few."""

    name: str
    meaning: str
    fields: Mapping[str, str]
    values: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


EVENT_KEYS = ("kind", "step", "event")  # keys of every event record

EV_NONFINITE = "nonfinite"
EV_SKIPPED_STEP = "skipped_step"
EV_PROBE_ERROR = "probe_error"
EV_OOM = "out_of_memory"
EV_EXCEPTION = "exception"
EV_NONFINITE_OP = "nonfinite_op"
EV_FINDING = "finding"
EV_PREFLIGHT = "preflight"
EV_NOTE = "note"
EV_COMPILED = "compiled"
# Bug signatures (diagnose.probes.signatures, diagnose.probes.loss_inputs).
EV_UNOPTIMIZED = "unoptimized"
EV_EVAL_MODE = "eval_mode"
EV_DUPLICATE_ROWS = "duplicate_rows"
EV_WARNING = "warning"
EV_LOSS_FUNCTION = "loss_function"
EV_RECURRENT_INPUT = "recurrent_input"
DUPLICATE_ROWS_START = "start"
DUPLICATE_ROWS_TRAINING = "training"

# The ``where`` of a nonfinite event: the pass or value in which NaN/Inf was first seen.
WHERE_FORWARD = "forward"
WHERE_BACKWARD = "backward"
WHERE_LOSS = "loss"
WHERE_GRAD_NORM = "grad_norm"

# The experiments of diagnose.preflight, in the order they run, with the measurements each records.
PREFLIGHT_EXPERIMENTS: dict[str, Mapping[str, str]] = {
    "inputs": {
        "shape": "input shape",
        "nonfinite": "NaN/Inf input elements",
        "elements": "input elements",
        "mean": "mean of the finite inputs",
        "std": "standard deviation of the finite inputs",
    },
    "labels": {
        "classes": "class count",
        "low": "smallest valid label",
        "high": "largest valid label",
        "ignore_index": "label the loss ignores",
        "count": "labels",
        "outside": "labels out of range",
        "min": "smallest label",
        "max": "largest label",
        "examples": "up to 5 labels out of range",
    },
    "initial_loss": {
        "loss": "loss of the untrained model",
        "expected": "loss expected at chance",
        "meaning": "what the expected value is",
        "classes": "class count",
        "prior_given": "whether the user gave class_prior",
    },
    "gradients": {
        "trainable": "trainable parameters",
        "frozen": "frozen parameters",
        "no_grad": "trainable parameters without a gradient",
        "zero_grad": "those with an all-zero one",
    },
    "mixing": {
        "sample": "the sample whose loss is differentiated",
        "batch": "batch size",
        "own_grad": "input-gradient norm of that sample",
        "other_grad": "largest of the other samples'",
        "leaking_samples": "other samples with a gradient",
        "batchnorm": "whether the model has BatchNorm",
    },
    "overfit": {
        "steps": "steps trained on one batch",
        "samples": "batch size",
        "lr": "learning rate used",
        "first": "first loss",
        "last": "last loss",
        "best": "lowest loss",
    },
    "baseline": {
        "steps": "steps trained",
        "samples": "batch size",
        "real": "last loss on the real inputs",
        "zeroed": "last loss on zeroed inputs",
    },
    "lr_range": {
        "start_lr": "first learning rate",
        "end_lr": "last planned learning rate",
        "steps": "steps run",
        "planned_steps": "steps planned",
        "stop_factor": "loss rise that stops the test",
        "diverged_at_lr": "learning rate the loss diverged at, or null",
        "user_lr": "the user's rate",
        "one_batch": "whether the test repeated one batch: no loader was given",
    },
}
_PREFLIGHT_COMMON = {
    "experiment": "which experiment (a key of PREFLIGHT_EXPERIMENTS)",
    "skipped": "why the experiment did not run, or why it stopped before its end (not judged then)",
    "seconds": "wall-clock seconds the experiment took",
    "error": "the exception the experiment raised",
    "where": "file:line in function where it was raised",
}

EVENTS: dict[str, Event] = {
    event.name: event
    for event in (
        Event(
            EV_NONFINITE,
            "the first NaN/Inf of an episode, and where it was made",
            {
                "where": "the pass or value it was first seen in",
                "module": "the module that made it (forward and backward)",
                "type": "that module's class name",
                "detail": "how it was located",
                "value": "the non-finite loss or gradient norm (where loss or grad_norm)",
            },
            values={"where": (WHERE_FORWARD, WHERE_BACKWARD, WHERE_LOSS, WHERE_GRAD_NORM)},
        ),
        Event(
            EV_SKIPPED_STEP,
            "an AMP GradScaler skipped optimizer.step()",
            {"loss_scale": "the scale after the skip", "detail": "what happened"},
        ),
        Event(
            EV_PROBE_ERROR,
            "a probe failed and switched itself off",
            {
                "probe": "the probe's name (watch: the watch itself)",
                "error": "the exception",
                "phase": "attach, when it failed while attaching",
            },
        ),
        Event(
            EV_OOM,
            "the training loop ran out of memory",
            {
                "error": "the exception",
                "cuda_allocated": "allocated bytes then",
                "cuda_reserved": "reserved bytes then",
            },
        ),
        Event(EV_EXCEPTION, "the training loop raised", {"error": "the exception"}),
        Event(
            EV_PREFLIGHT,
            "one preflight experiment and its measurements",
            {
                **_PREFLIGHT_COMMON,
                **{key: meaning for fields in PREFLIGHT_EXPERIMENTS.values() for key, meaning in fields.items()},
            },
            values={"experiment": tuple(PREFLIGHT_EXPERIMENTS)},
        ),
        Event(
            EV_NOTE,
            "text given to Watch.log (w.log(phase='warmup-done')), kept at the step it was logged at",
            {
                "key": "the keyword it was logged under",
                "text": "the text (at most 500 characters)",
            },
        ),
        Event(
            EV_COMPILED,
            "the watched model ran under torch.compile, whose graph hooks cannot see into (written once)",
            {"detail": "what is not recorded because of it"},
        ),
        Event(
            EV_UNOPTIMIZED,
            "parameters with gradients at the first step, in no parameter group, unmoved 3 steps later",
            {
                "count": "parameter tensors left out",
                "numel": "values in them",
                "trainable_numel": "values in all trainable parameters",
                "modules": "owning modules (up to 20)",
            },
        ),
        Event(
            EV_EVAL_MODE,
            "the optimizer stepped with dropout/normalisation modules in eval mode (written on change)",
            {
                "count": "mode-sensitive modules in eval mode",
                "sensitive": "mode-sensitive modules in the model",
                "model_training": "1 when the model itself was in training mode",
                "modules": "their names (up to 20)",
                "types": "their class names",
            },
        ),
        Event(
            EV_DUPLICATE_ROWS,
            "a weight matrix with identical rows (units that compute the same thing)",
            {
                "module": "the module",
                "type": "its class name",
                "rows": "rows (output units)",
                "distinct": "distinct rows",
                "phase": "start: before training; training: after step 10 or 100",
                "zero": "1 when every row is all zeros",
            },
            values={"phase": (DUPLICATE_ROWS_START, DUPLICATE_ROWS_TRAINING)},
        ),
        Event(
            EV_WARNING,
            "a Python/torch warning raised while training (again when its count grows)",
            {
                "category": "warning class name",
                "message": "the message (up to 500 characters)",
                "origin": "file name and line that raised it",
                "count": "times it was shown so far",
            },
        ),
        Event(
            EV_LOSS_FUNCTION,
            "the loss module called on the output (again when it or its shapes change)",
            {
                "loss_fn": "class name of the loss module",
                "reduction": "its reduction",
                "input_shape": "shape of the prediction it was given",
                "target_shape": "shape of the target",
                "target_dtype": "dtype of the target",
                "broadcast": "1 when the shapes differ with the same dtype",
            },
        ),
        Event(
            EV_RECURRENT_INPUT,
            "a recurrent layer's first input in training (once per layer)",
            {
                "module": "the nn.RNN/LSTM/GRU module",
                "type": "its class name",
                "batch_first": "1 when it reads dimension 0 as the batch, 0 when dimension 1",
                "input_shape": "shape of the input it was given",
            },
        ),
        Event(
            EV_NONFINITE_OP,
            "the operation that made the first non-finite training loss, read from its autograd "
            "graph when backward was called on it",
            {
                "node": "the autograd node (LogBackward0, DivBackward0, ...)",
                "op": "the operation (log, sqrt, exp, div, pow, ...), or null when no operation in the graph made it",
                "problem": "what went wrong in it",
                "input_min": "smallest finite value of the offending input",
                "input_max": "largest finite value of the offending input",
            },
        ),
        Event(
            EV_FINDING,
            "a finding the live rules made while the run was recorded; step: when first seen",
            {
                "code": "the rule code",
                "severity": "error, warning or info",
                "title": "the rule's title",
                "message": "what the rule said then",
                "module": "the module it names, or null",
                "onset": "the step the problem began, or null",
                "fix": "the first fix it suggests",
            },
            values={"severity": ("error", "warning", "info")},
        ),
    )
}

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
# Keys are compared normalised (`normalise_key`): lower case, camelCase split,
# every run of separators ("/", "-", ".", spaces) turned into one "_".
#
# How a key is resolved (documented in README.md, "Key resolution"):
# 1. an evaluation prefix (val_, eval_, valid_, validation_, dev_; test_ kept
#    apart) makes it an evaluation key, any other key is a training key;
# 2. a training prefix (train_, training_, trn_, tr_) is dropped;
# 3. what is left is the loss when it names one (`_LOSS_NAMES`: loss, losses,
#    nll, ce, cross_entropy, bpb, nats_per_byte, ... alone, or after "loss_",
#    "mean_", "avg_"), the learning rate, the gradient norm or the accuracy
#    when it names one of those, otherwise it keeps its normalised name.
_LOSS_NAMES = {
    "loss",
    "losses",
    "nll",
    "ce",
    "ce_loss",
    "xent",
    "cross_entropy",
    "bpb",
    "bits_per_byte",
    "nats_per_byte",
    "nll_loss",
    "loss_step",
}
_LOSS_QUALIFIERS = ("loss_", "mean_", "avg_", "average_", "total_")
_VAL_LOSS_ALIASES = {"val_loss_epoch"}
_LR_ALIASES = {"lr", "learning_rate", "lr_abs"}
_GRAD_NORM_ALIASES = {"grad_norm", "gradient_norm", "norm", "grad_norm_total", "total_grad_norm"}
# Top-1 is what "accuracy" means for a classifier; top-5 keeps its own name.
_ACCURACY_ALIASES = {"acc", "accuracy", "accuracy_top1", "top1_accuracy", "top1_acc", "acc_top1", "top1", "acc1"}
_EVAL_PREFIXES = ("val_", "eval_", "valid_", "validation_", "test_", "dev_")
_TRAIN_PREFIXES = ("train_", "training_", "trn_", "tr_")
_POSITION_KEYS = {"step", "epoch", "_step", "iteration", "iter", "it", "global_step"}
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z][a-z])")  # TrainLoss, valLoss; not mAP50
_SEPARATORS = re.compile(r"[\s/.\-_]+")


def normalise_key(key: str) -> str:
    """``"Train Loss"``, ``"train/loss"``, ``"TrainLoss"`` -> ``"train_loss"``.

    camelCase is split only in a key without separators, and only before a
    capital followed by a small letter (``TrainLoss``), so ``mAP50`` keeps its
    letters together.
    """
    text = key.strip()
    if not _SEPARATORS.search(text):
        text = _CAMEL.sub("_", text)
    return _SEPARATORS.sub("_", text.lower()).strip("_")


def is_loss_name(name: str) -> bool:
    """A normalised name, without train/eval prefix, that names the loss (``nll``, ``loss_nats_per_byte``)."""
    if name in _LOSS_NAMES:
        return True
    return any(name.startswith(q) and name[len(q) :] in _LOSS_NAMES for q in _LOSS_QUALIFIERS)


def _without_train_prefix(norm: str) -> str:
    for prefix in _TRAIN_PREFIXES:
        if norm.startswith(prefix) and len(norm) > len(prefix):
            return norm[len(prefix) :]
    return norm


def canonical_step_key(key: str) -> str:
    """Map a step-record key to its canonical name (or its normalised self)."""
    norm = normalise_key(key)
    name = _without_train_prefix(norm)
    if is_loss_name(name):
        return "loss"
    if name in _LR_ALIASES:
        return "lr"
    if name in _GRAD_NORM_ALIASES:
        return "grad_norm"
    if name in _ACCURACY_ALIASES:
        return "accuracy"
    if norm.startswith("train_") and name not in _POSITION_KEYS:  # "train_step" is a metric, not the step
        return name  # "train/box_loss" -> "box_loss", as the parts are named
    return norm


def canonical_eval_key(key: str) -> str:
    """Map an evaluation key to ``val_*`` (``eval_loss`` -> ``val_loss``, ``valid_nll`` -> ``val_loss``).

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
    if is_loss_name(name):
        return "loss"
    return "accuracy" if name in _ACCURACY_ALIASES else name


def split_prefix(key: str) -> str | None:
    """The data-split prefix a key starts with (``"Val Loss"`` -> ``"val_"``, ``"TrainLoss"`` ->
    ``"train_"``), or None."""
    norm = normalise_key(key)
    return next((p for p in (*_EVAL_PREFIXES, *_TRAIN_PREFIXES) if norm.startswith(p) and norm != p), None)


def is_eval_key(key: str) -> bool:
    norm = normalise_key(key)
    return norm in _VAL_LOSS_ALIASES or (norm.startswith(_EVAL_PREFIXES) and norm not in _EVAL_PREFIXES)


# Under torch.distributed each rank writes its own file: run.jsonl -> run.rank3.jsonl.
_RANK_NAME = re.compile(r"^(?P<base>.+)\.rank(?P<rank>\d+)$")


def rank_file(path: Path, rank: int) -> Path:
    """The file rank ``rank`` writes for a run recorded to ``path``."""
    return path.with_name(f"{path.stem}.rank{rank}{path.suffix}")


def process_file(path: Path, pid: int, attempt: int = 0) -> Path:
    """Where a second live writer of ``path`` records instead: ``run.pid<PID>.jsonl`` (then ``-2``, ``-3``...)."""
    suffix = f"-{attempt + 1}" if attempt else ""
    return path.with_name(f"{path.stem}.pid{pid}{suffix}{path.suffix}")


def split_rank_name(path: Path) -> tuple[str, int] | None:
    """``run.rank3.jsonl`` -> (``run``, 3); None for a name without a rank."""
    found = _RANK_NAME.match(path.stem)
    return (found["base"], int(found["rank"])) if found else None
