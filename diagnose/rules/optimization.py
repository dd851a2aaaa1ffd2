"""Rules that read the shape of the training loss: learning rate, stalls, spikes, noise."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from diagnose import curves
from diagnose.rules.base import Category, Finding, Rule, Severity, Threshold
from diagnose.rules.helpers import constant_guess_loss, later_samples, layer_table, validation_loss
from diagnose.run import Run


def plain_loss(run: Run, min_points: float) -> pd.Series | None:
    """The finite training loss before any NaN, when it is an ordinary objective worth reading.

    None for fewer than ``min_points`` points, or for a loss that goes below
    zero: policy-gradient and adversarial losses are not meant to fall.
    """
    loss = curves.before_nonfinite(run.series("loss", keep_nan=True))
    if len(loss) < min_points or (loss < 0).any():
        return None
    return loss


# The best level of a curve is the lowest median of this many equal bins:
# each bin is 5% of the run, wide enough that its median is not a lucky dip.
_LEVEL_BINS = 20


@dataclass(frozen=True)
class Shape:
    """The landmarks of a loss curve that the learning-rate rules compare.

    ``level_noise`` is the standard error of one bin median on the log
    scale: differences between levels smaller than a few of it are noise.
    """

    first: float
    start: float
    end: float
    best: float
    best_step: float
    level_noise: float

    @classmethod
    def of(cls, loss: pd.Series) -> Shape:
        levels = curves.downsample(loss, _LEVEL_BINS) if len(loss) >= 2 * _LEVEL_BINS else curves.smooth(loss)
        best_at = int(np.argmin(levels.to_numpy()))
        # A bin's index is its centre, which need not be a logged step: name the nearest one.
        best_step = _nearest_step(loss.index.to_numpy(dtype="float64"), float(levels.index[best_at]))
        return cls(
            first=float(loss.iloc[0]),
            start=curves.start_level(loss),
            end=curves.end_level(loss),
            best=float(levels.iloc[best_at]),
            best_step=best_step,
            level_noise=_bin_median_noise(loss, len(levels)),
        )

    @property
    def given_back(self) -> float:
        """Share of the fall from start to best that the end has undone (0: kept it all)."""
        return (self.end - self.best) / max(self.start - self.best, 1e-12)

    @property
    def rise_from_start(self) -> float:
        """log(end / start): above zero when the run ends worse than it began."""
        return curves.log_ratio(self.end, self.start)

    @property
    def rise_from_best(self) -> float:
        """log(end / best smoothed level): how much of its progress the run gave back."""
        return curves.log_ratio(self.end, self.best)

    @property
    def early_drop(self) -> float:
        """log(start / best): how far the loss fell before its best point."""
        return curves.log_ratio(self.start, self.best)


def _nearest_step(logged: np.ndarray, step: float) -> float:
    """The logged step nearest ``step`` (the earlier of two as near), found by bisection: the
    steps of a finite curve rise (a pass over a million of them took longer than the rest of `Shape.of`)."""
    after = int(np.searchsorted(logged, step))
    if after == len(logged) or (after > 0 and step - logged[after - 1] <= logged[after] - step):
        return float(logged[after - 1])
    return float(logged[after])


def _bin_median_noise(loss: pd.Series, bins: int) -> float:
    """Standard error, on the log scale, of the median of one of ``bins`` equal bins of the curve."""
    noise = curves.noise(loss)
    if not np.isfinite(noise):
        return 0.0
    # The median of k points scatters ~1.25/sqrt(k) times as much as one point.
    return 1.25 * noise / np.sqrt(max(len(loss) / bins, 1.0))


def _early_blowup(loss: pd.Series) -> tuple[float, float]:
    """log(highest loss in the first fifth of the run / first loss), and the step of that peak."""
    early = loss[loss.index <= loss.index[0] + 0.2 * (loss.index[-1] - loss.index[0])]
    return curves.log_ratio(float(early.max()), float(loss.iloc[0])), float(early.idxmax())


def _tail_rising(loss: pd.Series, fraction: float = 0.3) -> bool:
    fit = curves.trend(curves.comparable(loss).iloc[-max(3, int(len(loss) * fraction)) :])
    return fit is not None and fit.rising


class LossDiverges(Rule):
    """
    ## What it detects
    The training loss ends clearly above where it started, climbs back far
    above the best level it had reached, or explodes in the first steps and
    never gets below its first value again, while staying finite.

    ## Why it matters
    Steps that make the loss worse on average mean the optimizer overshoots:
    the learning rate is too high for this model and batch size. Left alone
    such runs usually end in NaN; before that they waste all their compute.

    ## How it decides
    Levels are robust medians on a log scale: the start (first few points),
    the end (last 10%) and the best of 20 bin medians. It fires when the end
    is more than ``rise`` above the start; or more than ``rebound`` above the
    best level while the last 30% still trends upwards, giving back at least
    ``min_given_back`` of what the run had gained (so that a loss bouncing
    near zero after a long fall does not count); or when the loss in
    the first fifth of the run jumps more than ``blowup`` above the first
    loss and the run ends less than ``min_gain`` below that first loss (a
    network knocked dead by its first updates often sits at chance level
    afterwards: this is the cause). Losses that go below zero
    (policy-gradient, adversarial) are not judged.

    ## What to do
    Lower the learning rate 3-10x and restart from scratch (the current
    weights have been thrown far off); add a warm-up over the first 1-5% of
    steps; clip the gradient norm at 1.0.
    """

    code = "LR001"
    assumes_falling_loss = True
    name = "loss-diverges"
    title = "Loss rises: learning rate too high"
    category = Category.OPTIMIZATION
    severity = Severity.ERROR
    requires = ("loss",)
    live = True
    priority = 5
    thresholds = (
        Threshold(
            "rise",
            0.3,
            "log(end/start) above which the run ends worse than it began (0.3 = 1.35x)",
            source="no healthy run in the real-log corpus ends above 0.95x its start; the labelled "
            "diverging runs end 1.4x-6.3x above it",
        ),
        Threshold(
            "rebound",
            1.0,
            "log(end/best) above which a run that still rises has given its progress back (1.0 = 2.7x)",
            source="healthy runs in the real-log corpus end within 1.6x of their best smoothed level "
            "(per-step losses near zero included)",
        ),
        Threshold(
            "min_given_back",
            0.25,
            "share of the run's fall (start to best, in loss units) that a late rise must undo",
            source="a run memorising its training set bounces from 0.006 to 0.04 after falling from 1.6 "
            "(2% of its fall); the late divergences in sample_runs/ undo most of theirs",
        ),
        Threshold(
            "blowup",
            0.69,
            "log(early peak / first loss) that counts as an explosion (0.69 = 2x)",
            source="no healthy run in the real-log corpus peaks above 1.5x its first logged loss; the "
            "lr_too_high runs there jump 7x-12x, a held-out transformer at Adam 0.05 2.1x before "
            "it sat at chance",
        ),
        Threshold(
            "min_gain",
            0.1,
            "log(first / end) below which the run learnt nothing after exploding",
            source="a run that recovered and learnt ends well over 10% below its first loss",
        ),
        Threshold(
            "min_points",
            4,
            "fewest finite points judged",
            source="a start, an end of at least three points; the real 10-point divergence in "
            "the real-log corpus is unmistakable",
        ),
    )

    def check(self, run: Run, t: Mapping[str, float]) -> Iterator[Finding]:
        loss = plain_loss(run, t["min_points"])
        if loss is None:
            return
        shape = Shape.of(loss)
        from_start = shape.rise_from_start > t["rise"]
        late = shape.rise_from_best > t["rebound"] and shape.given_back >= t["min_given_back"] and _tail_rising(loss)
        blowup, peak_step = _early_blowup(loss)
        exploded = blowup > t["blowup"] and curves.log_ratio(shape.first, shape.end) < t["min_gain"]
        if not (from_start or late or exploded):
            return
        if exploded and not from_start:
            what = (
                f"loss jumped from {shape.first:.4g} to {loss.max():.4g} by step {peak_step:.0f} and never got "
                f"back below its first value (ends at {shape.end:.4g})"
            )
        elif from_start:
            what = (
                f"loss ends at {shape.end:.4g}, {np.exp(shape.rise_from_start):.3g}x where it started "
                f"({shape.start:.4g})"
            )
        else:
            what = (
                f"loss fell to {shape.best:.4g} at step {shape.best_step:.0f}, "
                f"then climbed back to {shape.end:.4g} "
                f"({np.exp(shape.rise_from_best):.3g}x) and is still rising"
            )
        lr = _lr_note(run)
        yield self.finding(
            run,
            message=what + lr,
            onset=loss.index[0] if exploded else shape.best_step,
            evidence={
                "start": shape.start,
                "end": shape.end,
                "lowest_level": shape.best,
                "lowest_level_step": shape.best_step,
                "end_over_start": float(np.exp(shape.rise_from_start)),
                "end_over_best": float(np.exp(shape.rise_from_best)),
            },
            causes=[
                "learning rate too high: updates overshoot",
                "no warm-up for an optimizer like Adam",
                "unclipped gradient bursts",
            ],
            fixes=[
                "lower the learning rate 3-10x and restart from scratch",
                "add a linear warm-up over the first 1-5% of steps",
                "clip gradients: torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)",
            ],
        )


def _lr_note(run: Run) -> str:
    if not run.has("lr"):
        return ""
    lr = curves.finite(run.series("lr"))
    return f" (learning rate up to {lr.max():.3g})" if len(lr) else ""


class LateLearningRateTooHigh(Rule):
    """
    ## What it detects
    The loss falls fast, reaches a good level, then settles on a noisy
    plateau clearly above that level for the rest of the run.

    ## Why it matters
    Early on a large learning rate makes quick progress; near a minimum the
    same step size bounces the weights around it, so the loss can no longer
    go down and even drifts back up. The run ends worse than its own best.

    ## How it decides
    On a log scale, with the best level the lowest of 20 bin medians: the run
    first fell more than ``min_drop`` to its best level, the best came before
    ``max_best_at`` of the run, and the last 10% sits more than ``rebound``
    above that best and more than three standard errors of a bin median (so
    per-step noise from tiny batches is not mistaken for it), undoing at
    least ``min_given_back`` of the fall (a loss bouncing near zero after a
    long fall is not it), but not so far that LR001 applies.

    ## What to do
    Decay the learning rate: a cosine or step schedule to ~1-10% of the peak
    over the run, or ReduceLROnPlateau with factor 0.1-0.5. Keep the
    checkpoint of the best step.
    """

    code = "LR002"
    assumes_falling_loss = True
    name = "lr-too-high-late"
    title = "Loss bounces above its best level: learning rate too high late in training"
    category = Category.OPTIMIZATION
    severity = Severity.WARNING
    requires = ("loss",)
    priority = 25
    supersedes = ("PLT001",)  # a loss that fell far and gave it back is a bounce; its flat stretch is no stall
    thresholds = (
        Threshold(
            "rebound",
            0.2,
            "log(end/best) above which the run gave back its progress (0.2 = 1.22x)",
            source="healthy runs in the real-log corpus end within 1.15x of their best smoothed level, "
            "except the per-step near-zero MNIST losses (0.2-0.5 log) that fail min_drop's noise test",
        ),
        Threshold(
            "min_drop",
            0.3,
            "log(start/best): the fast early drop that must come first (0.3 = 1.35x)",
            source="separates 'learnt, then bounced' from a curve that never fell (PLT001, CH001)",
        ),
        Threshold(
            "max_best_at",
            0.75,
            "latest fraction of the run at which the best level may lie",
            source="a best point in the last quarter is ordinary noise at the end of a converging run",
        ),
        Threshold(
            "min_given_back",
            0.05,
            "share of the fall (start to best, in loss units) the end must undo",
            source="the late-LR sample run undoes 38%, its real counterpart in the real-log corpus more; "
            "runs memorising their training set bounce near zero and undo 0.3%-0.4%",
        ),
        Threshold("min_points", 20, "fewest finite points judged", source="a smoothed curve needs ~20 points"),
    )

    def check(self, run: Run, t: Mapping[str, float]) -> Iterator[Finding]:
        loss = plain_loss(run, t["min_points"])
        if loss is None:
            return
        shape = Shape.of(loss)
        best_at = curves.fraction_of_run(loss, shape.best_step)
        if not (
            shape.early_drop > t["min_drop"]
            and best_at < t["max_best_at"]
            and shape.rise_from_best > t["rebound"]
            and shape.rise_from_best > 3 * shape.level_noise
            and shape.given_back >= t["min_given_back"]
        ):
            return
        if LossDiverges.threshold_defaults()["rise"] < shape.rise_from_start:
            return  # ends above its start: LR001's case
        yield self.finding(
            run,
            message=(
                f"loss fell from {shape.start:.4g} to {shape.best:.4g} by step {shape.best_step:.0f} "
                f"({best_at:.0%} of the run), then stayed around {shape.end:.4g} "
                f"({np.exp(shape.rise_from_best):.2f}x its best) to the end" + _lr_note(run)
            ),
            onset=shape.best_step,
            evidence={
                "start": shape.start,
                "lowest_level": shape.best,
                "lowest_level_step": shape.best_step,
                "end": shape.end,
                "end_over_best": float(np.exp(shape.rise_from_best)),
                "noise": curves.noise(loss),
            },
            causes=["the learning rate stays too high once the loss nears a minimum"],
            fixes=[
                "decay the learning rate: cosine or step schedule down to 1-10% of the peak",
                "or ReduceLROnPlateau(factor=0.1-0.5) on the validation loss",
                f"keep the checkpoint from step {shape.best_step:.0f}, the best so far",
            ],
        )


class LearningRateTooLow(Rule):
    """
    ## What it detects
    The loss declines slowly and steadily, almost a straight line, over the
    whole run, and ends far from where such curves flatten out.

    ## Why it matters
    A healthy curve falls fast first and then bends towards a floor. A
    straight, shallow decline means every step makes the same small
    progress: the learning rate, not the problem, limits the speed. The run
    needs many times its length to get anywhere.

    ## How it decides
    Needs a log that starts at the beginning of training. The loss falls over
    the run (the 95% interval of its Theil-Sen slope is below zero), a straight
    line explains at least ``min_linearity`` of the variance of its 20 bin
    medians (per-step noise averaged out), the first half
    drops less than ``max_bend`` times what the second half drops, and the
    end is still above ``min_remaining`` of the start.

    When the probes measured update ratios (``||update|| / ||weights||``),
    a decline that is straight on the log scale counts too: the loss falls
    by about the same factor every step, an exponential approach whose time
    constant is longer than the run. The same ``min_linearity`` and
    ``max_bend`` apply to the log of the bin medians, the run ends above
    ``min_log_remaining`` of its start, and the median over layers of each
    layer's update ratio (later half of the samples) is below
    ``max_update_ratio``. Healthy runs decline that way too, so the curve
    alone does not decide it: the small updates do.

    ## What to do
    Raise the learning rate 3-10x (or run a learning-rate range test: raise
    it exponentially over ~100 steps and take ~1/10 of the value where the
    loss starts rising). With Adam, 1e-3 to 3e-4 is the usual range; with SGD,
    0.01-0.1 with momentum 0.9.
    """

    code = "LR003"
    assumes_falling_loss = True
    name = "lr-too-low"
    title = "Slow, straight decline: learning rate too low"
    category = Category.OPTIMIZATION
    severity = Severity.WARNING
    requires = ("loss",)
    priority = 40
    thresholds = (
        Threshold(
            "min_linearity",
            0.9,
            "R^2 of a straight line through the loss",
            source="healthy runs in the real-log corpus bend: R^2 of a line is 0.2-0.85 on all of them",
        ),
        Threshold(
            "max_bend",
            2.0,
            "first-half drop over second-half drop below which the curve is not bending",
            source="an exponential approach with the run 2x its time constant drops 2.7x more in its "
            "first half; healthy runs in the real-log corpus drop 3x-50x more",
        ),
        Threshold(
            "min_remaining",
            0.8,
            "end/start ratio above which the run is far from converged",
            source="the slowest healthy runs in the real-log corpus (a slow-starting Keras classifier, "
            "a short fine-tune) end at 0.71x-0.78x their start",
        ),
        Threshold(
            "min_log_remaining",
            0.1,
            "end/start ratio above which a decline straight on the log scale is far from converged",
            source="a run that fell tenfold is not crawling, whatever its shape; above it the shape and the "
            "update ratio decide (the calibration twins of the bug suite that end at 0.15x-0.45x their start "
            "bend or update at 1e-3 or more)",
        ),
        Threshold(
            "max_update_ratio",
            1e-3,
            "median update/weight ratio under which a straight log-scale decline is the learning rate's doing",
            source="Karpathy, 'A Recipe for Training Neural Networks' (2019) and CS231n: about 1e-3 is "
            "healthy, lower means the learning rate may be too low; healthy probed sample runs that "
            "decline straight on the log scale sit at 4e-3 to 4e-2",
        ),
        Threshold("min_points", 20, "fewest finite points judged", source="a line fit on fewer is not telling"),
    )

    def check(self, run: Run, t: Mapping[str, float]) -> Iterator[Finding]:
        loss = plain_loss(run, t["min_points"])
        if loss is None or curves.starts_midway(loss):
            return
        # Cheapest test first: most runs fall far, and then the trend (a Theil-Sen fit) is not needed.
        start, end = curves.start_level(loss), curves.end_level(loss)
        if not start > 0:  # most logged values exactly 0 at the start (empty batches): no end/start ratio to judge
            return
        remaining = end / start
        if remaining > t["min_remaining"]:
            shape = _straight_decline(loss, t)
            said = f"loss falls in a near-straight line (R^2 {{:.2f}}) from {start:.4g} to {end:.4g}: only "
            said += f"{1 - remaining:.0%} lower, and the second half fell as fast as the first"
        elif remaining > t["min_log_remaining"] and curves.is_positive(loss):
            ratio = _median_update_ratio(run)
            shape = _straight_decline(np.log(loss), t) if ratio < t["max_update_ratio"] else None
            said = (
                f"loss falls by about the same factor every step (a straight line on the log scale, R^2 {{:.2f}}) "
                f"from {start:.4g} to {end:.4g}, nearly as fast in the second half as in the first: far from its "
                f"floor, with weights that change by a median {ratio:.2g} of their size per step (healthy ~1e-3)"
            )
        else:
            return
        if shape is None:
            return
        fit = curves.trend(curves.comparable(loss))
        if fit is None or not fit.falling:
            return
        linearity, first_half, second_half = shape
        yield self.finding(
            run,
            message=said.format(linearity) + _lr_note(run),
            onset=loss.index[0],
            evidence={
                "linearity": linearity,
                "first_half_drop": first_half,
                "second_half_drop": second_half,
                "end_over_start": remaining,
            },
            causes=["learning rate too low", "gradients scaled down (loss divided by a large constant)"],
            fixes=[
                "raise the learning rate 3-10x",
                "or run a learning-rate range test and take ~1/10 of the rate where the loss starts rising",
                "Adam: 3e-4 to 1e-3 is the usual range; SGD: 0.01-0.1 with momentum 0.9",
            ],
        )


def _straight_decline(loss: pd.Series, t: Mapping[str, float]) -> tuple[float, float, float] | None:
    """(R^2 of a line through the 20 bin medians, first-half drop, second-half drop) when the curve falls
    in a near-straight line that does not bend; None otherwise."""
    linearity = curves.linearity(curves.downsample(loss, _LEVEL_BINS))
    first_half, second_half = _half_drops(loss)
    if linearity >= t["min_linearity"] and second_half > 0 and first_half < t["max_bend"] * second_half:
        return linearity, first_half, second_half
    return None


def _median_update_ratio(run: Run) -> float:
    """Median over layers of each layer's median update/weight ratio in the later half of the samples
    (zero updates left out); NaN without the probes' ``update_ratio``."""
    ratios = later_samples(layer_table(run, "update_ratio"))
    medians = ratios[ratios > 0].median().dropna() if len(ratios) else pd.Series(dtype="float64")
    return float(medians.median()) if len(medians) else float("nan")


