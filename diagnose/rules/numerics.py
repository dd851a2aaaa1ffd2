"""Rules about NaN and Inf in the loss and the gradients."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from diagnose import curves
from diagnose.rules.base import Category, Finding, Rule, Severity, Threshold
from diagnose.rules.helpers import events_named
from diagnose.run import Run
from diagnose.runfile import schema

# Module names and types that point at a particular numerical edge case.
_LOG_HINTS = ("log", "entropy", "nll", "bce")
_EXP_HINTS = ("exp", "softmax", "softplus")
_DIV_HINTS = ("div", "norm", "sqrt", "rsqrt", "std", "var")


@dataclass(frozen=True)
class _Episode:
    """Where a series first turned non-finite and whether it came back."""

    first_step: float
    bad_points: int
    recovered: bool


def _episode(values: pd.Series) -> _Episode | None:
    first = curves.first_nonfinite_step(values)
    if first is None:
        return None
    bad = ~np.isfinite(values.to_numpy(dtype="float64"))
    return _Episode(first_step=first, bad_points=int(bad.sum()), recovered=not bad[-1])


def _origin(run: Run) -> dict[str, str] | None:
    """The earliest ``nonfinite`` event the probes wrote: where the first NaN/Inf was made."""
    found = events_named(run, schema.EV_NONFINITE)
    if found.empty:
        return None
    first = found.iloc[0]
    return {
        key: str(first[key])
        for key in ("where", "module", "type", "detail")
        if key in found.columns and isinstance(first[key], str)
    }


def _operation(run: Run) -> dict[str, object]:
    """The operation that made the first non-finite loss, when the probes could name it (``nonfinite_op``)."""
    found = events_named(run, schema.EV_NONFINITE_OP)
    if found.empty:
        return {}
    first = found.iloc[0]
    keys = ("op", "problem", "input_min", "input_max")
    return {key: first[key] for key in keys if key in found.columns and not pd.isna(first[key])}


def _operation_text(operation: dict[str, object]) -> str:
    if not operation.get("op"):
        return f"; {operation['problem']}" if operation.get("problem") else ""
    text = f"; made by {operation['op']}: {operation.get('problem', '')}"
    if "input_min" in operation and "input_max" in operation:
        text += f" (input from {float(operation['input_min']):.4g} to {float(operation['input_max']):.4g})"
    return text


def _was_rising(finite_loss: pd.Series, rise: float) -> bool:
    """True when the loss just before it broke stood ``rise`` (log units) above its best smoothed level."""
    if len(finite_loss) < 5 or not curves.is_positive(finite_loss):
        return False
    before_break = float(finite_loss.iloc[-3:].median())
    best = float(curves.smooth(finite_loss).min())
    return curves.log_ratio(before_break, best) > rise


class NonFiniteLoss(Rule):
    """
    ## What it detects
    The training loss, or the gradient norm, became NaN or infinite. It
    reports the first step, whether the run ever came back, the module where
    the first non-finite value was made (from the probes' ``nonfinite``
    events, with the pass: forward, backward or the loss itself) and the most
    likely cause.

    ## Why it matters
    One NaN in a weight update poisons every weight it touches; from then on
    nothing the run computes means anything, and every other symptom (spikes,
    flat curves, dead layers) is a consequence. It is the first thing to fix.

    ## How it decides
    Any logged NaN or Inf in ``loss`` is an error. Non-finite gradient norms
    while the loss stays finite are a warning when they persist to the end of
    the run, and only a note when they are isolated (AMP's GradScaler skips
    such steps on purpose). The cause is read from the evidence in order:
    the module the probes blamed (a log, exp or division), a loss that was
    climbing before it broke (learning rate too high), a ``loss_scale``
    column (fp16 overflow), otherwise a numerical edge case in a smoothly
    falling run.

    ## What to do
    Follow the cause: for a climbing loss lower the learning rate 3-10x and
    clip gradients at 1.0; for log/division guard the argument (``clamp(min=1e-7)``
    or an epsilon) or use the fused, stable form (``cross_entropy`` on logits,
    ``BCEWithLogitsLoss``, ``log_softmax``); for fp16 overflow train in bf16
    or keep the loss in fp32 with a ``GradScaler``. ``torch.autograd.set_detect_anomaly(True)``
    finds the operation when the probes could not.
    """

    code = "NF001"
    name = "non-finite-loss"
    title = "Loss or gradients became NaN/Inf"
    category = Category.NUMERICS
    severity = Severity.ERROR
    requires = ("loss",)
    live = True
    live_at_once = True
    priority = 1
    thresholds = (
        Threshold(
            "rise_before",
            0.5,
            "log-ratio of the loss just before it broke over its best smoothed level "
            "that counts as 'it was climbing' (0.5 = 1.65x)",
            source="above the 0.2-0.3 scatter of the smoothed loss of the healthy runs in "
            "the real-log corpus; the labelled lr_too_high NaN runs there climb 1.3x-13x first",
        ),
    )

    def check(self, run: Run, t: Mapping[str, float]) -> Iterator[Finding]:
        loss = run.series("loss", keep_nan=True)
        broken = _episode(loss)
        if broken is not None:
            yield self._loss_finding(run, loss, broken, t)
            return
        if run.has("grad_norm"):
            grads = _episode(run.series("grad_norm", keep_nan=True))
            if grads is not None:
                yield self._gradient_finding(run, grads)

    def _loss_finding(self, run: Run, loss: pd.Series, broken: _Episode, t: Mapping[str, float]) -> Finding:
        origin = _origin(run)
        operation = _operation(run)
        rising = _was_rising(curves.before_nonfinite(loss), t["rise_before"])
        causes, fixes = _explain({**(origin or {}), **operation}, rising, amp=run.has("loss_scale"))
        after = "came back later" if broken.recovered else "never came back"
        where = f"; first made in {_describe(origin, run)}" if origin else ""
        message = (
            f"loss became non-finite at step {broken.first_step:.0f} ({broken.bad_points} non-finite point(s), "
            f"{after}){where}{_operation_text(operation)}. Likely cause: {causes[0]}"
        )
        return self.finding(
            run,
            message=message,
            onset=broken.first_step,
            steps=[broken.first_step],
            module=(origin or {}).get("module"),
            evidence={
                "first_step": broken.first_step,
                "nonfinite_points": broken.bad_points,
                "recovered": broken.recovered,
                "rising_before": rising,
                **(origin or {}),
                **{f"operation_{k}" if k != "op" else "operation": v for k, v in operation.items()},
            },
            causes=causes,
            fixes=fixes,
            severity=Severity.ERROR if not broken.recovered else Severity.WARNING,
        )

    def _gradient_finding(self, run: Run, grads: _Episode) -> Finding:
        amp = run.has("loss_scale")
        # The loss went on finite: the optimizer never applied those gradients (a GradScaler, or the
        # Trainer's fp16 scaler, skips such steps), so this is a note, as the labelled real runs agree.
        # One bad point, the last one, is no persistence yet (a run in progress, judged live, ends there).
        if grads.recovered or grads.bad_points == 1:
            message = (
                f"gradient norm was non-finite at {grads.bad_points} step(s) from step {grads.first_step:.0f}, "
                "but the loss stayed finite: isolated overflow steps, which a GradScaler skips"
            )
            severity = Severity.INFO
        else:
            message = (
                f"gradient norm became non-finite at step {grads.first_step:.0f} and stayed so to the end "
                f"({grads.bad_points} points) while the loss was still finite"
            )
            severity = Severity.WARNING
        causes, fixes = _explain(_origin(run), rising=False, amp=amp or severity is Severity.INFO)
        return self.finding(
            run,
            message=message,
            onset=grads.first_step,
            steps=[grads.first_step],
            severity=severity,
            evidence={
                "first_step": grads.first_step,
                "nonfinite_points": grads.bad_points,
                "recovered": grads.recovered,
            },
            causes=causes,
            fixes=fixes,
        )


# How a nonfinite event's "where" reads when no module was named.
_NO_MODULE = {schema.WHERE_LOSS: "the loss computation", schema.WHERE_BACKWARD: "the gradient of the loss"}


def _describe(origin: dict[str, str], run: Run) -> str:
    module = origin.get("module")
    where = origin.get("where", "?")
    if not module or module == "None":
        return _NO_MODULE.get(where, where)
    label = run.module_label(module)
    if origin.get("type") and not label.endswith(")"):
        label += f" ({origin['type']})"
    return f"the {where} pass of {label}"


def _explain(origin: dict[str, str] | None, rising: bool, amp: bool) -> tuple[list[str], list[str]]:
    """Causes, most likely first, and the fixes that go with them in the same order."""
    causes: list[str] = []
    fixes: list[str] = []
    hint = " ".join(str(v) for k, v in (origin or {}).items() if k in ("module", "type", "op")).lower()
    if rising:
        causes.append("divergence: the loss was climbing before it broke, so the learning rate is too high")
        fixes += [
            "lower the learning rate 3-10x and restart from scratch (the weights are already poisoned)",
            "clip gradients: torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)",
            "add a learning-rate warm-up over the first 1-5% of steps",
        ]
    if any(h in hint for h in _LOG_HINTS) or (origin or {}).get("where") == schema.WHERE_LOSS:
        causes.append("log of zero or of a negative number (a probability or input reached 0)")
        fixes += [
            "guard the argument: torch.log(x.clamp(min=1e-7)), or compute the loss from logits "
            "(F.cross_entropy, BCEWithLogitsLoss, log_softmax) instead of from probabilities"
        ]
    if any(h in hint for h in _EXP_HINTS):
        causes.append("exp overflow: an input to exp/softmax grew past ~88 (fp32) or ~11 (fp16)")
        fixes += ["subtract the maximum before exp (or use torch.logsumexp / log_softmax)"]
    if any(h in hint for h in _DIV_HINTS):
        causes.append("division by zero or sqrt of zero in a normalisation")
        fixes += ["add an epsilon to the denominator or under the square root (x / (n + 1e-6))"]
    if amp:
        causes.append("fp16 overflow: a value exceeded 65504 under mixed precision")
        fixes += ["train in bfloat16 instead of float16, or compute the loss in float32 with a GradScaler"]
    if not causes:
        causes.append(
            "a numerical edge case (log/division of zero, exp overflow) or a bad input batch: "
            "the loss was not climbing before it broke"
        )
        fixes += [
            "check the inputs and targets of the failing step for NaN/Inf",
            "record with diagnose.watch(..., preset='default') to find the module that made the first NaN",
        ]
    fixes.append("run one step under torch.autograd.set_detect_anomaly(True) to see the failing operation")
    return causes, fixes


# Columns that say where a row sits, or that NF001 judges: not re-reported here.
# grad_at_step, grad_carried, loss_backward_scale: gradient norms and weights the probes read (NF001 judges gradients)
_NOT_METRICS = frozenset({"step", "epoch", "loss", "grad_norm", "grad_at_step", "grad_carried", "loss_backward_scale"})
# Cross-rank statistics the gather mode writes (a rank missing at a step reads as NaN): the DST rules judge them.
_CROSS_RANK_PREFIX = "ranks_"


@dataclass(frozen=True)
class _Broken:
    """A logged series that held NaN or Inf."""

    column: str
    first_step: float
    bad_points: int
    points: int
    at_end: bool


def nonfinite_series(run: Run) -> list[_Broken]:
    """Every logged series but the training loss and gradient norm that holds a NaN or Inf, earliest first."""
    found = []
    for kind in ("steps", "evals"):
        for column in run.columns(kind):
            if (
                column in _NOT_METRICS
                or column.startswith(_CROSS_RANK_PREFIX)
                or run.dtype(kind, column).kind not in "fc"
            ):
                continue
            values = run.series(column, keep_nan=True)
            bad = ~np.isfinite(values.to_numpy(dtype="float64"))
            if bad.any():
                found.append(
                    _Broken(column, float(values.index[np.argmax(bad)]), int(bad.sum()), len(values), bool(bad[-1]))
                )
    return sorted(found, key=lambda b: (b.first_step, b.column))


def is_validation_loss(column: str) -> bool:
    return column.startswith("val_") and not column.startswith("val_test_") and "loss" in column


class NonFiniteMetric(Rule):
    """
    ## What it detects
    A NaN or an infinity in any series the run logged besides the training
    loss and the gradient norm (NF001's): a validation loss or metric, a loss
    component (box, cls, KL, ...), a learning rate, a user scalar. It names
    each series with its first non-finite step and how many points were hit.

    ## Why it matters
    A validation loss that is NaN at every evaluation means the model
    produces NaN on unseen data (fp16 overflow in evaluation, an empty
    validation batch, a division by the number of positives), while the
    training curve looks fine; the checkpoint you would keep is broken. A
    NaN loss component ends up in the total loss the optimizer follows.
    Readers keep these values so they are never silently dropped.

    ## How it decides
    Any logged NaN (a ``nan``/``NaN`` value, not an empty cell) or infinity
    in a numeric series other than ``loss`` and ``grad_norm``. An error when
    a validation loss is still non-finite at its last evaluation; a warning
    otherwise.

    ## What to do
    Evaluate in float32 (``model.float()`` or autocast off for evaluation),
    check the validation data for empty batches and for samples without a
    target, guard divisions by counts (``x / max(n, 1)``), and look at the
    first step named here.
    """

    code = "NF002"
    name = "non-finite-metric"
    title = "A logged metric became NaN/Inf"
    category = Category.NUMERICS
    severity = Severity.WARNING
    requires = ()
    priority = 2

    def check(self, run: Run, t: Mapping[str, float]) -> Iterator[Finding]:
        broken = nonfinite_series(run)
        if not broken:
            return
        fatal = [b for b in broken if is_validation_loss(b.column) and b.at_end]
        first = broken[0]
        listed = "; ".join(
            f"{b.column} from step {b.first_step:.0f} ({b.bad_points} of {b.points} points"
            f"{', to the end' if b.at_end else ''})"
            for b in broken[:6]
        )
        more = f"; and {len(broken) - 6} more series" if len(broken) > 6 else ""
        yield self.finding(
            run,
            message=f"non-finite values in {len(broken)} logged series: {listed}{more}",
            onset=first.first_step,
            steps=[b.first_step for b in broken[:20]],
            severity=Severity.ERROR if fatal else Severity.WARNING,
            evidence={
                "series": {
                    b.column: {
                        "first_step": b.first_step,
                        "nonfinite_points": b.bad_points,
                        "points": b.points,
                        "at_end": b.at_end,
                    }
                    for b in broken[:20]
                }
            },
            causes=[
                "overflow in evaluation under float16 (a logit or a sum past 65504)",
                "an empty validation batch or a metric divided by a count of zero",
                "a loss component computed on no elements (no positives, an empty mask)",
            ],
            fixes=[
                "evaluate in float32: disable autocast/half precision for the evaluation loop",
                "check the validation loader for empty batches and samples without a target",
                "guard divisions by counts: x / max(n, 1); clamp logs: torch.log(p.clamp(min=1e-7))",
                f"look at the batch at step {first.first_step:.0f}, where {first.column} first broke",
            ],
        )


class FinalEvaluationBlowUp(Rule):
    """
    ## What it detects
    The last evaluation of a validation loss is orders of magnitude worse
    than the best evaluation of the same run, while still a finite number.

    ## Why it matters
    A model that ends 100x worse on validation than it once was has been
    destroyed late in training (a divergence the per-step log hides, a
    corrupted checkpoint reload, an overflow in evaluation). Whatever the
    training curve says, the final model is unusable; the best checkpoint is
    the one to keep.

    ## How it decides
    For each validation loss (``val_loss`` and other ``val_*loss*`` series),
    with at least ``min_evals`` finite evaluations: the last one above
    ``ratio`` times the best one. Non-finite values are NF002's.

    ## What to do
    Keep the checkpoint of the best evaluation. Then look for what happened
    between the best and the last evaluation: a learning-rate restart or
    warm-up at a resume, a loss spike, evaluation in half precision, a
    different validation set.
    """

    code = "NF003"
    name = "final-evaluation-blow-up"
    title = "Last evaluation orders of magnitude worse than the best"
    category = Category.NUMERICS
    severity = Severity.ERROR
    requires = ()
    priority = 3
    thresholds = (
        Threshold(
            "ratio",
            100.0,
            "last over best validation loss above which the run blew up (100 = two orders of magnitude)",
            source="healthy and overfitting runs of the real-log corpora end within 5x of their best "
            "evaluation; the blown-up run of issue 10 ends at 4.7e25",
        ),
        Threshold(
            "min_evals",
            2,
            "fewest finite evaluations judged",
            source="a best and a last evaluation are all the comparison needs",
        ),
    )

    def check(self, run: Run, t: Mapping[str, float]) -> Iterator[Finding]:
        for column in [c for c in run.columns("evals") if is_validation_loss(c)]:
            values = curves.finite(run.series(column))
            if len(values) < t["min_evals"] or not (values > 0).all():
                continue
            best, last = float(values.min()), float(values.iloc[-1])
            if last <= t["ratio"] * best:
                continue
            yield self.finding(
                run,
                message=(
                    f"{column} ends at {last:.4g} at step {values.index[-1]:.0f}, {last / best:.3g}x its "
                    f"best {best:.4g} at step {values.idxmin():.0f}"
                ),
                onset=float(values.idxmin()),
                end=float(values.index[-1]),
                evidence={
                    "column": column,
                    "best": best,
                    "best_step": float(values.idxmin()),
                    "last": last,
                    "ratio": last / best,
                },
                causes=[
                    "a late divergence the logged training loss does not show",
                    "a checkpoint reload or resume that broke the weights or the optimizer state",
                    "evaluation in half precision overflowing",
                ],
                fixes=[
                    f"keep the checkpoint of step {values.idxmin():.0f}, the best evaluation",
                    "look at what changed between the best and the last evaluation (resume, schedule restart)",
                    "evaluate in float32",
                ],
            )
            return
