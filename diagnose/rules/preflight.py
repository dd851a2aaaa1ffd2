"""Rules that judge what `diagnose.preflight` measured before training.

Each preflight experiment writes one event record ``{"kind": "event", "event":
"preflight", "experiment": NAME, ...measurements}``; the learning-rate range test
adds step records with ``lr``, ``lr_test_loss`` and ``lr_test_smoothed``. A
rule here reads the record of its experiment. On a run without preflight records
(any ordinary training run) these rules are "not evaluated".
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from diagnose.rules.base import Category, Finding, Rule, Severity, Threshold
from diagnose.rules.helpers import event_records, listing
from diagnose.run import Run
from diagnose.runfile import schema

KARPATHY = "Karpathy, 'A Recipe for Training Neural Networks' (2019)"


def preflight_records(run: Run) -> list[dict[str, Any]]:
    """Every preflight event of the run, as plain dicts without the fields a record did not set."""
    return event_records(run, schema.EV_PREFLIGHT)


def preflight_record(run: Run, experiment: str) -> dict[str, Any] | None:
    """The last record of one experiment, or None when the run has none."""
    found = [r for r in preflight_records(run) if r.get("experiment") == experiment]
    return found[-1] if found else None


def measured(record: Mapping[str, Any]) -> dict[str, Any]:
    """A record's measurements, without the fields that only say which experiment it is."""
    return {k: v for k, v in record.items() if k not in ("step", "event", "experiment")}


def number(record: Mapping[str, Any], key: str) -> float:
    """A measurement as a float (NaN when missing or not a number; "Infinity" read back as inf)."""
    value = schema.to_number(record.get(key))
    return math.nan if value is None else value


class PreflightRule(Rule):
    """A rule over the record of one preflight experiment; ``judge`` sees the record."""

    experiment: ClassVar[str]
    category = Category.PREFLIGHT

    def missing(self, run: Run) -> list[str]:
        record = preflight_record(run, self.experiment)
        if record is None:
            return [f"preflight.{self.experiment}"]
        if "skipped" in record:
            return [f"preflight.{self.experiment} (skipped: {record['skipped']})"]
        if "error" in record:
            return [f"preflight.{self.experiment} (the experiment failed; see PRE001)"]
        return []

    def check(self, run: Run, t: Mapping[str, float]) -> Iterator[Finding]:
        record = preflight_record(run, self.experiment)
        yield from self.judge(run, record or {}, t)

    def judge(self, run: Run, record: Mapping[str, Any], t: Mapping[str, float]) -> Iterator[Finding]:
        raise NotImplementedError


class PreflightExperimentFailed(Rule):
    """
    ## What it detects
    A preflight experiment that raised an exception while running the model, the
    loss or the optimizer on the batch.

    ## Why it matters
    The same code would raise in the first step of training, or fail in a
    way the experiment could not measure. The error names the problem.

    ## How it decides
    Fires for every preflight record that holds an error instead of
    measurements.

    ## What to do
    Run one forward pass and one loss by hand on the batch and read the
    error: tensor shapes (the model's output against the targets), dtypes
    (class indices must be ``long`` for cross-entropy, float for BCE) and
    devices (model and batch on the same one).
    """

    code = "PRE001"
    name = "preflight-experiment-failed"
    title = "A preflight experiment raised an error"
    category = Category.PREFLIGHT
    severity = Severity.ERROR
    requires = ("preflight",)
    priority = 5

    def missing(self, run: Run) -> list[str]:
        return [] if preflight_records(run) else ["preflight"]

    def check(self, run: Run, t: Mapping[str, float]) -> Iterator[Finding]:
        for record in preflight_records(run):
            if "error" not in record:
                continue
            where = f" ({record['where']})" if "where" in record else ""
            yield self.finding(
                run,
                message=f"the {record['experiment']} experiment raised {record['error']}{where}",
                evidence={"experiment": record["experiment"], "error": record["error"], "where": record.get("where")},
                causes=[
                    "the model's output and the targets do not fit the loss (shape, dtype)",
                    "model and batch are on different devices",
                    "a bug in the forward pass that only shows on real data",
                ],
                fixes=[
                    "run model(inputs) and loss_fn(output, targets) once by hand and read the error",
                    "check the target dtype: long class indices for cross-entropy, float for BCE",
                    "move the batch to the model's device",
                ],
            )