def _half_drops(loss: pd.Series) -> tuple[float, float]:
    """How much the smoothed loss falls in the first and in the second half of the run."""
    smoothed = curves.smooth(loss).to_numpy()
    middle = len(smoothed) // 2
    return float(smoothed[0] - smoothed[middle]), float(smoothed[middle] - smoothed[-1])


class LearningRateDecayedEarly(Rule):
    """
    ## What it detects
    The learning-rate schedule reaches nearly zero long before the end of the
    run, while the loss was still improving just before.

    ## Why it matters
    With the learning rate at ~0 the weights no longer move: every step after
    that point is spent for nothing. Usually the schedule was set for fewer
    steps than the run has (``T_max``/``total_steps`` counted in epochs while
    ``scheduler.step()`` runs per batch, or the reverse).

    ## How it decides
    Needs ``lr``. After its peak, the learning rate falls below ``near_zero``
    of the peak before ``max_at`` of the run and stays there. It fires only
    when the loss fell by more than ``min_gain`` over the tenth of the run just before
    (a plateau scheduler lowering the rate after the loss stopped improving
    is doing its job).

    ## What to do
    Make the schedule's length match the run: ``total_steps`` / ``T_max``
    equal to the number of ``scheduler.step()`` calls; step a per-epoch
    scheduler once per epoch. Or raise the floor (``eta_min`` ~1-10% of the peak).
    """

    code = "LR004"
    name = "lr-decayed-too-early"
    title = "Learning rate decays to ~0 long before the end"
    category = Category.OPTIMIZATION
    severity = Severity.WARNING
    requires = ("loss", "lr")
    priority = 20
    thresholds = (
        Threshold(
            "near_zero",
            0.01,
            "fraction of the peak learning rate that counts as ~0",
            source="a cosine schedule is at 1% of its peak only in its last 6% of steps",
        ),
        Threshold(
            "max_at",
            0.75,
            "latest fraction of the run at which reaching ~0 counts as too early",
            source="a quarter of the run or more wasted",
        ),
        Threshold(
            "min_gain",
            0.05,
            "log drop of the loss over the tenth of the run before the decay that shows "
            "it was still learning (0.05 = 5%)",
            source="healthy plateau-scheduled Keras runs in the real-log corpus improve <2% before their rate is cut",
        ),
    )

    def check(self, run: Run, t: Mapping[str, float]) -> Iterator[Finding]:
        lr = curves.finite(run.series("lr"))
        loss = plain_loss(run, 10)
        if len(lr) < 5 or loss is None or lr.max() <= 0:
            return
        dead_from = _dead_from(lr, t["near_zero"])
        if dead_from is None or curves.fraction_of_run(loss, dead_from) >= t["max_at"]:
            return
        before = loss[(loss.index <= dead_from) & (loss.index >= dead_from - 0.1 * (loss.index[-1] - loss.index[0]))]
        gain = (
            curves.log_ratio(curves.start_level(before, 0.2), curves.end_level(before, 0.2)) if len(before) >= 4 else 0
        )
        if not gain > t["min_gain"]:
            return
        wasted = 1 - curves.fraction_of_run(loss, dead_from)
        yield self.finding(
            run,
            message=(
                f"learning rate fell below {t['near_zero']:.0%} of its peak {lr.max():.3g} "
                f"at step {dead_from:.0f} "
                f"and stayed there: the last {wasted:.0%} of the run barely moved the weights, although the "
                f"loss fell {1 - np.exp(-gain):.0%} just before"
            ),
            onset=dead_from,
            evidence={
                "peak_lr": float(lr.max()),
                "dead_from": dead_from,
                "wasted_fraction": wasted,
                "gain_before": gain,
            },
            causes=["the schedule is set for fewer steps than the run has (epochs vs batches mix-up)"],
            fixes=[
                "set total_steps / T_max to the number of scheduler.step() calls",
                "step a per-epoch scheduler once per epoch, not per batch",
                "or keep a floor: eta_min at 1-10% of the peak",
            ],
        )


