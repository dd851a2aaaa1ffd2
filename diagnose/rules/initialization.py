"""Rules about where a classifier's loss starts and whether it ever leaves chance level."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from diagnose import curves
from diagnose.rules.base import Category, Finding, Rule, Severity, Threshold
from diagnose.run import Run

# Class counts whose chance level a loss can be recognised by when the run does
# not declare one: the small counts (2-10, where ln C and ln(C+1) are more than
# the 4% tolerance apart), CIFAR-100 and ImageNet-1k. Recognised only with
# evidence (see `chance_evidence`), never from the level alone.
_GUESSED_CLASS_COUNTS = (*range(2, 11), 100, 1000)
# Mean squared error of a constant 0.5 prediction on 0/1 targets.
_MSE_CHANCE = 0.25
_MSE_NAMES = ("mse", "l2", "mean_squared_error")
_ACCURACY_COLUMNS = ("val_accuracy", "accuracy")
# A loss "pinned" at a level: the median of its last half within 0.5% of it, and
# its points there 0.5% from it on average. A model that predicts a constant
# gives exactly that; a language model on a plateau near 1.386 scatters by
# several percent. The last half and a mean, not the last third and a median
# that the stall is judged on: a loss that reached the level only in its last
# third got there by learning (on the calibration half, a causal-LM fine-tune
# flat within its third epoch at 2.295, near ln 10, its second epoch 7% higher;
# the MSE pinned at 0.25 by a constant prediction sits there from a tenth of
# the run on).
_PINNED = 0.005
# Evaluations in a row at one validation accuracy that show a model predicting one class (CH003's min_evals).
_CONSTANT_EVALS = 5
# Accuracy this close to 1/C names C as the class count: random-label runs in the
# held-out checks score within 3 points of 1/C (CH002's max_accuracy_gain); a
# 3-class run on a plateau at 40% accuracy (the real-log corpus) is 6.4 points off.
_ACCURACY_AT_CHANCE = 0.05


@dataclass(frozen=True)
class ChanceLevel:
    """A loss value that means 'predicts nothing better than the label frequencies'."""

    value: float
    meaning: str
    classes: int | None
    declared: bool  # from the run's metadata, not guessed from the level


def declared_chance(run: Run) -> ChanceLevel | None:
    """The chance level the run's metadata implies (class prior, class count, MSE on 0/1), if any."""
    meta = run.metadata
    loss_fn = str(meta.get("loss_fn", "")).lower()
    prior = meta.get("class_prior")
    if isinstance(prior, (list, tuple)) and len(prior) >= 2:
        p = np.asarray(prior, dtype="float64")
        p = p[p > 0] / p.sum()
        return ChanceLevel(float(-(p * np.log(p)).sum()), "the entropy of the label prior", len(prior), True)
    classes = run.num_classes or (2 if run.task == "binary" else None)
    if any(name in loss_fn for name in _MSE_NAMES):
        return ChanceLevel(_MSE_CHANCE, "MSE of a constant 0.5 on 0/1 targets", classes, True) if classes == 2 else None
    if classes:
        return ChanceLevel(math.log(classes), f"ln {classes}, uniform guessing over {classes} classes", classes, True)
    return None


def candidate_chance_levels(run: Run) -> list[ChanceLevel]:
    """The declared level, or else the levels a loss could be recognised by (each needs evidence)."""
    declared = declared_chance(run)
    if declared is not None:
        return [declared]
    guessed = [
        ChanceLevel(math.log(c), f"ln {c}, uniform guessing over {c} classes", c, False) for c in _GUESSED_CLASS_COUNTS
    ]
    return guessed + [ChanceLevel(_MSE_CHANCE, "MSE of a constant 0.5 on 0/1 targets", 2, False)]


