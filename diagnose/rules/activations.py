"""Rules that read the activation statistics of each layer: dead units, saturation, collapse."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from diagnose import curves
from diagnose.rules.base import Category, Finding, Rule, Severity, Threshold
from diagnose.rules.helpers import STALLED_LEARNING, functional_activations, later_samples, layer_table, listing
from diagnose.run import Run
from diagnose.runfile import schema


def _settled(run: Run, column: str, min_samples: float) -> pd.Series:
    """Per module, the median of ``column`` over the later half of its samples (empty when too few samples)."""
    table = layer_table(run, column)
    if len(table) < min_samples:
        return pd.Series(dtype="float64")
    return later_samples(table).median().dropna()


def _shares(run: Run, values: pd.Series) -> str:
    """``"model.fc1 (Linear) 62%, ..."``: modules with the share of their units a rule counts."""
    return listing([f"{run.module_label(str(name))} {value:.0%}" for name, value in values.items()])


class DeadReLUs(Rule):
    """
    ## What it detects
    ReLU layers in which a large fraction of the units output zero for every
    sample of the batch, sample after sample: dead units.

    ## Why it matters
    A unit that is never positive passes no gradient to its weights, so
    nothing can bring it back: its capacity is lost for the rest of the run.
    A few dead units are normal; half a layer means the model is much
    smaller than it looks. Typical causes are a learning rate so high that
    one large update pushes the biases far negative, or a bad initial bias.

    ## How it decides
    From the probes' ``act_dead_frac`` of ReLU-like modules (units never
    positive across the batch), the median over the later half of the
    samples, so that a bad start the run recovers from does not count. It
    fires for every layer at or above ``max_dead``, with at least
    ``min_samples`` samples, each seeing every unit at least
    ``min_unit_samples`` times (when the probes recorded how often).

    ## What to do
    Lower the learning rate; initialise biases at zero (or a small positive
    value) and weights with He/Kaiming init; use LeakyReLU/GELU; add
    BatchNorm before the activation.
    """

    code = "ACT001"
    live = True
    name = "dead-relu-units"
    title = "Many ReLU units never fire"
    category = Category.ACTIVATIONS
    severity = Severity.WARNING
    requires = ("layers.act_dead_frac", "layers.act_zero_frac")
    priority = 25
    explains = STALLED_LEARNING
    thresholds = (
        Threshold(
            "max_dead",
            0.5,
            "fraction of a layer's units dead across the batch",
            source="CS231n (Karpathy) warns that 'as much as 40%' of a network can die with too high a "
            "learning rate; healthy sample runs stay under 10%",
        ),
        Threshold(
            "min_samples",
            2,
            "fewest activation samples: one sample cannot show persistence",
            source="practice: persistence needs a second look",
        ),
        Threshold(
            "min_unit_samples",
            16,
            "fewest values a unit is seen over for 'never positive' to mean dead",
            source="a healthy unit, positive half the time, shows no positive value in 16 draws with "
            "probability 2^-16; over a batch of 2, one time in four",
        ),
    )

    def check(self, run: Run, t: Mapping[str, float]) -> Iterator[Finding]:
        dead = _settled(run, "act_dead_frac", t["min_samples"])
        if dead.empty:  # too few samples yet (a live judgement early in a run): the layer tables below cost more
            return
        relu_like = set(run.layer_series("act_zero_frac").columns)
        seen = run.layer_series("act_unit_samples").min()
        dead = dead[[m for m in dead.index if m in relu_like and not seen.get(m, math.inf) < t["min_unit_samples"]]]
        bad = dead[dead >= t["max_dead"]].sort_values(ascending=False)
        if bad.empty:
            return
        worst = str(bad.index[0])
        yield self.finding(
            run,
            module=worst,
            message=f"dead ReLU units (never positive across the batch, later half of the run): {_shares(run, bad)}",
            evidence={"dead_fraction": bad.to_dict(), "all_layers": dead.to_dict()},
            causes=[
                "learning rate too high: a large update pushed the pre-activations negative for good",
                "negative or too large initial biases / weights",
            ],
            fixes=[
                "lower the learning rate",
                "initialise biases at 0 and weights with kaiming_normal_",
                "use LeakyReLU or GELU",
                "add BatchNorm/LayerNorm before the activation",
            ],
        )


class SaturatedUnits(Rule):
    """
    ## What it detects
    Hidden tanh or sigmoid layers whose outputs sit mostly in the flat tails
    (|tanh| > 0.99, sigmoid < 0.01 or > 0.99).

    ## Why it matters
    In the tails the derivative is under 2% of its peak: saturated units
    pass almost no gradient and stop learning, and the layers below them
    starve. Glorot & Bengio (2010) traced slow training of deep sigmoid and
    tanh nets to exactly this. Usual causes: weights initialised too large,
    unnormalised inputs, or a learning rate that inflated the weights.

    ## How it decides
    From the probes' ``act_sat_frac`` (fraction of saturated outputs), the
    median over the later half of the samples, per layer. The module that
    produces the model output is not judged: a confident sigmoid output is
    supposed to be near 0 or 1. Fires at or above ``max_saturated``.
    A tanh applied as a function inside ``forward`` (``torch.tanh``) has no
    module to hook: it is seen at the input of the layer after it, whose
    ``in_*`` statistics the probes record (values within [-1, 1], the share
    beyond 0.99 in magnitude, medians over the sampled steps), for layers
    after the first that no activation module precedes. The same
    ``max_saturated`` applies; the run needs either statistic.

    ## What to do
    Initialise with Xavier/Glorot (``xavier_uniform_``) for tanh/sigmoid;
    standardise the inputs; add LayerNorm/BatchNorm before the activation;
    lower the learning rate; or switch hidden layers to ReLU/GELU.
    """

    code = "ACT002"
    name = "saturated-units"
    title = "tanh/sigmoid units stuck in their flat tails"
    category = Category.ACTIVATIONS
    severity = Severity.WARNING
    requires = ("layers.act_sat_frac",)
    priority = 25
    explains = STALLED_LEARNING
    thresholds = (
        Threshold(
            "max_saturated",
            0.25,
            "fraction of a layer's outputs in the saturated tails",
            source="Glorot & Bengio (2010) show training stall when top-layer sigmoids saturate; healthy "
            "sample runs stay under 1%, the large-init tanh run at ~40%",
        ),
        Threshold("min_samples", 2, "fewest activation samples", source="practice: persistence needs a second look"),
    )

    def missing(self, run: Run) -> list[str]:
        return [] if not run.layer_series("in_sat_frac").empty else super().missing(run)

    def check(self, run: Run, t: Mapping[str, float]) -> Iterator[Finding]:
        saturated = _settled(run, "act_sat_frac", t["min_samples"])
        saturated = saturated.drop(labels=[_output_layer(run)], errors="ignore")
        bad = saturated[saturated >= t["max_saturated"]].sort_values(ascending=False)
        functional = _functional_tanh(run, t)
        if bad.empty and functional.empty:
            return
        parts = [f"saturated tanh/sigmoid outputs (later half of the run): {_shares(run, bad)}"] if len(bad) else []
        if len(functional):
            parts.append(
                f"a tanh applied in forward() saturates, seen at the input of the layer after it: "
                f"{_shares(run, functional)}"
            )
        yield self.finding(
            run,
            module=str(bad.index[0] if len(bad) else functional.index[0]),
            message="; ".join(parts),
            evidence={
                "saturated_fraction": bad.to_dict(),
                "all_layers": saturated.to_dict(),
                "functional_tanh_input": functional.to_dict(),
            },
            causes=["weights initialised too large", "inputs not standardised", "learning rate inflated the weights"],
            fixes=[
                "initialise with torch.nn.init.xavier_uniform_",
                "standardise the inputs",
                "add LayerNorm/BatchNorm before the activation",
                "use ReLU/GELU in hidden layers",
            ],
        )


def _functional_tanh(run: Run, t: Mapping[str, float]) -> pd.Series:
    """Layer -> share of its input beyond 0.99 in magnitude, for the inputs that come from a functional
    tanh saturated at ``max_saturated`` or more (see `functional_activations`)."""
    if len(run.layer_series("in_sat_frac")) < t["min_samples"]:
        return pd.Series(dtype="float64")
    found = functional_activations(run, t["max_saturated"])
    return pd.Series({module: e["saturated"] for module, kind, e in found if kind == "tanh"}, dtype="float64")


def _output_layer(run: Run) -> str | None:
    """The last module with activation statistics: the one whose output is the model's output."""
    modules = [m for m in run.layer_series("act_rms").columns if m != schema.OUTPUT_MODULE]
    return modules[-1] if modules else None