def _dead_from(lr: pd.Series, near_zero: float) -> float | None:
    """First step after the peak from which the rate stays below ``near_zero`` x peak; None if never."""
    values = lr.to_numpy()
    low = values < near_zero * values.max()
    if not low[-1]:
        return None
    peak = int(np.argmax(values))
    live = np.flatnonzero(~low[peak:])
    first_dead = peak + (int(live[-1]) + 1 if live.size else 0)
    return float(lr.index[first_dead])


class TrainingStalled(Rule):
    """
    ## What it detects
    The loss stops improving early and stays flat for most of the run, with
    a learning rate that is still alive. A plateau at chance level is CH001's
    case: when CH001 fires on the run, this finding is set aside.

    ## Why it matters
    A run that has not improved for most of its steps is wasting them: the
    model is either too small for the task, stuck in a poor region, or its
    updates are blocked (learning rate too low for this stage, vanishing
    gradients, saturated or dead units).

    ## How it decides
    On 20 bin medians of the log loss, the stall starts where the loss never
    again falls more than ``tolerance`` (or twice the standard error of a bin
    median, when per-step noise is larger); a run that ends within
    ``tolerance`` of its start, or within ``flat_z`` standard errors of its
    start and end levels when its noise is larger (but never beyond
    ``max_flat``), is flat from its first step, however slowly it drifts on
    the way; so is a run whose stall is found after ``max_start`` (noise
    ends the last "improvement" late) while its robust (Theil-Sen) line over
    the whole run has a 95% interval that holds zero (no trend at all) and
    neither half of it climbs (a fall and a climb back up, a divergence,
    average out on one line). It fires when that happens before
    ``max_start`` of the run, the plateau is high (the loss fell less than
    ``max_drop`` before it), the log starts at the beginning of training,
    the validation loss (when logged) is not improving either nor below
    ``val_below`` times the training loss's level (a model twice as good on
    unseen data is not stuck: label noise, dropout or augmentation hold the
    training loss up), and the learning rate during the stall (when logged)
    is above ``min_lr`` of its peak (a schedule that decayed to zero is
    LR004's case). A run whose validation accuracy during the stall is at
    least ``capped_accuracy`` is converged, not stalled, when its plateau
    is under the lowest loss a constant guess could reach at that accuracy
    (the entropy of the commonest class's share: a model that only
    predicted the class prior of a 95/5 data set would be 95% accurate at
    a loss of 0.199, but no lower).

    A plateau that starts later than ``max_start`` still counts, up to
    ``capped_max_start``, when it is a cap on confidence rather than an
    early convergence: the validation accuracy during the stall is at least
    ``capped_accuracy`` while the plateau stays above ``capped_level`` and
    is steady (its noise does not widen ``tolerance``: a loss held up by a
    few confidently wrong examples jumps about instead). A
    classifier right on nearly every example can push a cross-entropy
    towards zero by sharpening its outputs; a loss that stays where the
    right class gets under half the probability means something stops it
    (probabilities fed to a loss that applies softmax or sigmoid itself,
    heavy label smoothing, a temperature).

    ## What to do
    Overfit one small batch first: if even that fails the model or the data
    path is broken. Otherwise try, in order: a learning rate 3x higher or a
    warm restart, a larger model, normalisation layers (BatchNorm/LayerNorm),
    residual connections; check the gradient and activation rules for dead
    or saturated layers. A plateau at high accuracy: look for a softmax or
    sigmoid applied before ``CrossEntropyLoss`` / ``BCEWithLogitsLoss``, and
    check the label smoothing and any temperature on the logits.
    """

    code = "PLT001"
    assumes_falling_loss = True
    name = "training-stalled"
    title = "Training stalled on a plateau"
    category = Category.OPTIMIZATION
    severity = Severity.WARNING
    requires = ("loss",)
    priority = 35
    thresholds = (
        Threshold(
            "tolerance",
            0.03,
            "log improvement below which the loss counts as flat (0.03 = 3%)",
            source="the plateau runs in the real-log corpus move <2% after their stall; healthy "
            "runs keep improving >3% until their last third",
        ),
        Threshold(
            "max_start",
            0.35,
            "latest fraction of the run at which the stall may start",
            source="healthy runs in the real-log corpus (nanoGPT included) improve by 3% or more "
            "until at least 48% of the run; the recorded spike run (SPK001's example) flattens at 37.5% "
            "and is no stall",
        ),
        Threshold(
            "max_drop",
            1.0,
            "log(start / plateau) below which the plateau counts as high (1.0 = the "
            "loss kept more than 37% of its starting value)",
            source="the plateau runs in the real-log corpus keep 63%-67% of their starting loss; runs "
            "that converge early to a low floor keep far less",
        ),
        Threshold(
            "min_lr",
            0.05,
            "learning rate during the stall, as a fraction of its peak, above which the "
            "stall is not the schedule's doing",
            source="a cosine schedule is at 5% in its last 14%",
        ),
        Threshold(
            "val_below",
            0.5,
            "median validation loss during the stall, as a fraction of the training loss's level, under "
            "which the plateau is the training batches' floor",
            source="the plateau runs of the calibration half that log a validation loss sit at 0.79-1.08 "
            "times their training loss; the healthy twin of the overfitting_tiny_data bug (10% label noise "
            "in training only) at 0.4",
        ),
        Threshold(
            "flat_z",
            3.0,
            "standard errors of the start and end levels within which a run that ends where it started "
            "counts as flat from its first step, when that is more than ``tolerance``",
            source="three standard errors: the customary bound for 'not measurably moved'; on the "
            "calibration half the noisiest healthy run ends 5.8 standard errors from its start, the flat "
            "and stuck ones 0.4-3.0",
        ),
        Threshold(
            "max_flat",
            0.105,
            "log distance between start and end (0.105: the end below 0.9x the start) beyond which a run "
            "has moved, however noisy",
            source="the corpus's own definition of a falling curve (sample_runs/corpus/SOURCES.md: last "
            "quarter under 0.9x the first); the noisy recorded runs of NOI001 (54% down from its start) "
            "and BUG019 (17% up) are no flat runs",
        ),
        Threshold(
            "capped_accuracy",
            0.95,
            "median validation accuracy during the stall from which the model is right on nearly every example "
            "(converged under the loss of a constant guess at that accuracy, capped above capped_level)",
            source="a classifier right on 95% of examples reaches well under capped_level once it sharpens: "
            "the healthy twins of the bug suite at 0.95 or more end at 0.0002-0.49 (the highest, dropout "
            "holding the training loss up)",
        ),
        Threshold(
            "capped_level",
            0.693,
            "plateau level (ln 2) above which the right class gets under half the probability on average",
            source="cross-entropy is the mean of -ln p(right class); label smoothing 0.1 over 10 classes "
            "floors at 0.50, below it",
        ),
        Threshold(
            "capped_max_start",
            0.5,
            "latest fraction of the run at which a plateau at high accuracy may start",
            source="the plateau holds at least half the run; no file of the real-log corpus's calibration "
            "half logs a validation accuracy of 0.95 or more with a training loss above ln 2",
        ),
        Threshold("min_points", 20, "fewest finite points judged", source="a stall needs several bins to be seen"),
    )

    def check(self, run: Run, t: Mapping[str, float]) -> Iterator[Finding]:
        loss = plain_loss(run, t["min_points"])
        if loss is None or curves.starts_midway(loss) or not curves.is_positive(loss):
            return  # a loss at exactly zero has nothing left to improve (ZL001's case)
        tolerance = max(t["tolerance"], 2 * _bin_median_noise(loss, _LEVEL_BINS))
        stall = curves.stall_start(loss, tolerance, max_points=_LEVEL_BINS)
        within = min(max(t["tolerance"], t["flat_z"] * _start_to_end_error(loss)), t["max_flat"])
        if stall is None:
            return
        start, level = curves.start_level(loss), curves.end_level(loss, 0.5)
        if curves.log_ratio(start, level) > t["max_drop"]:
            return  # fell far: no high plateau, wherever it stalled (tested first: it spares the trend fits)
        ends_at_start = abs(curves.log_ratio(start, curves.end_level(loss))) < within
        # A noisy loss without any trend has its stall found late, where noise ends the last "improvement".
        late_in_noise = curves.fraction_of_run(loss, stall) > t["max_start"] and _trendless(loss)
        if ends_at_start or late_in_noise:
            stall = float(loss.index[0])  # flat from its start, however noisy or slowly drifting on the way
        accuracy = _val_accuracy_during(run, stall)
        if accuracy >= t["capped_accuracy"] and level < constant_guess_loss(accuracy):
            return  # converged: right on nearly every example, and no constant guess gets this low
        steady = tolerance == t["tolerance"]  # per-step noise does not widen it: a smooth floor
        capped = steady and accuracy >= t["capped_accuracy"] and level > t["capped_level"]
        if curves.fraction_of_run(loss, stall) > (t["capped_max_start"] if capped else t["max_start"]):
            return
        if _val_improving(run, stall, tolerance) or _lr_dead(run, stall, t["min_lr"]):
            return
        if _val_far_below(run, stall, level, t["val_below"]):
            return
        message = (
            f"loss has stayed flat at about {level:.4g} since step {stall:.0f} "
            f"({1 - curves.fraction_of_run(loss, stall):.0%} of the run), down only "
            f"{1 - level / start:.0%} from its start {start:.4g}"
        )
        if capped:
            yield self._capped(run, stall, level, accuracy, message)
            return
        yield self.finding(
            run,
            message=message,
            onset=stall,
            evidence={"stall_step": stall, "level": level, "start": start},
            causes=[
                "model too small or badly conditioned for the task",
                "learning rate too low for this stage",
                "updates blocked by dead or saturated units or vanishing gradients",
            ],
            fixes=[
                "overfit one small batch: if that fails too, the model or data path is broken",
                "try a learning rate 3x higher, or a warm restart of the schedule",
                "add normalisation (BatchNorm/LayerNorm) or residual connections; try a larger model",
            ],
        )

    def _capped(self, run: Run, stall: float, level: float, accuracy: float, message: str) -> Finding:
        return self.finding(
            run,
            message=(
                f"{message}, while validation accuracy is {accuracy:.0%}: a model right on nearly every "
                f"example could push the loss far lower, so something caps its confidence (the right "
                f"class gets about {np.exp(-level):.0%} of the probability)"
            ),
            onset=stall,
            evidence={"stall_step": stall, "level": level, "val_accuracy": accuracy},
            causes=[
                "probabilities fed to a loss that applies softmax/sigmoid itself (CrossEntropyLoss, BCEWithLogitsLoss)",
                "label smoothing or a temperature that keeps the outputs from sharpening",
            ],
            fixes=[
                "feed raw logits to CrossEntropyLoss / BCEWithLogitsLoss; apply softmax/sigmoid only for predictions",
                "look for: softmax/Softmax/sigmoid as the last step of forward(); check label_smoothing",
            ],
        )