class LabelsOutOfRange(PreflightRule):
    """
    ## What it detects
    Class labels outside 0..C-1 for C classes (0..1 for a binary task),
    other than the loss function's ``ignore_index``.

    ## Why it matters
    Cross-entropy indexes the model's output with the label: a label of C
    raises on the CPU and triggers a device-side assert on a GPU, which
    leaves the CUDA context unusable. Labels that merely fit (C declared too
    large) train silently with a dead class.

    ## How it decides
    Fires when any label of the batch is negative, above C-1, or not a whole
    number, where C is ``num_classes`` from the metadata. The experiments that
    run the model are then skipped.

    ## What to do
    Shift 1-based labels down by one; set ``num_classes`` (and the last
    layer's width) to the largest label plus one; mark padding or unknown
    labels (-1, 255) with the loss's ``ignore_index``.
    """

    code = "PRE002"
    name = "labels-out-of-range"
    title = "Labels outside the class range"
    severity = Severity.ERROR
    experiment = "labels"
    requires = ("preflight.labels",)
    priority = 6

    def judge(self, run: Run, record: Mapping[str, Any], t: Mapping[str, float]) -> Iterator[Finding]:
        outside = int(number(record, "outside"))
        if not outside:
            return
        low, high = int(number(record, "low")), int(number(record, "high"))
        examples = ", ".join(f"{v:g}" for v in record.get("examples", []))
        yield self.finding(
            run,
            message=(
                f"{outside} of {int(number(record, 'count'))} labels lie outside {low}..{high} "
                f"(smallest {number(record, 'min'):g}, largest {number(record, 'max'):g}; e.g. {examples}) "
                f"for {int(number(record, 'classes'))} classes"
            ),
            evidence=measured(record),
            causes=[
                "labels start at 1 instead of 0",
                "num_classes (and the last layer) is one too small",
                "a padding or 'unknown' label (-1, 255) that the loss does not ignore",
            ],
            fixes=[
                "subtract 1 from 1-based labels",
                "set num_classes to the largest label + 1",
                "pass ignore_index=<that label> to the loss",
            ],
        )


class NonFiniteInputs(PreflightRule):
    """
    ## What it detects
    NaN or infinite values in the inputs of the batch.

    ## Why it matters
    One NaN input makes its sample's loss NaN, and the mean loss and every
    gradient with it: the first step ruins the weights.

    ## How it decides
    Fires when any element of the (first) input tensor is not finite.

    ## What to do
    Find where the data pipeline makes them: missing values in a table,
    a division by a zero standard deviation when normalising, a log of
    zero. Fill or drop them before training.
    """

    code = "PRE003"
    name = "nonfinite-inputs"
    title = "NaN or Inf in the inputs"
    severity = Severity.ERROR
    experiment = "inputs"
    requires = ("preflight.inputs",)
    priority = 6

    def judge(self, run: Run, record: Mapping[str, Any], t: Mapping[str, float]) -> Iterator[Finding]:
        bad = int(number(record, "nonfinite"))
        if bad:
            yield self.finding(
                run,
                message=f"{bad} of {int(number(record, 'elements'))} input values are NaN or infinite",
                evidence=measured(record),
                causes=[
                    "missing values in the source data",
                    "normalising by a zero standard deviation",
                    "log or division of zero in feature engineering",
                ],
                fixes=[
                    "fill or drop missing values before batching",
                    "guard the normalisation: (x - mean) / (std + 1e-8)",
                    "assert torch.isfinite(x).all() in the dataset's __getitem__ to find the sample",
                ],
            )