def chance_evidence(series: pd.Series, level: ChanceLevel, accuracy: float | None, tolerance: float) -> str | None:
    """Why ``level`` is this run's chance level, or None when nothing says so.

    The metadata declares it; or the accuracy sits within 5 points of 1/C; or
    the curve starts at the level (an untrained model predicts the label
    frequencies) and sits there at the end; or the curve is pinned at the level
    (a constant prediction). A loss that merely passes near 1.386 or 0.693 is
    none of these: a language model or a regression loss can sit there by chance.
    """
    if level.declared:
        return "declared in the run's metadata"
    if accuracy is not None and level.classes and abs(accuracy - 1 / level.classes) <= _ACCURACY_AT_CHANCE:
        return f"accuracy {accuracy:.3f} near 1/{level.classes}"
    if abs(curves.log_ratio(float(series.iloc[0]), level.value)) <= tolerance:
        return f"the loss started at it ({float(series.iloc[0]):.4g})"
    tail = curves.tail(series, 1 / 2, min_points=3)
    median = float(tail.median())
    scatter = float((tail - median).abs().mean()) / median if median > 0 else math.inf
    if abs(curves.log_ratio(median, level.value)) <= _PINNED and scatter <= _PINNED:
        return f"the loss is pinned at it (scatter {scatter:.2%})"
    return None


@dataclass(frozen=True)
class ChanceStall:
    level: ChanceLevel
    column: str
    onset: float
    tail_level: float
    accuracy: float | None
    evidence: str


def _accuracy_at_end(run: Run) -> float | None:
    for column in _ACCURACY_COLUMNS:
        if run.has(column):
            values = curves.finite(run.series(column))
            if len(values):
                return curves.end_level(values, 0.3)
    return None


def _sits_at(series: pd.Series, level: float, tolerance: float) -> float | None:
    """Onset step when the last third of the curve sits flat within ``tolerance`` (log units) of ``level``."""
    tail = curves.tail(series, 1 / 3, min_points=3)
    distance = abs(curves.log_ratio(float(tail.median()), level))
    if not distance <= tolerance:
        return None
    fit = curves.trend(tail)
    if (
        fit is not None
        and abs(curves.log_ratio(fit.intercept + fit.slope * tail.index[-1], fit.intercept + fit.slope * tail.index[0]))
        > tolerance
    ):
        return None  # still moving through the level, not sitting at it
    smoothed = curves.smooth(series)
    away = np.abs(np.log(np.maximum(smoothed.to_numpy(), 1e-12) / level)) > tolerance
    if away.any() and not away[-1]:
        return float(series.index[int(np.flatnonzero(away)[-1]) + 1])
    return float(series.index[0])


def _constant_prediction_accuracy(run: Run) -> float | None:
    """The validation accuracy of a model that began by predicting one class: the same value, to every
    digit logged, at its first `_CONSTANT_EVALS` evaluations or more (CH003's reading), which is the
    share of that class; None otherwise, or for a value from which the model is right on nearly every
    example (CH003's ``max_accuracy``)."""
    if not run.has("val_accuracy"):
        return None
    values = curves.finite(run.series("val_accuracy")).to_numpy()
    if len(values) < _CONSTANT_EVALS or not (values[:_CONSTANT_EVALS] == values[0]).all():
        return None
    share = _as_fraction(float(values[0]))
    return share if share < 0.99 else None


def find_chance_stall(run: Run, t: Mapping[str, float]) -> ChanceStall | None:
    """The loss (or validation loss) sitting flat at a chance level at the end of the run."""
    accuracy = _accuracy_at_end(run)
    constant = _constant_prediction_accuracy(run)
    for column in ("loss", "val_loss"):
        series = curves.before_nonfinite(run.series(column, keep_nan=True))
        if len(series) < t["min_points"] or not curves.is_positive(series):
            continue
        for level in candidate_chance_levels(run):
            chance_accuracy = max(1 / level.classes, constant or 0.0) if level.classes else 0.0
            if accuracy is not None and level.classes and _as_fraction(accuracy) > chance_accuracy + 0.1:
                continue  # the model predicts better than chance, whatever its loss looks like
            evidence = chance_evidence(series, level, accuracy, t["tolerance"])
            onset = _sits_at(series, level.value, t["tolerance"]) if evidence else None
            if onset is not None:
                return ChanceStall(level, column, onset, curves.end_level(series, 1 / 3), accuracy, evidence)
    return None