def spread(run: Run) -> pd.DataFrame:
    """Per module and sample: spread across the batch relative to the signal (act_batch_std / act_rms)."""
    rms = layer_table(run, "act_rms")
    batch_std = layer_table(run, "act_batch_std").reindex_like(rms)
    return (batch_std / rms.where(rms > 0)).replace([np.inf, -np.inf], np.nan)


class RepresentationCollapse(Rule):
    """
    ## What it detects
    A layer whose outputs become the same for every input of the batch (its
    spread across the batch falls towards zero while the signal itself does
    not), or a model whose output is one constant whatever the input.

    ## Why it matters
    A representation that no longer differs between inputs carries no
    information: everything after it can only learn the average answer, and
    the loss stalls at the level of predicting the class frequencies. This
    differs from a healthy converged classifier, whose outputs differ
    strongly between inputs of different classes; collapse makes them equal.
    Causes: excessive weight decay on a layer, a normalisation over the
    wrong axis, a self-supervised objective without its anti-collapse term,
    or a degenerate input pipeline.

    ## How it decides
    Spread = ``act_batch_std / act_rms`` (scale-free: the share of the
    signal that varies across the batch). A module collapses when its median
    spread over the last third of the samples is below ``min_spread`` and
    fell more than ``min_drop`` times from its first samples. The model
    output also counts as collapsed when its spread is below
    ``constant_output`` from the start. Reports the first collapsed module in
    model order.

    The spread above misses a collapse of direction when the norms of the
    outputs grow or differ (``c(x) * v``: every output points along ``v``).
    So the model output is also judged by ``act_dir_spread``, the spread of
    the L2-normalised output as SimSiam monitors it (Chen & He 2021): it
    collapses when its median over the last third of the samples is below
    ``min_dir_spread`` and fell more than ``min_dir_drop`` times from its
    first sample (at initialisation: this collapse can take a few updates).

    ## What to do
    Check the weight decay per parameter group (and that it is not applied to
    a whole layer at 1000x the intended value); check normalisation axes and
    the input pipeline (are all inputs the same?); for self-supervised
    training, add the variance/stop-gradient term of the method.
    """

    code = "ACT003"
    name = "representation-collapse"
    title = "Activations or outputs become the same for every input"
    category = Category.ACTIVATIONS
    severity = Severity.WARNING
    requires = ("layers.act_batch_std", "layers.act_rms")
    priority = 22
    explains = STALLED_LEARNING
    thresholds = (
        Threshold(
            "min_spread",
            0.01,
            "batch spread / rms below which a layer no longer tells inputs apart",
            source="healthy sample runs keep 0.3-1.0 at every layer; 1% is two orders below",
        ),
        Threshold(
            "min_drop",
            10.0,
            "how many times the spread must have fallen from its start",
            source="separates a collapse during training from a layer that is narrow by design",
        ),
        Threshold(
            "constant_output",
            1e-4,
            "output spread below which the output is one constant from the start",
            source="four significant digits identical for every input; healthy classifiers sit at 0.3-1.0",
        ),
        Threshold(
            "min_dir_spread",
            0.2,
            "spread of the L2-normalised output (x sqrt(features)) below which its directions collapsed",
            source="SimSiam (Chen & He 2021, fig. 2): ~1 (1/sqrt(d) unscaled) with the stop-gradient, "
            "-> 0 without; measured on the recorded pair: 0.42 with it, 0.09 without (ACT003/good, "
            "bad_direction)",
        ),
        Threshold(
            "min_dir_drop",
            4.0,
            "how many times the direction spread must have fallen from its start",
            source="the recorded SimSiam falls 2.0x with the stop-gradient (settling in), 9.2x without it",
        ),
        Threshold("min_samples", 3, "fewest activation samples", source="a start and a later third"),
    )

    def check(self, run: Run, t: Mapping[str, float]) -> Iterator[Finding]:
        table = spread(run)
        if len(table) < t["min_samples"]:
            return
        early = curves.head(table, 0.2).median()
        late = table.iloc[-max(1, len(table) // 3) :].median()
        collapsed = [m for m in table.columns if late[m] < t["min_spread"] and late[m] * t["min_drop"] < early[m]]
        constant = late.get(schema.OUTPUT_MODULE, np.nan) < t["constant_output"]
        direction = _direction_collapse(run, t)
        if (constant or direction) and schema.OUTPUT_MODULE not in collapsed:
            collapsed.append(schema.OUTPUT_MODULE)
        if not collapsed:
            return
        first = collapsed[0]
        if direction and first == schema.OUTPUT_MODULE and not constant:
            onset = _collapse_onset(direction.values, direction.early, t["min_dir_spread"])
            message = direction.message
        else:
            onset = _collapse_onset(table[first], early[first], t["min_spread"])
            message = _collapse_message(run, first, early[first], late, collapsed)
        yield self.finding(
            run,
            module=first,
            onset=onset,
            message=message,
            evidence={
                "collapsed": collapsed,
                "early_spread": early[collapsed].to_dict(),
                "late_spread": late[collapsed].to_dict(),
                **({"direction_spread": [direction.early, direction.late]} if direction else {}),
            },
            causes=[
                "weight decay far too strong on a layer",
                "normalisation over the wrong axis",
                "self-supervised objective without its anti-collapse term",
                "identical inputs in the batch",
            ],
            fixes=[
                "check weight decay per parameter group",
                "check normalisation axes and the input pipeline",
                "for self-supervised learning add the method's variance / stop-gradient term",
            ],
        )


@dataclass(frozen=True)
class DirectionCollapse:
    """The model output's direction spread (``act_dir_spread``) over the sampled steps, early and late."""

    values: pd.Series
    early: float
    late: float
    norm_growth: float  # output RMS late / early: a growing norm is what hides this collapse

    @property
    def message(self) -> str:
        grew = f"; its norm grew {self.norm_growth:.2g}x" if self.norm_growth > 1.5 else ""
        return (
            f"the model outputs turn the same way for every input: the spread of their directions "
            f"(L2-normalised, SimSiam's monitor) fell from {self.early:.2g} to {self.late:.2g}{grew}"
        )


def _direction_collapse(run: Run, t: Mapping[str, float]) -> DirectionCollapse | None:
    """The output's direction collapse, when its spread fell below ``min_dir_spread`` by ``min_dir_drop``x."""
    table = layer_table(run, "act_dir_spread")
    if schema.OUTPUT_MODULE not in table.columns:
        return None
    values = table[schema.OUTPUT_MODULE].dropna()
    if len(values) < t["min_samples"]:
        return None
    # Collapse can be over within a few updates: the start is the first sample, at initialisation.
    early, late = float(values.iloc[0]), float(values.iloc[-max(1, len(values) // 3) :].median())
    if not (late < t["min_dir_spread"] and late * t["min_dir_drop"] < early):
        return None
    rms = layer_table(run, "act_rms").get(schema.OUTPUT_MODULE, pd.Series(dtype="float64")).dropna()
    growth = float(rms.iloc[-max(1, len(rms) // 3) :].median() / rms.iloc[0]) if len(rms) else 1.0
    return DirectionCollapse(values, early, late, growth)


def _collapse_onset(values: pd.Series, early: float, min_spread: float) -> float | None:
    """First sampled step where the spread fell below the geometric middle of its start and the floor."""
    middle = np.sqrt(max(early, min_spread) * min_spread)
    below = values[values < middle]
    return float(below.index[0]) if len(below) else None


def _collapse_message(run: Run, first: str, early: float, late: pd.Series, collapsed: list[str]) -> str:
    output = late.get(schema.OUTPUT_MODULE, np.nan)
    if first == schema.OUTPUT_MODULE:
        if output * 10 > early:
            return f"the model output is the same for every input from the start (spread {output:.2g})"
        return f"the model output became the same for every input (spread {early:.2g} -> {output:.2g})"
    message = (
        f"{run.module_label(first)}: spread across the batch fell from {early:.2g} to {late[first]:.2g} of its signal"
    )
    if schema.OUTPUT_MODULE in collapsed:
        message += f"; the model output is the same for every input (spread {output:.2g})"
    return message