class InputsNotNormalised(PreflightRule):
    """
    ## What it detects
    Inputs whose overall mean is far from 0 or whose standard deviation is
    far from 1 (raw pixel values 0..255, unscaled physical units).

    ## Why it matters
    Networks are initialised for inputs of roughly zero mean and unit
    variance; far off that, the first layers start saturated or with tiny
    signals and the effective learning rate differs per feature.

    ## How it decides
    The mean and standard deviation over every finite element of the input
    tensor: a note when |mean| exceeds ``max_abs_mean`` or the standard
    deviation lies outside ``min_std``..``max_std``.

    ## What to do
    Standardise the inputs with statistics from the training set
    (``transforms.Normalize(mean, std)`` for images, a scaler for tables).
    Ignore this note when the scale is deliberate.
    """

    code = "PRE004"
    name = "inputs-not-normalised"
    title = "Inputs not normalised"
    severity = Severity.INFO
    experiment = "inputs"
    requires = ("preflight.inputs",)
    thresholds = (
        Threshold(
            "max_abs_mean",
            1.0,
            "largest |mean| of the inputs that passes",
            source="LeCun et al., 'Efficient BackProp' (1998), section 4.3: inputs should average near "
            "zero; one standard deviation off is a generous bound",
        ),
        Threshold(
            "min_std",
            0.2,
            "smallest standard deviation that passes",
            source="same source (unit variance); images scaled to 0..1 have a std of about 0.25 and pass",
        ),
        Threshold(
            "max_std",
            5.0,
            "largest standard deviation that passes",
            source="same source; raw 0..255 pixels (std ~60) fail, standardised data (~1) passes",
        ),
    )

    def judge(self, run: Run, record: Mapping[str, Any], t: Mapping[str, float]) -> Iterator[Finding]:
        mean, std = number(record, "mean"), number(record, "std")
        if not (math.isfinite(mean) and math.isfinite(std)):
            return
        if abs(mean) <= t["max_abs_mean"] and t["min_std"] <= std <= t["max_std"]:
            return
        yield self.finding(
            run,
            message=f"inputs have mean {mean:.3g} and standard deviation {std:.3g}, far from 0 and 1",
            evidence={"mean": mean, "std": std, "shape": record.get("shape")},
            causes=["raw values fed in (pixels 0..255, unscaled units)", "normalisation applied twice or not at all"],
            fixes=["standardise with the training set's mean and std", "check the transform pipeline runs once"],
        )


class InitialLossOffChance(PreflightRule):
    """
    ## What it detects
    An untrained classifier whose loss on the batch is well above ln C, the
    cross-entropy of a model that spreads its probability evenly over C
    classes (the entropy of the class prior when one is given).

    ## Why it matters
    A fresh classifier should be uncertain. A higher loss means its last
    layer is confidently wrong from the start: the first steps are spent
    undoing the initialisation, with large gradients that can damage the
    other layers.

    ## How it decides
    The loss of a copy of the model on the batch, before any step, divided
    by the expected value; fires above ``max_ratio`` or when the loss is not
    finite. Needs ``num_classes`` (or ``class_prior``, or ``task: binary``).

    ## What to do
    Initialise the last layer's weights small (zeros or std 0.01) and its
    bias to the log of the class prior; look for anything scaling the
    logits (a temperature, a missing normalisation).
    """

    code = "PRE005"
    name = "initial-loss-off-chance"
    title = "Initial loss far above chance level"
    severity = Severity.WARNING
    experiment = "initial_loss"
    requires = ("preflight.initial_loss",)
    priority = 20
    thresholds = (
        Threshold(
            "max_ratio",
            1.5,
            "initial loss over the expected chance-level loss above which the init is off",
            source=f"{KARPATHY}: 'verify loss @ init' (-ln(1/C) for a softmax over C classes); PyTorch's "
            "default Linear init lands within ~1.3x of it",
        ),
    )

    def judge(self, run: Run, record: Mapping[str, Any], t: Mapping[str, float]) -> Iterator[Finding]:
        loss, expected = number(record, "loss"), number(record, "expected")
        if math.isfinite(loss) and loss <= t["max_ratio"] * expected:
            return
        yield self.finding(
            run,
            message=(
                f"initial loss {loss:.3g} against {expected:.3g} expected ({record.get('meaning')}): "
                "the last layer's scale is off; initialise its weights smaller and its bias to the log "
                "of the class prior"
            ),
            evidence={"loss": loss, "expected": expected, "ratio": loss / expected},
            causes=[
                "the last layer's weights or bias are initialised too large",
                "the logits are scaled up (temperature, missing normalisation)",
            ],
            fixes=[
                "nn.init.normal_(last.weight, std=0.01) or zeros for the last layer",
                "set the last layer's bias to log(class prior)",
                "look for anything multiplying the logits before the loss",
            ],
        )