def _trendless(loss: pd.Series) -> bool:
    """No measurable trend over the whole run, and no climb over either half of it (a fall and a climb
    back up average out on one line through the whole run: a divergence, LR001's case). On the
    calibration half of the real-log corpus no healthy file's line holds zero over its whole run; the
    ones that do are labelled flat, stuck_at_chance or plateau (and one GAN's climbing loss)."""
    middle = len(loss) // 2
    halves = (_line(loss.iloc[:middle]), _line(loss.iloc[middle:]))
    return _no_trend(loss) and not any(half is not None and half.rising for half in halves)


def _no_trend(loss: pd.Series) -> bool:
    """The 95% interval of the Theil-Sen slope of the (log) loss holds zero: no measurable trend."""
    line = _line(loss)
    return line is not None and not (line.falling or line.rising)


def _line(loss: pd.Series) -> curves.Trend | None:
    return curves.trend(curves.comparable(loss))


def _start_to_end_error(loss: pd.Series) -> float:
    """Standard error, on the log scale, of log(start level / end level): the two are medians of a few
    points each (`curves.start_level`, `curves.end_level`), and a median of k points scatters about
    1.25 / sqrt(k) times as much as one point."""
    noise = curves.noise(loss)
    if not np.isfinite(noise):
        return 0.0
    first = max(1, min(5, int(np.ceil(len(loss) * 0.05))))
    last = len(curves.tail(loss, 0.1, 3))
    return 1.25 * noise * float(np.sqrt(1 / first + 1 / last))