class ChancePlateau(Rule):
    """
    ## What it detects
    The loss sits at the value of a model that has learnt nothing about its
    inputs: ln 2 for a binary classifier, ln C for C classes, the entropy of
    the label prior for unbalanced classes, 0.25 for mean squared error on 0/1
    targets. The class count comes from the run's metadata (``num_classes``,
    ``class_prior``, ``loss_fn``); without it a level (ln 2 to ln 10, ln 100,
    ln 1000, MSE 0.25) is claimed only with evidence: an accuracy within 5
    points of 1/C, a curve that started at the level, or a curve pinned at it
    over the last half of the run (within 0.5%, its points 0.5% from it on
    average: a constant prediction). A
    language-model or regression loss that merely sits near 1.386 is a
    plateau (PLT001), not 4-class chance.

    ## Why it matters
    At chance level the model predicts the label frequencies whatever the
    input. Training longer does not help: something cuts the link between
    inputs and labels or stops the gradient.

    ## How it decides
    The median of the last third of the loss (or of the validation loss)
    lies within ``tolerance`` of a chance level the evidence supports, and
    a robust line through that third moves less than the same tolerance. An
    accuracy more than 10 points above what a constant prediction scores
    rules it out: 1/C, or on unbalanced classes the share of one class,
    read where the validation accuracy is the same value at the first 5
    evaluations (a model that began by predicting that class; CH003's
    reading). The onset is where the smoothed loss entered the band for good.

    ## What to do
    First check the data: that labels match their inputs after shuffling and
    augmentation, and that inputs are not constant (all zeros, wrong
    normalisation). Then check that the gradient reaches the model (no
    ``detach``, no frozen parameters, optimizer built over the right
    parameters, ``zero_grad`` and ``step`` called). Then try a learning rate
    3-10x higher, and overfit one small batch to prove the model can learn.
    """

    code = "CH001"
    live = True
    live_after = 100
    assumes_falling_loss = True
    name = "chance-level-plateau"
    title = "Loss stuck at chance level"
    category = Category.INITIALIZATION
    severity = Severity.ERROR
    requires = ("loss",)
    priority = 10
    # A plateau at chance is this rule's case, with the cause-specific advice; the generic stall (or a short
    # run's "learned nothing") adds nothing.
    supersedes = ("PLT001", "PLT002")
    thresholds = (
        Threshold(
            "tolerance",
            0.04,
            "log distance from the declared chance level that counts as 'at chance' (0.04 = 4%)",
            source="the labelled stuck_at_chance runs in the real-log corpus sit within 0.1-3.7% of "
            "ln C; the healthy runs that pass through ln 2 or ln 10 leave it by more than 8%",
        ),
        Threshold(
            "min_points",
            5,
            "fewest finite points of a curve judged",
            source="a third of the curve must hold at least two points to be called flat",
        ),
    )

    def check(self, run: Run, t: Mapping[str, float]) -> Iterator[Finding]:
        stall = find_chance_stall(run, t)
        if stall is None:
            return
        curve = "training loss" if stall.column == "loss" else "validation loss"
        accuracy = f"; accuracy {stall.accuracy:.3f}" if stall.accuracy is not None else ""
        yield self.finding(
            run,
            message=(
                f"{curve} sits at {stall.tail_level:.4g} from step {stall.onset:.0f} to the end: "
                f"chance level {stall.level.value:.4g} ({stall.level.meaning}; evidence: {stall.evidence})"
                f"{accuracy}"
            ),
            onset=stall.onset,
            evidence={
                "column": stall.column,
                "level": stall.tail_level,
                "chance_level": stall.level.value,
                "classes": stall.level.classes,
                "declared": stall.level.declared,
                "accuracy": stall.accuracy,
                "why_this_level": stall.evidence,
            },
            confidence=1.0 if stall.level.declared else 0.8,
            causes=[
                "labels do not match inputs (shuffled separately, wrong column, broken augmentation)",
                "inputs carry no signal (constant, all zeros, not normalised)",
                "no gradient reaches the weights (detach, frozen parameters, optimizer over other parameters)",
                "learning rate far too low, or so high that the output layer saturated",
            ],
            fixes=[
                "check a few (input, label) pairs by eye after the data pipeline",
                "check that every trainable parameter has a non-zero .grad after backward()",
                "overfit a single batch of 8-32 examples: the loss must fall well below chance",
                "try a learning rate 3-10x higher",
            ],
        )