class ParametersWithoutGradient(PreflightRule):
    """
    ## What it detects
    Trainable parameters (``requires_grad=True``) that get no gradient from
    one backward pass: they are not on the path from the inputs to the loss.

    ## Why it matters
    They never train. Usually a branch whose output is ``detach()``-ed or
    computed under ``no_grad``, a module that is built but never called, or
    a forward pass that returns an earlier tensor than intended. All-zero
    gradients (a note) can also come from dead ReLUs or unused embedding
    rows.

    ## How it decides
    After one forward and backward on a copy, an error when any trainable
    parameter's ``.grad`` is still None; a warning when gradients exist but
    are exactly zero.

    ## What to do
    Follow the named parameters' module through ``forward``: remove the
    ``detach()``/``no_grad``, call the unused module or delete it, or freeze
    it on purpose with ``requires_grad_(False)``.
    """

    code = "PRE006"
    name = "parameters-without-gradient"
    title = "Parameters receive no gradient"
    severity = Severity.ERROR
    experiment = "gradients"
    requires = ("preflight.gradients",)
    priority = 10

    def judge(self, run: Run, record: Mapping[str, Any], t: Mapping[str, float]) -> Iterator[Finding]:
        missing, zero = list(record.get("no_grad") or []), list(record.get("zero_grad") or [])
        if not (missing or zero):
            return
        trainable = int(number(record, "trainable"))
        text = (
            f"{len(missing)} of {trainable} trainable parameters get no gradient: {listing(missing, most=5)}"
            if missing
            else f"{len(zero)} of {trainable} trainable parameters get an all-zero gradient: {listing(zero, most=5)}"
        )
        yield self.finding(
            run,
            message=text + (f"; {len(zero)} more get an all-zero one" if missing and zero else ""),
            module=(missing or zero)[0].rsplit(".", 1)[0],
            evidence={"no_grad": missing, "zero_grad": zero, "trainable": trainable},
            severity=None if missing else Severity.WARNING,
            causes=[
                "a branch's output is detached (.detach(), .item(), .numpy(), torch.no_grad())",
                "a module is created but never called in forward",
                "dead ReLUs or unused embedding rows (all-zero gradients)",
            ],
            fixes=[
                "remove the detach() / no_grad() on that branch",
                "call the module in forward, or delete it",
                "freeze it on purpose with requires_grad_(False) if it should not train",
            ],
        )


class SamplesMixedInBatch(PreflightRule):
    """
    ## What it detects
    The output for one sample depends on other samples of the batch.

    ## Why it matters
    Samples are meant to be independent. A ``view``/``reshape`` used where
    ``transpose``/``permute`` was meant (batch and time or channel
    dimensions swapped) silently mixes samples: the model trains on
    scrambled data, learns slowly, and behaves differently at another batch
    size.

    ## How it decides
    Karpathy's "use backprop to chart dependencies": on a copy in eval mode
    (so that BatchNorm, which mixes a batch on purpose in training mode,
    does not), the sum of one sample's outputs is backpropagated to the
    inputs. Fires when another sample's input gets a gradient larger than
    ``max_leak`` times the sample's own.

    ## What to do
    Look at every ``view``/``reshape`` in forward: swapping the batch
    dimension with another needs ``transpose``/``permute``. Check that
    pooling, softmax and normalisation reduce over the intended dimension,
    not dimension 0.
    """

    code = "PRE007"
    name = "samples-mixed-in-batch"
    title = "Samples mix across the batch"
    severity = Severity.ERROR
    experiment = "mixing"
    requires = ("preflight.mixing",)
    priority = 10
    thresholds = (
        Threshold(
            "max_leak",
            1e-6,
            "largest gradient on other samples' inputs, relative to the sample's own",
            source=f"{KARPATHY}, 'use backprop to chart dependencies': without a path between samples the "
            "gradient is exactly zero; the tolerance only absorbs floating-point residue",
        ),
    )

    def judge(self, run: Run, record: Mapping[str, Any], t: Mapping[str, float]) -> Iterator[Finding]:
        own, other = number(record, "own_grad"), number(record, "other_grad")
        if not other > t["max_leak"] * own:
            return
        sample, batch = int(number(record, "sample")), int(number(record, "batch"))
        yield self.finding(
            run,
            message=(
                f"the output for sample {sample} depends on {int(number(record, 'leaking_samples'))} other "
                f"samples of the batch of {batch} (largest input gradient {other:.3g} against {own:.3g} "
                "on its own input; model in eval mode)"
            ),
            evidence=measured(record),
            causes=[
                "view()/reshape() where transpose()/permute() was meant (batch dimension swapped)",
                "a reduction (mean, softmax, norm) over dimension 0",
                "a custom layer that normalises across the batch",
            ],
            fixes=[
                "replace x.view(T, B, ...) of a (B, T, ...) tensor with x.transpose(0, 1)",
                "check the dim= of every mean, sum, softmax and norm in forward",
            ],
        )


