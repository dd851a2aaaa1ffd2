"""Rules that read gradient norms and update ratios: exploding, vanishing, too slow or too fast, missing."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import numpy as np
import pandas as pd

from diagnose import curves
from diagnose.rules.base import Category, Finding, Rule, Severity, Threshold
from diagnose.rules.helpers import STALLED_LEARNING, later_samples, layer_table, modules, vanishing_gradient
from diagnose.run import Run


def global_grad_norm(run: Run) -> pd.Series:
    """The global gradient norm up to the first NaN/Inf.

    Under an AMP GradScaler (``loss_scale`` recorded) overflowing steps are
    routine: the scaler skips them, so they are dropped instead of ending the curve.
    """
    raw = run.series("grad_norm", keep_nan=True)
    return curves.finite(raw) if run.has("loss_scale") else curves.before_nonfinite(raw)


class ExplodingGradients(Rule):
    """
    ## What it detects
    The gradient norm grows by orders of magnitude during the run: the
    global norm, or the norm of one layer. It reports where the growth
    started, how large it got and which layer grew most.

    ## Why it matters
    Each update is the gradient times the learning rate. A gradient that
    grows geometrically means every step throws the weights further than the
    last: the loss soon overflows to Inf/NaN. Clipping hides it from the loss
    curve but not from the pre-clip norm the probes record.

    ## How it decides
    On a log scale (Theil-Sen trend, rolling medians, so single spikes do
    not count): the global norm rises over the run (the 95% interval of its slope is above zero) and
    its highest smoothed level stands ``min_growth`` times above its start.
    Per layer, the same growth between the first and the last samples of a
    layer's own norm. Only the part before any NaN is read (under AMP, the
    overflowing steps the scaler skipped are left out instead).

    ## What to do
    Lower the learning rate (3-10x); clip the gradient norm
    (``clip_grad_norm_(params, 1.0)``); add normalisation (BatchNorm,
    LayerNorm) to deep stacks; check the initialisation of the layer that
    grows most (too large a scale) and, in recurrent nets, the recurrence.
    """

    code = "GRD001"
    assumes_falling_loss = True
    name = "exploding-gradients"
    title = "Gradient norm grows by orders of magnitude"
    category = Category.GRADIENTS
    severity = Severity.ERROR
    requires = ("grad_norm",)
    live = True
    priority = 10
    thresholds = (
        Threshold(
            "min_growth",
            30.0,
            "how many times its start the smoothed norm must reach (30x = 1.5 orders)",
            source="healthy runs in the real-log corpus and sample_runs grow at most ~10x (fine-tuning "
            "warm-ups); the recorded divergence grows >1000x before it overflows",
        ),
        Threshold(
            "min_points",
            10,
            "fewest finite grad-norm points (or layer samples) judged",
            source="a start level and a trend need ~10 points",
        ),
    )

    def check(self, run: Run, t: Mapping[str, float]) -> Iterator[Finding]:
        norm = global_grad_norm(run)
        norm = norm[norm > 0]
        global_growth = _growth(norm, t["min_points"], t["min_growth"])
        layers = _layer_growth(run, t["min_points"])
        worst = max(layers, key=layers.get) if layers else None
        layer_fires = worst is not None and layers[worst] >= t["min_growth"]
        global_fires = global_growth is not None
        if not (global_fires or layer_fires):
            return
        growth, onset = global_growth if global_fires else (None, None)
        yield self._finding(run, norm, growth, onset, worst, layers)

    def _finding(
        self,
        run: Run,
        norm: pd.Series,
        growth: float | None,
        onset: float | None,
        worst: str | None,
        layers: dict[str, float],
    ) -> Finding:
        if growth is not None:
            message = (
                f"gradient norm grows {growth:.3g}x, from {curves.start_level(norm):.3g} to "
                f"{norm.max():.3g}, rising from step {onset:.0f}"
            )
        else:
            message = f"gradient norm of layer {worst} grows {layers[worst]:.3g}x over the run"
        if worst is not None:
            message += f"; fastest-growing layer: {worst} ({layers[worst]:.3g}x)"
        return self.finding(
            run,
            message=message,
            onset=onset,
            module=worst,
            evidence={
                "growth": growth,
                "start": curves.start_level(norm) if len(norm) else None,
                "peak": float(norm.max()) if len(norm) else None,
                "layer_growth": layers,
            },
            causes=[
                "learning rate past the stability limit: each step overshoots further",
                "no normalisation in a deep stack, or too large an initial weight scale",
                "a recurrence whose weights amplify the signal",
            ],
            fixes=[
                "lower the learning rate 3-10x",
                "clip gradients: torch.nn.utils.clip_grad_norm_(params, 1.0)",
                "add BatchNorm/LayerNorm between layers",
                f"check the initialisation of {worst or 'the model'}",
            ],
        )


def _highest_start(norm: pd.Series) -> float:
    """The highest of the first points (those `curves.start_level` takes the median of). Where the norm
    started can be read no closer than its spread there: a norm that swings over orders of magnitude
    from the first steps on (batches sorted by class, each new class a burst) has not grown by a later
    burst that its first burst already came near; the growth must clear this too."""
    count = max(1, min(5, int(np.ceil(len(norm) * 0.05))))
    return float(norm.iloc[:count].max())


def _growth(norm: pd.Series, min_points: float, min_growth: float) -> tuple[float, float] | None:
    """(peak smoothed level / start level, first step past 3x the start) of a rising norm that grew
    at least ``min_growth`` times, else None."""
    if len(norm) < min_points:
        return None
    logged = curves.to_log(norm)
    start = np.log(curves.start_level(norm))
    if not np.exp(logged.max() - start) >= min_growth:
        return None  # no median of three points stands above the highest one: decided without smoothing
    smoothed = curves.rolling_median(logged, 3)
    growth = float(np.exp(smoothed.max() - start))
    if not (growth >= min_growth and smoothed.max() - np.log(_highest_start(norm)) >= np.log(min_growth)):
        return None  # decided without the trend (a Theil-Sen fit, the costly part)
    fit = curves.trend(logged)
    if fit is None or not fit.rising:
        return None
    above = smoothed[smoothed > start + np.log(3.0)]
    onset = float(above.index[0]) if len(above) else float(smoothed.idxmax())
    return growth, onset


def _layer_growth(run: Run, min_points: float) -> dict[str, float]:
    """For each layer with enough samples: its late median gradient norm over its early median."""
    table = layer_table(run, "grad_norm")
    if len(table) < min_points:
        return {}
    early = curves.head(table, 0.2).median()
    late = curves.tail(table, 0.2).median()
    ratio = (late / early).replace([np.inf, -np.inf], np.nan).dropna()
    return {str(k): float(v) for k, v in ratio[early.reindex(ratio.index) > 0].items()}


class VanishingGradients(Rule):
    """
    ## What it detects
    The first layers of the network receive gradients orders of magnitude
    smaller than the last layers: the signal dies on its way back.

    ## Why it matters
    A layer's learning speed is its gradient times the learning rate. When
    the input side gets a millionth of what the output side gets, it barely
    moves: a deep network trains like a shallow one on random features. The
    classic cause is a deep stack of sigmoid/tanh layers without
    normalisation, each multiplying the backward signal by less than 1.

    ## How it decides
    Among the layers with weight matrices (Linear, Conv), in model order, it
    compares the median gradient norm of the first quarter with that of the
    last quarter, over the later half of the layer samples. It fires when
    the first are below ``max_ratio`` of the last and the network has at
    least ``min_layers`` such layers.

    ## What to do
    Use ReLU-family activations (or GELU) instead of sigmoid/tanh in hidden
    layers; add normalisation (BatchNorm, LayerNorm); use He/Kaiming
    initialisation; add residual connections in deep stacks.
    """

    code = "GRD002"
    name = "vanishing-gradients"
    title = "First layers get orders of magnitude less gradient than the last"
    category = Category.GRADIENTS
    severity = Severity.WARNING
    requires = ("layers.grad_norm",)
    priority = 15
    explains = STALLED_LEARNING
    thresholds = (
        Threshold(
            "max_ratio",
            1e-3,
            "first-layer / last-layer gradient norm below which gradients vanish",
            source="three orders of magnitude; healthy sample runs (ReLU, tanh+LayerNorm) stay within 10x; "
            "Glorot & Bengio (2010) show deep sigmoid nets losing orders of magnitude per few layers",
        ),
        Threshold(
            "min_layers",
            4,
            "fewest weight layers for a depth problem",
            source="with fewer layers the first and last quarter are neighbours",
        ),
    )

    def check(self, run: Run, t: Mapping[str, float]) -> Iterator[Finding]:
        found = vanishing_gradient(run, t["max_ratio"], int(t["min_layers"]))
        if found is None:
            return
        first, last, ratio = found["first_layers"], found["last_layers"], found["ratio"]
        yield self.finding(
            run,
            module=first[0],
            message=(
                f"gradient norm of the first layers ({modules(run, first)}: {found['first_norm']:.3g}) is "
                f"{ratio:.2g} of the last layers' ({modules(run, last)}: {found['last_norm']:.3g}) across "
                f"{len(found['per_layer'])} weight layers"
            ),
            evidence=found,
            causes=[
                "deep stack of sigmoid/tanh layers: each divides the backward signal",
                "no normalisation and too small an initial weight scale",
            ],
            fixes=[
                "use ReLU/GELU activations in hidden layers",
                "add BatchNorm/LayerNorm between layers",
                "initialise with torch.nn.init.kaiming_normal_ (ReLU) or xavier_normal_ (tanh)",
                "add residual (skip) connections",
            ],
        )


def _still_far(run: Run, t: Mapping[str, float]) -> bool:
    """True unless the training loss has already fallen below ``min_loss_left`` of its start."""
    loss = curves.finite(run.series("loss"))
    if len(loss) < 4 or not curves.is_positive(loss):
        return True
    return curves.end_level(loss) >= t["min_loss_left"] * curves.start_level(loss)


class UpdateRatioOffScale(Rule):
    """
    ## What it detects
    Layers whose weights change per step far less or far more than the
    usual ~1e-3 of their size: ``||update|| / ||weights||``, the update
    ratio the probes measure around ``optimizer.step()``.

    ## Why it matters
    The ratio is the learning rate as the weights feel it. Around 1e-3 a
    layer learns steadily; near 1e-5 and below it would need hundreds of
    thousands of steps to move; near 0.1 and above the weights are rewritten
    every few steps and training is noise. It points at the learning rate
    per layer, which the loss curve cannot.

    ## How it decides
    Per layer, the median update ratio over the later half of the samples
    (zero updates are left to GRD004). Below ``too_slow`` the layer learns
    too slowly, above ``too_fast`` too fast. One finding per direction,
    naming the layers. Ratios below ``gone`` are not a slow learning rate
    but a gradient that has stopped arriving (dead units, a collapsed
    network): they are left to the rules that name those. Slow updates count
    only while the training loss is still above ``min_loss_left`` of where it
    started: near convergence updates shrink by design (Adam's second moment
    still remembers the large early gradients).

    ## What to do
    Too slow: raise the learning rate (3-10x) or, for some layers only,
    check their parameter group (a learning rate or a scheduler that went to
    zero). Too fast: lower the learning rate, add warm-up, check the weight
    decay and the parameter groups.
    """

    code = "GRD003"
    name = "update-ratio-off-scale"
    title = "Weights change far too little or too much per step"
    category = Category.GRADIENTS
    severity = Severity.WARNING
    requires = ("layers.update_ratio",)
    priority = 18
    explains = STALLED_LEARNING
    thresholds = (
        Threshold(
            "too_slow",
            1e-5,
            "median update/weight ratio below which a layer barely learns",
            source="two orders of magnitude below the ~1e-3 of Karpathy, 'A Recipe for Training Neural "
            "Networks' (2019) and CS231n; healthy sample runs sit at 1e-3 to 3e-2",
        ),
        Threshold(
            "too_fast",
            0.1,
            "median update/weight ratio above which a layer is rewritten every few steps",
            source="two orders of magnitude above Karpathy's / CS231n's ~1e-3",
        ),
        Threshold(
            "min_loss_left",
            0.5,
            "training loss at the end over its start above which slow updates count",
            source="an overfitting held-out run that fell 99% shows 5e-6 in its first layer at the end; the "
            "runs that are really too slow (sample_runs/, held-out SGD at 1e-4) end within 2% of "
            "their start",
        ),
        Threshold(
            "gone",
            1e-9,
            "median ratio below which the layer gets no gradient to speak of",
            source="even Adam at a learning rate of 1e-9 moves weights of scale 0.05 by ~2e-8 a step; a "
            "network killed by a learning rate of 1.0 in the held-out checks shows 1e-11",
        ),
    )

    def check(self, run: Run, t: Mapping[str, float]) -> Iterator[Finding]:
        ratios = later_samples(layer_table(run, "update_ratio"))
        medians = ratios[ratios > 0].median().dropna()
        if medians.empty:
            return
        slow = medians[(medians < t["too_slow"]) & (medians >= t["gone"])] if _still_far(run, t) else medians[:0]
        fast = medians[medians > t["too_fast"]]
        if len(slow):
            yield self._finding(run, slow, medians, "slow", t["too_slow"])
        if len(fast):
            yield self._finding(run, fast, medians, "fast", t["too_fast"])

    def _finding(self, run: Run, off: pd.Series, medians: pd.Series, way: str, limit: float) -> Finding:
        layers = list(off.index)
        scope = "every layer" if len(off) == len(medians) else f"{len(off)} of {len(medians)} layers"
        worst = off.idxmin() if way == "slow" else off.idxmax()
        if way == "slow":
            fixes = [
                "raise the learning rate 3-10x",
                "check the layer's parameter group: learning rate or scheduler at (near) zero",
                "check that the weights are not tiny-gradient by design (frozen)",
            ]
        else:
            fixes = ["lower the learning rate 3-10x", "add a warm-up", "check weight decay and parameter groups"]
        return self.finding(
            run,
            module=str(worst),
            message=(
                f"update/weight ratio too {way} in {scope} ({modules(run, layers)}): "
                f"median {off[worst]:.2g} at {run.module_label(str(worst))}, "
                f"{'below' if way == 'slow' else 'above'} {limit:g} (healthy ~1e-3)"
            ),
            evidence={"direction": way, "per_layer": medians.to_dict(), "layers": layers},
            causes=[f"learning rate too {'low' if way == 'slow' else 'high'} for these weights"],
            fixes=fixes,
        )


class LayerWithoutGradient(Rule):
    """
    ## What it detects
    Trainable layers that never receive a gradient (or only zeros) while the
    rest of the model does: a branch cut off from the loss.

    ## Why it matters
    Parameters without gradient never change: the layer stays at its
    initialisation for the whole run while the optimizer pays for it. The
    usual causes are a ``.detach()``, ``torch.no_grad()`` or ``.item()`` /
    ``.numpy()`` round trip in ``forward``, a branch whose output is not
    used in the loss, or a module defined but never called. Frozen
    parameters (``requires_grad=False``) are not trainable and not counted.

    ## How it decides
    A module counts as trainable when the probes recorded its parameter norm
    (trainable parameters only). It fires when such a module has no gradient
    norm in any layer-gradient sample, or only zeros, while at least one
    other module has a non-zero one.

    ## What to do
    Look for ``.detach()``, ``with torch.no_grad()``, ``.item()``/``.numpy()``
    on the path from that module to the loss; check that its output is
    used; if it should be frozen, set ``requires_grad_(False)`` and leave it
    out of the optimizer.
    """

    code = "GRD004"
    name = "layer-without-gradient"
    title = "Trainable layer never receives a gradient"
    category = Category.GRADIENTS
    severity = Severity.WARNING
    requires = ("layers.grad_norm", "layers.param_norm")
    priority = 15

    def check(self, run: Run, t: Mapping[str, float]) -> Iterator[Finding]:
        grads = layer_table(run, "grad_norm")
        trainable = list(layer_table(run, "param_norm").columns)
        peak = grads.max().reindex(trainable)
        without = [m for m in trainable if not (peak.get(m, 0) > 0)]
        if not without or not (peak > 0).any():
            return
        yield self.finding(
            run,
            module=without[0],
            message=(
                f"{len(without)} of {len(trainable)} trainable modules never get a non-zero gradient: "
                f"{modules(run, without)}"
            ),
            evidence={"modules": without, "trainable": len(trainable), "samples": len(grads)},
            causes=[
                "a .detach(), torch.no_grad() or .item() on the path from the module to the loss",
                "the module's output is not used in the loss",
                "the module is never called in forward",
            ],
            fixes=[
                "remove the .detach()/no_grad()/.item() between the module and the loss",
                "if the module should stay fixed: requires_grad_(False) and leave it out of the optimizer",
            ],
        )