def _val_improving(run: Run, since: float, tolerance: float) -> bool:
    val = curves.finite(run.series("val_loss"))
    val = val[val.index >= since]
    if len(val) < 3 or not curves.is_positive(val):
        return False
    return curves.log_ratio(float(val.iloc[: max(1, len(val) // 3)].median()), curves.end_level(val, 1 / 3)) > tolerance


def _val_accuracy_during(run: Run, since: float) -> float:
    """Median validation accuracy (as a fraction) from ``since`` on; NaN when it is not logged."""
    accuracy = curves.finite(run.series("val_accuracy"))
    accuracy = accuracy[accuracy.index >= since]
    if len(accuracy) == 0:
        return float("nan")
    median = float(accuracy.median())
    return median / 100 if 1.5 < float(accuracy.max()) <= 100 else median


def _val_far_below(run: Run, since: float, level: float, ratio: float) -> bool:
    """The validation loss during the stall is under ``ratio`` times the training loss's level: the
    training batches are what holds the loss up (label noise, dropout, augmentation), not the model."""
    val = curves.finite(run.series("val_loss"))
    val = val[val.index >= since]
    return len(val) >= 3 and level > 0 and float(val.median()) < ratio * level


def _lr_dead(run: Run, since: float, min_lr: float) -> bool:
    lr = curves.finite(run.series("lr"))
    if len(lr) == 0 or lr.max() <= 0:
        return False
    during = lr[lr.index >= since]
    return len(during) > 0 and float(during.median()) < min_lr * float(lr.max())


class ShortRunLearnedNothing(Rule):
    """
    ## What it detects
    A short run (five to nineteen logged points) in which neither curve moved:
    the training loss ends about where it started, and the validation loss
    never got measurably better than at its first evaluation.

    ## Why it matters
    Whatever its length, a run whose training and validation losses both
    stand still has learned nothing: the updates do not reach the weights
    that matter, the learning rate is far too low for the run's few steps,
    or the data give the model nothing to learn from. Training it longer at
    the same settings wastes the time; PLT001 reads the same shape on runs
    long enough to find where a stall begins. A loss that stands still at
    chance level is CH001's case: when CH001 fires on the run, this finding
    is set aside.

    ## How it decides
    Needs from ``min_points`` up to (not including) ``max_points`` finite,
    positive training losses (from ``max_points`` on PLT001 judges the run)
    and at least ``min_evals`` positive validation losses. It fires when the
    training loss's end level (median of its last points) is within
    ``max_flat`` (log units) of its start level (median of its first
    points), and the lowest validation loss is less than ``val_tolerance``
    (log units) below the first one. A log that starts in the middle of
    training (a resumed run) is not judged: where it started is not where
    training started.

    ## What to do
    Overfit one small batch first: if even that fails, the model or the data
    path is broken (labels shuffled apart from their inputs, a frozen or
    detached model, an optimizer over the wrong parameters). Otherwise raise
    the learning rate 3-10x (check that the schedule is not still in its
    warm-up or already decayed), and check that the inputs are normalised.
    """

    code = "PLT002"
    assumes_falling_loss = True
    name = "short-run-learned-nothing"
    title = "Short run: neither the training nor the validation loss moved"
    category = Category.OPTIMIZATION
    severity = Severity.WARNING
    requires = ("loss",)
    priority = 36
    thresholds = (
        Threshold(
            "min_points",
            5,
            "fewest finite training losses judged",
            source="as min_evals: five points give a start and an end level that are not the same "
            "points; the flat short files of the calibration half log 5-12 (a YOLO run of 5 epochs "
            "still in its warm-up whose validation losses are constant to three digits)",
        ),
        Threshold(
            "max_points",
            20,
            "training losses from which PLT001 judges the run instead",
            source="PLT001's min_points: a run that long has enough bins to find where a stall begins",
        ),
        Threshold(
            "min_evals",
            5,
            "fewest positive validation losses that must corroborate the flat training loss",
            source="the flat short files of the calibration half log 5-12 evaluations; with fewer than "
            "five, one lucky or unlucky evaluation decides; a nanoGPT log cut after 14 steps of its "
            "warm-up (labelled short, not flat) has one and is left alone",
        ),
        Threshold(
            "max_flat",
            0.105,
            "log distance between the training loss's start and end levels within which it did not move",
            source="PLT001's max_flat, the corpus's own definition of a falling curve (sample_runs/corpus/"
            "SOURCES.md: last quarter under 0.9x the first); the flat short files of the calibration "
            "half move 0.016-0.069, the healthy short runs 0.12 or more (and their validation loss "
            "improves 8% or more)",
        ),
        Threshold(
            "val_tolerance",
            0.03,
            "log improvement of the best validation loss over the first one below which it did not improve",
            source="PLT001's tolerance (0.03 = 3%); the flat short files of the calibration half improve "
            "0-1.8%, the healthy short runs whose training loss moves least 12% or more",
        ),
    )

    def check(self, run: Run, t: Mapping[str, float]) -> Iterator[Finding]:
        loss = plain_loss(run, t["min_points"])
        if loss is None or len(loss) >= t["max_points"] or not curves.is_positive(loss):
            return
        if curves.starts_midway(loss):
            return  # a resumed run: its first level is not where training started
        column, val = validation_loss(run)
        if len(val) < t["min_evals"] or not curves.is_positive(val):
            return
        start, end = curves.start_level(loss), curves.end_level(loss)
        first, best = float(val.iloc[0]), float(val.min())
        moved = abs(curves.log_ratio(start, end))
        improved = curves.log_ratio(first, best)
        if not (moved < t["max_flat"] and improved < t["val_tolerance"]):
            return
        yield self.finding(
            run,
            message=(
                f"over {len(loss)} logged steps the training loss went from about {start:.4g} to {end:.4g} "
                f"({end / start - 1:+.1%}) and {column} was never more than "
                f"{np.expm1(improved):.1%} below its first value {first:.4g} ({len(val)} evaluations): "
                "the run learned nothing"
            ),
            onset=float(loss.index[0]),
            evidence={
                "start": start,
                "end": end,
                "points": len(loss),
                "first_val": first,
                "best_val": best,
                "evaluations": len(val),
            },
            causes=[
                "the learning rate is far too low for the run's few steps (or still warming up)",
                "updates do not reach the model: frozen or detached parameters, an optimizer over the wrong ones",
                "labels that do not match their inputs, or inputs that carry no signal",
            ],
            fixes=[
                "overfit one small batch: if that fails too, the model or data path is broken",
                "raise the learning rate 3-10x; check the warm-up and decay of the schedule",
                "check that labels are shuffled together with their inputs and that inputs are normalised",
            ],
        )


class LossSpikes(Rule):
    """
    ## What it detects
    Isolated jumps of the training loss far above its local level: how many,
    where, how high, and whether the loss came back down.

    ## Why it matters
    A spike that throws the loss back above where training began, or that
    never recovers, undoes real progress. Typical causes are a bad batch
    (corrupt sample, wrong label scale), a learning rate too high for a
    sharp region, or an optimizer state (Adam's second moment) that decayed
    while gradients were small.

    ## How it decides
    A point is a spike when it stands more than ``min_height`` (log units)
    above the median of the 20 points before it and more than ``min_z``
    robust standard deviations of the local scatter; consecutive spike
    points count as one. Only the finite part of the run before any NaN is
    read (what follows a NaN is NF001's). A warning when a spike reaches
    above the run's starting level or does not recover; otherwise a note,
    because per-batch losses near zero jump by large factors in healthy runs.

    ## What to do
    Clip the gradient norm at 1.0; lower the learning rate 2-3x or lengthen
    the warm-up; look at the batches at the spike steps for corrupt samples;
    with Adam raise ``eps`` (1e-8 to 1e-6) or lower ``beta2`` (0.999 to 0.95).
    """

    code = "SPK001"
    assumes_falling_loss = True
    name = "loss-spikes"
    title = "Loss spikes"
    category = Category.OPTIMIZATION
    severity = Severity.WARNING
    requires = ("loss",)
    priority = 45
    thresholds = (
        Threshold(
            "min_height",
            0.7,
            "log height above the local median that makes a spike (0.7 = 2x)",
            source="the labelled spikes in the real-log corpus stand 4x-2500x above their baseline",
        ),
        Threshold(
            "min_z",
            5.0,
            "height in robust standard deviations of the local scatter",
            source="5 sigma: about one false point in 3.5 million for normal noise",
        ),
        Threshold("min_points", 20, "fewest finite points judged", source="the local median needs 20 points"),
    )

    def check(self, run: Run, t: Mapping[str, float]) -> Iterator[Finding]:
        loss = curves.before_nonfinite(run.series("loss", keep_nan=True))
        if len(loss) < t["min_points"]:
            return
        spikes = curves.find_spikes(loss, min_height=t["min_height"], min_z=t["min_z"])
        if curves.first_nonfinite_step(run.series("loss", keep_nan=True)) is not None:
            spikes = [s for s in spikes if s.recovered_step is not None]  # the last climb is NF001's story
        if not spikes:
            return
        start = curves.start_level(loss)
        harmful = [s for s in spikes if s.peak >= start or s.recovered_step is None]
        worst = max(spikes, key=lambda s: s.height)
        unrecovered = [s for s in spikes if s.recovered_step is None]
        yield self.finding(
            run,
            message=(
                f"{len(spikes)} loss spike(s); the highest at step {worst.step:.0f}: {worst.peak:.4g} against a "
                f"local level of {worst.baseline:.4g}; {len(harmful)} reached above the starting loss "
                f"{start:.4g} or never recovered" + (f" ({len(unrecovered)} never recovered)" if unrecovered else "")
            ),
            onset=spikes[0].step,
            steps=[s.step for s in spikes],
            severity=Severity.WARNING if harmful else Severity.INFO,
            evidence={
                "count": len(spikes),
                "harmful": len(harmful),
                "unrecovered": len(unrecovered),
                "spikes": [
                    {"step": s.step, "peak": s.peak, "baseline": s.baseline, "recovered_step": s.recovered_step}
                    for s in spikes[:20]
                ],
            },
            causes=[
                "a bad batch (corrupt sample, wrong scale)",
                "learning rate too high for sharp regions",
                "Adam's second-moment estimate too small after a quiet stretch",
            ],
            fixes=[
                "clip gradients: torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)",
                "lower the learning rate 2-3x or lengthen the warm-up",
                f"inspect the batches at steps {', '.join(f'{s.step:.0f}' for s in spikes[:5])}",
                "with Adam, raise eps to 1e-6 or lower beta2 to 0.95",
            ],
        )


class NoisyLoss(Rule):
    """
    ## What it detects
    A training loss whose step-to-step scatter is as large as the progress
    the run makes: the trend is buried in noise.

    ## Why it matters
    Each step's gradient is estimated from one batch; with very small batches
    the estimate is so noisy that most of each update is random. The run
    learns slowly and ends at a worse level than the same model with a larger
    batch (or a lower learning rate) would reach.

    ## How it decides
    Needs per-step logging (``min_points`` or more points). The scatter is the
    robust standard deviation of the loss around its rolling median. It fires
    when the scatter is more than ``max_relative`` of the loss level and either
    more than ``max_share`` of what the smoothed loss fell over the whole run
    or more than ``max_of_start`` of the level the run started from (a run can
    fall a long way and still be mostly noise at the end).

    ## What to do
    Raise the batch size (or accumulate gradients over several batches);
    otherwise lower the learning rate 2-3x. Log a running mean of the loss
    to read the trend.
    """

    code = "NOI001"
    assumes_falling_loss = True
    name = "noisy-loss"
    title = "Loss too noisy: batch too small"
    category = Category.OPTIMIZATION
    severity = Severity.WARNING
    requires = ("loss",)
    # Before the shape rules (overfitting, stalls, spikes): with a gradient
    # this noisy every other curve shape is uncertain, the validation loss too.
    priority = 28
    thresholds = (
        Threshold(
            "max_relative",
            0.35,
            "robust scatter as a fraction of the loss level",
            source="measured on sample_runs/: batch size 1 scatters 43% of its level, batches of 32 "
            "8%-24% (MSE the most)",
        ),
        Threshold(
            "max_share",
            0.5,
            "scatter as a fraction of the run's total (smoothed) drop",
            source="keeps noisy losses near zero on runs that fell a long way (per-step MNIST logs in "
            "the real-log corpus scatter <5% of their drop)",
        ),
        Threshold(
            "max_of_start",
            0.2,
            "scatter as a fraction of the smoothed loss at the start",
            source="batch sizes 1-2 in sample_runs/ and held-out runs scatter 23%-35% of their starting "
            "loss; the healthy runs of the real-log corpus and sample_runs at most 13%",
        ),
        Threshold(
            "min_points", 50, "fewest finite points judged", source="per-step logs; epoch means average noise away"
        ),
    )

    def check(self, run: Run, t: Mapping[str, float]) -> Iterator[Finding]:
        loss = plain_loss(run, t["min_points"])
        if loss is None:
            return
        window = curves.default_window(len(loss), lo=5, hi=50)
        scatter, level = curves.scatter_and_level(loss, window)
        smoothed = curves.smooth(loss)
        drop = max(float(smoothed.iloc[0] - smoothed.iloc[-1]), 0.0)
        start = curves.start_level(smoothed)
        buried = scatter >= t["max_share"] * drop or (start > 0 and scatter >= t["max_of_start"] * start)
        if level <= 0 or scatter < t["max_relative"] * level or not buried:
            return
        yield self.finding(
            run,
            message=(
                f"step-to-step scatter of the loss ({scatter:.3g}) is {scatter / level:.0%} of its level "
                f"and {'more than' if drop <= 0 else f'{scatter / drop:.0%} of'} the whole run's drop"
                + ("" if drop <= 0 else f" ({drop:.3g})")
            ),
            evidence={"scatter": scatter, "level": level, "drop": drop},
            causes=["batch too small for a stable gradient estimate", "learning rate high for this batch size"],
            fixes=[
                "raise the batch size 4-16x, or accumulate gradients over several batches",
                "lower the learning rate 2-3x",
                "log a running mean of the loss to read the trend",
            ],
        )