class CannotOverfitOneBatch(PreflightRule):
    """
    ## What it detects
    A model that cannot drive the loss of a handful of examples down when
    trained on them alone.

    ## Why it matters
    Any working model with enough capacity memorises a few examples fast.
    When it cannot, training on the full data cannot work either: something
    is frozen or detached, the loss does not match the outputs, or the
    learning rate is far too low.

    ## How it decides
    A copy trains on the first samples of the batch (16 by default) for up
    to 200 steps with the user's optimizer settings (it stops early once the
    loss has fallen 100x, past any verdict here). Fires when the final loss
    has not fallen below the first loss divided by ``min_fall``.

    ## What to do
    Check what is frozen (``requires_grad``) and what the optimizer holds;
    try a learning rate 10x higher on this one batch; make sure the loss
    compares the right output with the right targets; then add capacity.
    """

    code = "PRE008"
    name = "cannot-overfit-one-batch"
    title = "Cannot overfit one small batch"
    severity = Severity.ERROR
    experiment = "overfit"
    requires = ("preflight.overfit",)
    priority = 15
    thresholds = (
        Threshold(
            "min_fall",
            10.0,
            "factor the loss on the small batch must fall by",
            source=f"{KARPATHY}: 'overfit one batch' to a loss near zero; from ln 10 = 2.3 this asks for "
            "0.23, which a working small network reaches within 200 steps at Adam's default 1e-3",
        ),
    )

    def judge(self, run: Run, record: Mapping[str, Any], t: Mapping[str, float]) -> Iterator[Finding]:
        first, last = number(record, "first"), number(record, "last")
        if math.isfinite(last) and last <= first / t["min_fall"]:
            return
        lr = number(record, "lr")
        blew_up = (
            "; it turned non-finite: the learning rate or the initial scale is too large"
            if not math.isfinite(last)
            else ""
        )
        yield self.finding(
            run,
            message=(
                f"trained alone on {int(number(record, 'samples'))} samples for {int(number(record, 'steps'))} "
                f"steps at lr {lr:.3g}, the loss went from {first:.4g} to {last:.4g} "
                f"(it must fall {t['min_fall']:g}x){blew_up}"
            ),
            evidence=measured(record),
            causes=[
                "layers frozen (requires_grad False) or left out of the optimizer",
                "the learning rate is far too low (or so high that the loss blows up)",
                "the loss compares the wrong output or targets",
                "too little capacity (rare for a few examples)",
            ],
            fixes=[
                "list [n for n, p in model.named_parameters() if not p.requires_grad] and unfreeze what should train",
                "try a 10x higher learning rate on this batch",
                "check loss_fn(output, targets) by hand",
                "make the model larger",
            ],
        )