class ValidationNeverBeatsChance(Rule):
    """
    ## What it detects
    The training loss falls far below chance level while the validation loss
    never gets below it: the model fits the training set and learns nothing
    that holds on new data.

    ## Why it matters
    This is not ordinary overfitting, where the validation loss first falls
    and then turns up. Here nothing learnt ever carried over: the labels do
    not belong to their inputs (inputs and labels shuffled separately, a
    misaligned join, the wrong label column), or the validation data is
    processed differently from the training data. More epochs, regularisation
    or early stopping cannot fix it.

    ## How it decides
    Needs the validation accuracy: a validation loss above ln C alone can
    also mean a model that learnt but makes confident mistakes. Fires when,
    over at least ``min_evals`` evaluations, the best validation accuracy
    stays within ``max_accuracy_gain`` of 1/C and the lowest validation loss
    stays within ``tolerance`` of the chance level or above it, while the
    training loss ends below ``max_train_share`` of the chance level. The
    class count comes from the metadata, or else from the common counts whose
    1/C the validation accuracy sits at.

    ## What to do
    Print a few (input, label) pairs from the training and the validation
    loader and check them by hand; check that the validation set goes through
    the same preprocessing (normalisation statistics, tokenizer, resizing);
    check that shuffling moves inputs and labels together. Then run
    ``diagnose.preflight`` on one batch.
    """

    code = "CH002"
    assumes_falling_loss = True
    name = "validation-never-beats-chance"
    title = "Validation loss never gets below chance level"
    category = Category.INITIALIZATION
    severity = Severity.ERROR
    requires = ("loss", "val_loss", "val_accuracy")
    priority = 9
    explains = ("OVF001", "OVF002")
    thresholds = (
        Threshold(
            "tolerance",
            0.04,
            "log distance below chance level that the best validation loss must reach "
            "to count as having learnt something (0.04 = 4%)",
            source="the same band as CH001's: a validation loss within 4% of ln C is chance",
        ),
        Threshold(
            "max_train_share",
            0.7,
            "training loss at the end, as a fraction of chance level, below which "
            "the model clearly fits its training data",
            source="a fitted training set ends far below chance; 0.7 ln C keeps runs that learn "
            "nothing at all to CH001",
        ),
        Threshold(
            "max_accuracy_gain",
            0.05,
            "best validation accuracy above 1/C that still counts as chance",
            source="random-label runs in the held-out checks score within 3 points of 1/C on 512 "
            "validation examples; the overfitting sample run, which did learn, is 20 points above",
        ),
        Threshold("min_evals", 3, "fewest validation points judged", source="a best value needs a few evaluations"),
    )

    def check(self, run: Run, t: Mapping[str, float]) -> Iterator[Finding]:
        val = curves.finite(run.series("val_loss"))
        accuracy = curves.finite(run.series("val_accuracy"))
        train = curves.finite(run.series("loss"))
        if min(len(val), len(accuracy)) < t["min_evals"] or len(train) < 3:
            return
        best_accuracy = float(accuracy.max())
        levels = [
            c
            for c in candidate_chance_levels(run)
            if c.classes and (c.declared or abs(best_accuracy - 1 / c.classes) <= t["max_accuracy_gain"])
        ]
        if not levels or best_accuracy > 1 / levels[0].classes + t["max_accuracy_gain"]:
            return
        level = min(levels, key=lambda c: abs(best_accuracy - 1 / c.classes))  # the count the accuracy points at
        best, train_end = float(val.min()), curves.end_level(train, 0.2)
        if best < level.value * math.exp(-t["tolerance"]) or train_end > t["max_train_share"] * level.value:
            return
        yield self.finding(
            run,
            message=(
                f"validation loss never got below chance level {level.value:.4g} ({level.meaning}): best "
                f"{best:.4g} at step {val.idxmin():.0f}, validation accuracy at most {accuracy.max():.3f} "
                f"(1/C = {1 / level.classes:.3f}), while the training loss fell to {train_end:.4g}"
            ),
            onset=float(val.index[0]),
            end=float(val.index[-1]),
            evidence={
                "best_val_loss": best,
                "best_val_step": float(val.idxmin()),
                "chance_level": level.value,
                "best_val_accuracy": float(accuracy.max()),
                "train_end": train_end,
                "classes": level.classes,
                "declared": level.declared,
            },
            confidence=1.0 if level.declared else 0.8,
            causes=[
                "labels do not belong to their inputs: shuffled separately, a misaligned join, the wrong label column",
                "the validation data is processed differently (normalisation, tokenizer, resizing)",
                "the labels cannot be predicted from the inputs at all (random or leaked-then-removed targets)",
            ],
            fixes=[
                "print a few (input, label) pairs from both loaders and check them by hand",
                "make the validation pipeline the training pipeline minus augmentation",
                "check that any shuffle moves inputs and labels together",
                "run diagnose.preflight on one batch (it checks labels, inputs and that the model can learn)",
            ],
        )