class IgnoresInputs(PreflightRule):
    """
    ## What it detects
    A model that does no better with its real inputs than with inputs set
    to zero: it learns the labels' frequencies, not a function of the input.

    ## Why it matters
    A model that ignores its inputs cannot generalise. The usual causes are
    a forward pass that drops the input (a wrong variable, a detach, an
    overwritten tensor) or inputs that carry no signal.

    ## How it decides
    Karpathy's input-independent baseline: two copies train on the same
    small batch for the same steps, one with the real inputs and one with
    zeros. Fires when the zeroed copy's final loss is not at least
    ``min_gain`` times the real one's.

    ## What to do
    Print what reaches the first layer in forward; check that the inputs
    vary between samples and match their labels.
    """

    code = "PRE009"
    name = "model-ignores-inputs"
    title = "No better than an input-independent baseline"
    severity = Severity.WARNING
    experiment = "baseline"
    requires = ("preflight.baseline",)
    priority = 18
    thresholds = (
        Threshold(
            "min_gain",
            2.0,
            "how many times lower the real-input loss must end than the zero-input loss",
            source=f"{KARPATHY}: 'input-independent baseline'; a model using its inputs memorises the "
            "batch while the zeroed copy can only learn its label frequencies, usually a gap of 10x+",
        ),
    )

    def judge(self, run: Run, record: Mapping[str, Any], t: Mapping[str, float]) -> Iterator[Finding]:
        real, zeroed = number(record, "real"), number(record, "zeroed")
        if math.isfinite(real) and zeroed >= t["min_gain"] * real:
            return
        yield self.finding(
            run,
            message=(
                f"after {int(number(record, 'steps'))} steps on one batch the loss is {real:.4g} with the real "
                f"inputs and {zeroed:.4g} with zeroed inputs: no better than an input-independent baseline"
            ),
            evidence=measured(record),
            causes=[
                "forward drops or overwrites the input",
                "the inputs carry no signal about the labels",
                "the model cannot learn at all (see cannot-overfit-one-batch)",
            ],
            fixes=["print the tensor that reaches the first layer", "check a few (input, label) pairs by eye"],
        )


@dataclass(frozen=True)
class LrSuggestion:
    """What a learning-rate range test says (Smith 2017; fastai lr_find)."""

    steepest: float | None  # where the smoothed loss falls fastest per decade of lr
    at_minimum: float  # where the smoothed loss is lowest
    turned_up: bool  # the loss rose again after its minimum, so the minimum is real
    diverged_at: float | None = None

    @property
    def min_over_10(self) -> float | None:
        return self.at_minimum / 10 if self.turned_up else None

    @property
    def suggested(self) -> tuple[float, str] | None:
        """The lower of the two suggestions that apply, with the rule that gave it."""
        options = [
            (v, rule)
            for v, rule in ((self.min_over_10, "minimum/10"), (self.steepest, "steepest descent"))
            if v is not None
        ]
        return min(options) if options else None


def suggest_lr(
    lrs: np.ndarray, smoothed: np.ndarray, diverged_at: float | None = None, skip_start: float = 0.1
) -> LrSuggestion | None:
    """Steepest descent of the smoothed loss (ignoring the first ``skip_start`` of the curve) and min/10."""
    ok = np.isfinite(smoothed) & np.isfinite(lrs) & (lrs > 0)
    lrs, smoothed = lrs[ok], smoothed[ok]
    if len(lrs) < 5:
        return None
    lowest = int(np.argmin(smoothed))
    start = int(len(lrs) * skip_start)
    window = slice(start, lowest + 1)
    steepest = None
    if lowest - start >= 2:
        slopes = np.gradient(smoothed[window], np.log10(lrs[window]))
        steepest = float(lrs[window][int(np.argmin(slopes))]) if slopes.min() < 0 else None
    turned_up = diverged_at is not None or lowest < len(lrs) - 1
    return LrSuggestion(steepest, float(lrs[lowest]), turned_up, diverged_at)


def _range_test(run: Run, record: Mapping[str, Any]) -> LrSuggestion | None:
    curve = run.steps.dropna(subset=["lr", "lr_test_smoothed"])
    diverged = number(record, "diverged_at_lr")
    return suggest_lr(
        curve["lr"].to_numpy(dtype="float64"),
        curve["lr_test_smoothed"].to_numpy(dtype="float64"),
        diverged if math.isfinite(diverged) else None,
    )


_LR_SOURCE = (
    "Smith, 'Cyclical Learning Rates for Training Neural Networks' (2017), section 3.3; fastai lr_find "
    "(suggestions 'steep' and 'minimum/10', early stop at 4x the best smoothed loss)"
)


def _lr_text(s: LrSuggestion) -> str:
    low = (
        f"smoothed loss lowest at lr {s.at_minimum:.2g} (minimum/10 = {s.min_over_10:.2g})"
        if s.turned_up
        else f"the loss was still falling at the end of the range (lr {s.at_minimum:.2g})"
    )
    steep = f"steepest descent at {s.steepest:.2g}" if s.steepest else "no clear steepest descent"
    end = f"; the loss blew up by {s.diverged_at:.2g}" if s.diverged_at else ""
    return f"{low}, {steep}{end}"