class ValidationAccuracyNeverChanges(Rule):
    """
    ## What it detects
    The validation accuracy is exactly the same number at every evaluation
    while the model trains: whatever the weights learn, the predictions on
    the validation set never change. Typically the model predicts one class
    for every input, and the accuracy is that class's share of the
    validation set.

    ## Why it matters
    A classifier that outputs the majority class scores the class prior:
    on unbalanced data that can look like a reasonable 67% while the model
    has learnt nothing about its inputs. The validation loss then sits near
    the entropy of the label prior, not near ln C, so a chance check by
    class count does not see it.

    ## How it decides
    Needs at least ``min_evals`` finite validation accuracies. Fires when all
    of them are equal, to every digit logged, and below ``max_accuracy`` (a
    model that is right on every validation example from the first
    evaluation on is not stuck), and neither the loss nor a validation
    metric was ever NaN/Inf (a model that outputs NaN predicts one class
    too: NF001/NF002's case). An accuracy computed on a fixed set changes
    by at least one example between evaluations of a model whose
    predictions move.

    ## What to do
    Check the class balance of the training data and what the model
    predicts on a few validation inputs (``argmax`` over a batch): if it is
    one class, weight the loss by inverse class frequency or resample the
    training set, raise the learning rate or check that the gradient reaches
    the output layer; check that the validation labels are the right column.
    """

    code = "CH003"
    assumes_falling_loss = True
    name = "validation-accuracy-constant"
    title = "Validation accuracy never changes: the model predicts the same classes for every input"
    category = Category.INITIALIZATION
    severity = Severity.WARNING
    requires = ("val_accuracy",)
    priority = 11
    thresholds = (
        Threshold(
            "min_evals",
            5,
            "fewest evaluations judged",
            source="on the calibration half of the real-log corpus no healthy run logs one validation "
            "accuracy at every evaluation (the most repeated: 5 of 8, on a small validation set); the "
            "stuck and plateau runs that do log it at every one of 8-31 evaluations",
        ),
        Threshold(
            "max_accuracy",
            0.99,
            "accuracy at or above which a constant value is a task solved from the start, not a stuck model",
            source="a validation set of 100 examples or fewer shows 1.0 once every example is right",
        ),
    )

    def check(self, run: Run, t: Mapping[str, float]) -> Iterator[Finding]:
        accuracy = curves.finite(run.series("val_accuracy"))
        if len(accuracy) < t["min_evals"] or accuracy.nunique() != 1 or _went_nonfinite(run):
            return
        value = float(accuracy.iloc[0])
        if _as_fraction(value) >= t["max_accuracy"]:
            return
        yield self.finding(
            run,
            message=(
                f"validation accuracy is {value:.6g} at every one of {len(accuracy)} evaluations (steps "
                f"{accuracy.index[0]:.0f}-{accuracy.index[-1]:.0f}): the predictions on the validation set "
                "never change, as when the model outputs one class for every input"
            ),
            onset=float(accuracy.index[0]),
            end=float(accuracy.index[-1]),
            evidence={"val_accuracy": value, "evaluations": len(accuracy)},
            causes=[
                "the model predicts the majority class for every input (unbalanced classes, a collapsed output layer)",
                "no gradient reaches the output layer, or the learning rate is far too low",
                "the validation labels or inputs are constant (wrong column, an empty transform)",
            ],
            fixes=[
                "look at argmax of the model's output on one validation batch",
                "weight the loss by inverse class frequency, or resample the training set",
                "check that the output layer's parameters change between evaluations",
            ],
        )


def _went_nonfinite(run: Run) -> bool:
    """A NaN/Inf in the loss or a validation metric: a model that outputs NaN predicts the same class
    for every input, and NF001/NF002 tell that story."""
    return any(column == "loss" or column.startswith("val_") for column in run.nan_steps)


def _as_fraction(accuracy: float) -> float:
    """An accuracy logged in percent (0-100) as a fraction."""
    return accuracy / 100 if 1.5 < accuracy <= 100 else accuracy


class BadInitialLoss(Rule):
    """
    ## What it detects
    A classifier whose first logged loss is far above ln C, the loss of a
    model that spreads its probability evenly over C classes.

    ## Why it matters
    A freshly initialised classifier should be uncertain; a first loss
    several times ln C means its last layer is confidently wrong from the
    start (weights scaled up, a bias set badly, logits multiplied somewhere).
    The first part of training is then spent undoing the initialisation, and
    large early gradients can knock other layers into bad regions.

    ## How it decides
    Needs the class count (``num_classes``, ``class_prior`` or
    ``task: binary`` in the metadata) and a log that starts at the start of
    training. Fires when the first finite loss is more than ``max_ratio``
    times the expected chance-level loss.

    ## What to do
    Initialise the last layer small: zero or ``std=0.01`` weights, and the
    bias to log(class prior) for unbalanced classes. Check that nothing
    scales the logits (a temperature of 0.01, a missing normalisation).
    """

    code = "INIT001"
    assumes_falling_loss = True
    name = "bad-initial-loss"
    title = "Initial loss far above chance level"
    category = Category.INITIALIZATION
    severity = Severity.WARNING
    requires = ("loss",)
    priority = 15
    thresholds = (
        Threshold(
            "max_ratio",
            2.0,
            "first loss over the expected ln C above which the initialisation is bad",
            source="PyTorch's default Linear init gives logits of std ~0.6, so the first loss is within "
            "~1.3x ln C; Karpathy, 'A Recipe for Training Neural Networks' (2019): 'verify loss @ init'",
        ),
    )

    def check(self, run: Run, t: Mapping[str, float]) -> Iterator[Finding]:
        expected = declared_chance(run)
        loss = curves.before_nonfinite(run.series("loss", keep_nan=True))
        if expected is None or len(loss) < 2 or curves.starts_midway(loss, 0.05):
            return
        first = float(loss.iloc[0])
        ratio = first / expected.value
        if ratio <= t["max_ratio"]:
            return
        yield self.finding(
            run,
            message=(
                f"first loss {first:.4g} at step {loss.index[0]:.0f} is {ratio:.1f}x the {expected.value:.4g} "
                f"of an untrained classifier ({expected.meaning})"
            ),
            onset=loss.index[0],
            evidence={"first_loss": first, "expected": expected.value, "ratio": ratio},
            causes=[
                "the last layer's weights or bias are initialised too large",
                "the logits are scaled up (temperature, missing normalisation)",
            ],
            fixes=[
                "initialise the last layer with zeros or std=0.01 (nn.init.normal_(layer.weight, std=0.01))",
                "set the last bias to log(class prior) for unbalanced classes",
                "look for anything multiplying the logits before the loss",
            ],
        )


@dataclass(frozen=True)
class ChanceStretch:
    level: ChanceLevel
    first: int  # position of the first point of the stretch
    stop: int  # position just after its last point
    evidence: str


def _first_stretch(logged: np.ndarray, level: float, tolerance: float) -> tuple[int, int] | None:
    """(first, stop) positions of the first run of points of a log curve within ``tolerance`` of
    ``level``'s log."""
    inside = np.abs(logged - np.log(level)) <= tolerance
    if not inside.any():
        return None
    first = int(np.argmax(inside))
    # The first point outside after it, by argmin (the first False): listing every point outside
    # took an array of most of the curve's positions (8 MB on a million points) for its first one.
    rest = inside[first:]
    return first, len(inside) if rest.all() else first + int(np.argmin(rest))