class LearningRateTooHigh(PreflightRule):
    """
    ## What it detects
    A learning rate above the one at which the loss bottoms out in a
    learning-rate range test: past that point the loss rises as the
    learning rate grows.

    ## Why it matters
    Training at such a rate oscillates or diverges, or wastes its first
    epochs; the range test costs a hundred steps and shows it in advance.

    ## How it decides
    The range test raises the learning rate of a copy exponentially from
    1e-7 to 10 over 100 steps and smooths the loss (exponential average,
    beta 0.98). Fires when the user's learning rate (first parameter group)
    exceeds ``max_over_minimum`` times the learning rate at the lowest
    smoothed loss.

    ## What to do
    Start from the suggestion of `learning-rate-suggestion`,
    or add a warm-up if a high peak rate is intended.
    """

    code = "PRE010"
    name = "learning-rate-too-high"
    title = "Learning rate past the range test's minimum"
    severity = Severity.WARNING
    experiment = "lr_range"
    requires = ("preflight.lr_range", "lr_test_smoothed")
    priority = 25
    thresholds = (
        Threshold(
            "max_over_minimum",
            1.0,
            "user lr over the lr at the lowest smoothed loss above which it is too high",
            source=_LR_SOURCE + ": the upper bound is where the loss stops falling",
        ),
    )

    def judge(self, run: Run, record: Mapping[str, Any], t: Mapping[str, float]) -> Iterator[Finding]:
        found, user = _range_test(run, record), number(record, "user_lr")
        if found is None or not user > t["max_over_minimum"] * found.at_minimum:
            return
        yield self.finding(
            run,
            message=f"learning rate {user:.3g} is past where the range test's loss stops falling: {_lr_text(found)}",
            evidence={
                "user_lr": user,
                "lr_at_minimum": found.at_minimum,
                "steepest": found.steepest,
                "diverged_at": found.diverged_at,
            },
            causes=["a learning rate copied from a setup with another optimizer, batch size or model"],
            fixes=[
                f"try lr {found.suggested[0]:.2g} ({found.suggested[1]})"
                if found.suggested
                else "lower the learning rate 10x",
                "add a warm-up if a high peak rate is intended",
            ],
        )


class LearningRateSuggestion(PreflightRule):
    """
    ## What it detects
    Not a problem: what the learning-rate range test suggests, next to the
    learning rate the optimizer is set to.

    ## Why it matters
    A good starting learning rate saves most of a tuning sweep.

    ## How it decides
    On the smoothed range-test curve: the learning rate at the lowest loss
    divided by 10 (fastai's "minimum/10"), and the learning rate where the
    loss falls fastest per decade (Smith's and fastai's "steepest"),
    ignoring the first tenth of the curve. With a single batch (no loader)
    the test measures how fast one batch is memorised, which tends to
    suggest high values.

    ## What to do
    The suggestion is the lower of the two (minimum/10 only when the loss
    turned up again within the range). Try it first.
    Re-run with a loader for a suggestion drawn from many batches.
    """

    code = "PRE011"
    name = "learning-rate-suggestion"
    title = "Learning rate from the range test"
    severity = Severity.INFO
    experiment = "lr_range"
    requires = ("preflight.lr_range", "lr_test_smoothed")
    priority = 90

    def judge(self, run: Run, record: Mapping[str, Any], t: Mapping[str, float]) -> Iterator[Finding]:
        found, user = _range_test(run, record), number(record, "user_lr")
        if found is None or found.suggested is None:
            return
        lr, rule = found.suggested
        one = " (one batch repeated)" if record.get("one_batch") else ""
        yield self.finding(
            run,
            message=f"suggested lr {lr:.2g} by the {rule} rule{one}; {_lr_text(found)}; "
            f"the optimizer is set to {user:.3g}",
            evidence={
                "suggested": lr,
                "rule": rule,
                "steepest": found.steepest,
                "lr_at_minimum": found.at_minimum,
                "turned_up": found.turned_up,
                "diverged_at": found.diverged_at,
                "user_lr": user,
            },
            fixes=[f"start at lr {lr:.2g}", "plot lr_test_loss against lr (log scale) to see the curve"],
        )