def _accuracy_between(run: Run, start: float, stop: float) -> float | None:
    """The median accuracy (training, else validation) logged between two steps, as a fraction."""
    for column in ("accuracy", "val_accuracy"):
        if run.has(column):
            values = curves.finite(run.series(column))
            values = values[(values.index >= start) & (values.index <= stop)]
            if len(values):
                return _as_fraction(float(values.median()))
    return None


def _stretch_evidence(run: Run, loss: pd.Series, level: ChanceLevel, stretch: tuple[int, int], tol: float) -> str:
    """Why the stretch's level is chance: declared, the run's first loss at it, or an accuracy at 1/C meanwhile."""
    if level.declared:
        return "declared in the run's metadata"
    if abs(curves.log_ratio(float(loss.iloc[0]), level.value)) <= tol:
        return f"the loss started at it ({float(loss.iloc[0]):.4g})"
    accuracy = _accuracy_between(run, float(loss.index[stretch[0]]), float(loss.index[stretch[1] - 1]))
    if accuracy is not None and level.classes and abs(accuracy - 1 / level.classes) <= _ACCURACY_AT_CHANCE:
        return f"accuracy {accuracy:.3f} near 1/{level.classes} meanwhile"
    return ""


def find_slow_start(run: Run, loss: pd.Series, t: Mapping[str, float]) -> ChanceStretch | None:
    """The first long stretch of the smoothed loss at a chance level, entered early and followed by a
    faster fall."""
    logged = np.log(np.maximum(curves.smooth(loss).to_numpy(), 1e-12))
    for level in candidate_chance_levels(run):
        stretch = _first_stretch(logged, level.value, t["tolerance"])
        if stretch is None or stretch[0] > t["max_entry"] * len(loss) or stretch[1] >= len(loss):
            continue
        length = stretch[1] - stretch[0]
        if length < t["min_points"] or length < t["min_share"] * len(loss):
            continue
        if _speedup(loss, stretch) < t["min_speedup"]:
            continue  # a loss falling steadily through chance, not one that sat there first
        evidence = _stretch_evidence(run, loss, level, stretch, t["tolerance"])
        if evidence:
            return ChanceStretch(level, *stretch, evidence)
    return None


def _speedup(loss: pd.Series, stretch: tuple[int, int]) -> float:
    """How many times faster the log loss falls per logged point after the stretch than during it
    (robust slopes); 0 when it does not fall after it."""
    logged = pd.Series(np.log(loss.to_numpy()), index=np.arange(len(loss), dtype="float64"))
    during, after = curves.trend(logged.iloc[stretch[0] : stretch[1]]), curves.trend(logged.iloc[stretch[1] :])
    if during is None or after is None or after.slope >= 0:
        return 0.0
    return -after.slope / max(-during.slope, 1e-12)


class SlowStartAtChance(Rule):
    """
    ## What it detects
    A training loss that sits at chance level (ln 2 for a binary
    classifier, ln C for C classes, as CH001 reads them) for a long stretch
    from the start of the run, and only then starts to fall well below it.
    The run learns in the end, but spent much of its budget predicting the
    label frequencies.

    ## Why it matters
    Each step at chance is a step the model did not learn from. A long
    wait before the first drop is the mark of a learning rate too low for
    the start (or a warm-up too long), of an initialisation whose signal
    vanishes through the layers (saturated tanh or sigmoid, weights too
    small), or of an optimizer that only slowly escapes a saddle around the
    constant prediction. The same model usually learns from the first epoch
    once that is fixed, and reaches a lower loss in the same budget.

    ## How it decides
    The smoothed loss enters a band of ``tolerance`` around a chance level
    within the first ``max_entry`` of the run and stays in it for at least
    ``min_points`` logged points and ``min_share`` of the run; it then
    leaves the band downwards, falls at least ``min_speedup`` times faster
    than it did inside the band (robust slopes of the log loss per logged
    point), and ends at least ``min_fall`` below the level. The level needs
    evidence, as CH001's does: declared in the metadata, the run's first
    loss at it, or an accuracy within 5 points of 1/C during the stretch. A
    loss that never leaves chance is CH001's.

    ## What to do
    Raise the learning rate 3-10x for the first epochs, or shorten the
    warm-up; check the initialisation (Kaiming for ReLU, Xavier for tanh,
    no saturated activations) and normalise the inputs; with Adam, try a
    learning-rate finder to pick the starting rate.
    """

    code = "CH004"
    assumes_falling_loss = True
    name = "slow-start-at-chance"
    title = "Loss sat at chance level for a long time before it started to fall"
    category = Category.INITIALIZATION
    severity = Severity.WARNING
    requires = ("loss",)
    priority = 12
    thresholds = (
        Threshold(
            "tolerance",
            0.04,
            "log distance from the chance level that counts as 'at chance' (0.04 = 4%)",
            source="CH001's tolerance: stuck runs sit within 3.7% of ln C, healthy runs passing through "
            "ln 2 or ln 10 leave it by more than 8%",
        ),
        Threshold(
            "min_share",
            1 / 3,
            "share of the run the loss must stay at chance",
            source="the calibration half's slow start stays 50% of its run; healthy calibration files whose "
            "smoothed loss stays at chance for 6 points or more stay at most 4%, and the recorded healthy "
            "CNN of the examples (4 classes) waits 28% of its run at ln 4 before its fall",
        ),
        Threshold(
            "min_points",
            6,
            "fewest logged points of the stay at chance",
            source="smoothing spreads one point over 5 (the default window on a short log): healthy runs of "
            "8-11 epochs pass through ln 7 in 4 smoothed points",
        ),
        Threshold(
            "max_entry",
            0.25,
            "latest share of the run at which the stay at chance may begin",
            source="a slow start begins at the start: the calibration slow start enters chance 7% into its "
            "run, falling from an over-confident first loss; a later stay at chance is a plateau (PLT001)",
        ),
        Threshold(
            "min_speedup",
            3.0,
            "how many times faster the loss must fall after the stay than during it",
            source="the calibration slow start falls 9.8x faster after its stay; losses that fall steadily "
            "through chance 0.8-1.2x: the recorded too-low learning rate and skipped-AMP-steps runs, and "
            "a calibration fine-tune labelled slow_start whose loss falls alike before and after (1.0x)",
        ),
        Threshold(
            "min_fall",
            0.1,
            "log distance below the chance level the loss must end (0.1 = 10%)",
            source="above CH001's 8% margin of healthy runs passing through chance; the calibration slow "
            "start ends 26% below ln 2",
        ),
    )

    def check(self, run: Run, t: Mapping[str, float]) -> Iterator[Finding]:
        loss = curves.before_nonfinite(run.series("loss", keep_nan=True))
        if len(loss) < 2 * t["min_points"] or not curves.is_positive(loss) or curves.starts_midway(loss):
            return
        stretch = find_slow_start(run, loss, t)
        if stretch is None:
            return
        end = curves.end_level(loss)
        if curves.log_ratio(end, stretch.level.value) > -t["min_fall"]:
            return
        since, until = float(loss.index[stretch.first]), float(loss.index[stretch.stop - 1])
        share = (stretch.stop - stretch.first) / len(loss)
        yield self.finding(
            run,
            message=(
                f"the training loss sat at chance level {stretch.level.value:.4g} ({stretch.level.meaning}; "
                f"evidence: {stretch.evidence}) from step {since:.0f} to {until:.0f}, {share:.0%} of the run, "
                f"before it started to fall; it ends at {end:.4g}"
            ),
            onset=since,
            end=until,
            evidence={
                "chance_level": stretch.level.value,
                "classes": stretch.level.classes,
                "share_at_chance": share,
                "points_at_chance": stretch.stop - stretch.first,
                "end_level": end,
                "why_this_level": stretch.evidence,
            },
            confidence=1.0 if stretch.level.declared else 0.8,
            causes=[
                "a learning rate too low for the first epochs, or a warm-up too long",
                "an initialisation whose signal vanishes through the layers (saturated tanh/sigmoid, tiny weights)",
                "inputs not normalised, so the first updates barely move the output",
            ],
            fixes=[
                "raise the learning rate 3-10x for the first epochs, or shorten the warm-up",
                "use Kaiming (ReLU) or Xavier (tanh) initialisation and normalise the inputs",
                "run a learning-rate finder and start from its suggestion",
            ],
        )
