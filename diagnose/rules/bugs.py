"""Rules that name a mistake in the training script, from the probes' bug signatures.

These are root causes: each declares the curve-level symptoms it explains, so
that the engine lists those under it instead of next to it, and the fixes
come from the bug ("call optimizer.zero_grad() every step") rather than from
the symptom ("lower the learning rate"). Every decision is a pure function in
:mod:`diagnose.rules.bug_signatures`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from diagnose import curves
from diagnose.rules import bug_signatures as sig
from diagnose.rules.base import Category, Finding, Rule, Severity, Threshold
from diagnose.rules.helpers import event_records, functional_activations, listing, validation_loss, vanishing_gradient
from diagnose.rules.helpers import modules as labelled
from diagnose.run import Run
from diagnose.runfile import schema

# Curve-level symptoms a broken training loop produces; each bug rule explains a subset. A loss the
# bug sends off also sends the validation loss off: its rise (OVF004) and blow-up (NF003) are the same
# symptom, seen on the evaluations.
_LOSS_SHAPE = ("LR001", "LR002", "LR003", "PLT001", "CH001", "SPK001", "NOI001", "BUG024", "OVF004", "NF003")
_STALL = ("PLT001", "PLT002", "CH001", "CH003", "LR003", "GRD003", "BUG024")


def _sampled(run: Run, column: str) -> Any:
    return curves.finite(run.series(column))


def _layer_columns(run: Run, column: str) -> dict[str, list[float]]:
    table = run.layer_series(column)
    return {module: table[module].dropna().tolist() for module in table.columns} if not table.empty else {}


class GradientsNotReset(Rule):
    """
    ## What it detects
    The training loop does not reset the gradients between optimizer steps:
    when a step's first backward begins, the optimizer's parameters still
    hold the previous steps' gradients, so every step adds to the pile.

    ## Why it matters
    ``loss.backward()`` adds to ``.grad``; it never replaces it. Without
    ``optimizer.zero_grad()`` each update is the sum of every gradient so
    far: the steps grow without bound, the loss bounces and then rises, and it
    looks exactly like a learning rate that is too high, although the same
    rate trains fine once the gradients are reset (pytorch/pytorch#47175 has
    asked for a warning about this since 2020).

    ## How it decides
    Needs ``grad_carried`` (the probes, on sampled steps). A gradient is
    carried when it was present at the step's first forward and is non-zero
    when the step's first backward begins (a ``zero_grad()`` between forward
    and backward is a reset). It fires when at least ``min_share`` of the
    sampled steps after the first carry gradients; at fewer (but at least
    ``partial_share``) the gradients are reset only now and then
    (``zero_grad()`` once per epoch).

    ## What to do
    Call ``optimizer.zero_grad()`` once per optimizer step, inside the batch
    loop (before ``loss.backward()``); under gradient accumulation, after each
    ``optimizer.step()``.
    """

    code = "BUG001"
    live = True
    name = "gradients-not-reset"
    title = "Gradients are never reset: call optimizer.zero_grad() every step"
    category = Category.BUGS
    severity = Severity.ERROR
    requires = ("grad_carried",)
    priority = 3
    explains = (*_LOSS_SHAPE, "GRD001", "GRD003", "NF001", "ACT001", "ACT003", "LR004")
    thresholds = (
        Threshold(
            "min_share",
            0.8,
            "share of sampled steps with carried gradients that means never reset",
            source="a loop that never resets carries at every step after the first",
        ),
        Threshold(
            "partial_share",
            0.3,
            "share that means reset only now and then",
            source="zero_grad() once per epoch of 3+ steps carries at 2/3 or more of the steps",
        ),
    )

    def check(self, run: Run, t: Mapping[str, float]) -> Iterator[Finding]:
        carried = _sampled(run, "grad_carried")
        carried = carried[carried.index > carried.index.min()] if len(carried) else carried
        norms = run.series("grad_norm").reindex(carried.index)
        found = sig.carried_gradients(carried.to_numpy(), norms.to_numpy(), t["partial_share"])
        if found is None:
            return
        growth = sig.gradient_growth(run.series("grad_norm").to_numpy())
        always = found["share"] >= t["min_share"]
        grown = f"; the gradient norm grew {growth:.3g}x over the run" if math.isfinite(growth) else ""
        if always:
            message = (
                f"gradients were still populated when backward began at {found['carried_steps']} of "
                f"{found['sampled_steps']} sampled steps after the first{grown}: optimizer.zero_grad() "
                f"is never called, so every step adds the new gradient to all the old ones"
            )
        else:
            message = (
                f"gradients were still populated when backward began at {found['carried_steps']} of "
                f"{found['sampled_steps']} sampled steps: they are reset only now and then "
                f"(optimizer.zero_grad() outside the batch loop, once per epoch?){grown}"
            )
        yield self.finding(
            run,
            message=message,
            onset=float(carried[carried > 0].index[0]),
            evidence={**found, "grad_norm_growth": growth},
            confidence=0.95 if always else 0.8,
            causes=[
                "optimizer.zero_grad() missing from the training loop, or called once per epoch "
                "instead of once per step"
            ],
            fixes=[
                "call optimizer.zero_grad() before every loss.backward() (inside the batch loop)",
                "look for: a loop with loss.backward(); optimizer.step() and no zero_grad() between steps",
            ],
        )


class ParametersOutsideOptimizer(Rule):
    """
    ## What it detects
    Trainable parameters receive gradients but belong to no optimizer
    parameter group: the optimizer was built on part of the model.

    ## Why it matters
    Those parameters never move, and ``optimizer.zero_grad()`` never resets
    their gradients, which pile up step after step: the gradient norm grows
    as if the gradients were exploding, while the layers that do train try
    to make up for the frozen ones.

    ## How it decides
    Needs the probes' ``unoptimized`` event: parameters that had a gradient
    at the first step, are in no parameter group of the watched optimizer,
    and had not moved three steps later (so a second optimizer that trains
    them does not count). It fires for any parameter in it; the message
    gives the share of the trainable parameters.

    ## What to do
    Build the optimizer on every trainable parameter:
    ``torch.optim.AdamW(model.parameters(), ...)``; when the model changes
    after the optimizer was made (a new head, ``model.to()`` on a copy),
    create the optimizer after it. To freeze layers on purpose, set
    ``requires_grad_(False)`` on them.
    """

    code = "BUG002"
    live = True
    name = "parameters-outside-optimizer"
    title = "Parameters get gradients but are not in the optimizer"
    category = Category.BUGS
    severity = Severity.ERROR
    requires = ("events",)
    priority = 3
    explains = (*_STALL, "GRD001", "GRD004", "BUG001", "BUG003", "BUG016", "BUG017", "LR001", "SPK001")

    def check(self, run: Run, t: Mapping[str, float]) -> Iterator[Finding]:
        for event in event_records(run, schema.EV_UNOPTIMIZED)[:1]:
            share = event["numel"] / event["trainable_numel"] if event.get("trainable_numel") else math.nan
            modules = labelled(run, event.get("modules", []), most=8)
            yield self.finding(
                run,
                message=(
                    f"{event['count']:g} parameter tensor(s) ({event['numel']:g} values, {share:.0%} of the "
                    f"trainable parameters) in {modules} received gradients but are in no optimizer "
                    f"parameter group: they never move, and their gradients are never reset"
                ),
                onset=event.get("step"),
                module=str(event["modules"][0]) if event.get("modules") else None,
                evidence={
                    "tensors": event["count"],
                    "values": event["numel"],
                    "share": share,
                    "modules": event.get("modules", []),
                },
                confidence=0.95,
                causes=[
                    "the optimizer was built on part of the model (one submodule's parameters), or before "
                    "layers were added or replaced"
                ],
                fixes=[
                    "build the optimizer on model.parameters() after the model is complete",
                    "look for: torch.optim.X(model.<submodule>.parameters(), ...) or an optimizer made before "
                    "a new head was attached; freeze on purpose with requires_grad_(False)",
                ],
            )


class UpdatesExactlyZero(Rule):
    """
    ## What it detects
    Layers whose parameters receive a gradient but whose update is exactly
    zero at every sampled step.

    ## Why it matters
    A layer that gets a gradient and never moves is frozen by the optimizer:
    a parameter group with learning rate 0, a mask, or ``optimizer.step()``
    applied to a copy of the parameters. The rest of the model trains around it.

    ## How it decides
    Needs the per-layer ``update_ratio`` and ``grad_norm``: every one of at
    least ``min_samples`` sampled update ratios is exactly 0 while a
    gradient norm of the layer is positive.

    ## What to do
    Check the learning rate of each parameter group
    (``[g["lr"] for g in optimizer.param_groups]``) and that the optimizer
    holds the model's own parameter tensors (not copies made before
    ``model.to(device)``).
    """

    code = "BUG003"
    name = "updates-exactly-zero"
    title = "Layers get gradients but their weights never change"
    category = Category.BUGS
    severity = Severity.ERROR
    requires = ("layers.update_ratio", "layers.grad_norm")
    priority = 4
    explains = _STALL
    thresholds = (Threshold("min_samples", 2, "sampled updates needed", source="one sample can be a skipped step"),)

    def check(self, run: Run, t: Mapping[str, float]) -> Iterator[Finding]:
        frozen = sig.frozen_layers(
            _layer_columns(run, "grad_norm"), _layer_columns(run, "update_ratio"), int(t["min_samples"])
        )
        if not frozen:
            return
        yield self.finding(
            run,
            message=(
                f"{len(frozen)} layer(s) ({labelled(run, frozen, most=8)}) received gradients, but every sampled "
                f"update of their weights was exactly zero: the optimizer does not move them"
            ),
            module=frozen[0],
            evidence={"layers": frozen},
            confidence=0.9,
            causes=["a parameter group with learning rate 0", "the optimizer holds copies of the parameters"],
            fixes=[
                "print [g['lr'] for g in optimizer.param_groups] and check each group's parameters",
                "create the optimizer after model.to(device)",
            ],
        )


class GradientExactlyZero(Rule):
    """
    ## What it detects
    The global gradient norm is exactly zero at most steps: nothing the loss
    computes flows back to the weights.

    ## Why it matters
    An exactly zero gradient is not a small one: it means the graph from the
    loss to the parameters is cut (``.detach()``, ``.item()``, ``torch.no_grad()``,
    an ``argmax`` or rounding in the loss path) or every unit is dead. The
    model cannot learn, whatever the learning rate.

    ## How it decides
    Needs ``grad_norm``. It fires when at least ``min_share`` of the finite
    values are exactly 0.

    ## What to do
    Find where the loss stops depending on the weights: check
    ``loss.grad_fn`` and ``output.requires_grad``; remove ``.detach()``,
    ``.item()``, ``.numpy()`` or ``torch.no_grad()`` between the model and the
    loss; replace ``argmax``/``round`` in the loss with a differentiable form.
    """

    code = "BUG004"
    live = True
    name = "gradient-exactly-zero"
    title = "Gradient norm exactly zero: the loss does not reach the weights"
    category = Category.BUGS
    severity = Severity.ERROR
    requires = ("grad_norm",)
    priority = 3
    explains = (*_STALL, "GRD002", "GRD004", "ACT001", "BUG003")
    thresholds = (
        Threshold(
            "min_share",
            0.9,
            "share of steps with a zero gradient norm",
            source="a float gradient is exactly 0 only when no path reaches the weights",
        ),
    )

    def check(self, run: Run, t: Mapping[str, float]) -> Iterator[Finding]:
        found = sig.exactly_zero_gradients(run.series("grad_norm").to_numpy(), t["min_share"])
        if found is None:
            return
        yield self.finding(
            run,
            message=(
                f"the gradient norm was exactly 0 at {found['zero_steps']} of {found['steps']} steps: the "
                f"loss does not depend on any weight through a differentiable path"
            ),
            evidence=found,
            confidence=0.9,
            causes=["the graph is cut between the model and the loss (.detach(), .item(), torch.no_grad(), argmax)"],
            fixes=[
                "check loss.grad_fn and that the model output requires grad",
                "look for: .detach(), .item(), .numpy(), torch.no_grad() or argmax/round between the model "
                "output and the loss",
            ],
        )


class ModulesInEvalMode(Rule):
    """
    ## What it detects
    The optimizer steps while dropout or normalisation modules are in eval
    mode (``module.training`` False): ``model.eval()`` left on for training,
    or a BatchNorm switched to eval by a helper.

    ## Why it matters
    In eval mode dropout does nothing and BatchNorm normalises with its
    running statistics instead of the batch's, and stops updating them. The
    model trains without the regularisation it was built with and overfits,
    or BatchNorm normalises with statistics that do not fit the activations,
    which looks like an unstable learning rate.

    ## How it decides
    Needs the probes' ``eval_mode`` event (the mode is read before sampled
    optimizer steps). Modules whose parameters are all frozen are not counted
    (a frozen BatchNorm in eval mode is the usual way to fine-tune). The whole
    model in eval mode is an error; single modules a warning.

    ## What to do
    Call ``model.train()`` at the start of every training epoch (after each
    evaluation, which calls ``model.eval()``).
    """

    code = "BUG005"
    live = True
    name = "modules-in-eval-mode"
    title = "Training in eval mode: dropout/BatchNorm are switched off, call model.train()"
    category = Category.BUGS
    severity = Severity.WARNING
    requires = ("events",)
    priority = 4
    explains = (*_LOSS_SHAPE, "OVF001", "OVF002", "GRD001", "GRD003", "NF001", "ACT001", "ACT003")

    def check(self, run: Run, t: Mapping[str, float]) -> Iterator[Finding]:
        found = [e for e in event_records(run, schema.EV_EVAL_MODE) if e.get("count")]
        if not found:
            return
        event = found[0]
        whole = not event.get("model_training", 1)
        types = ", ".join(event.get("types", []))
        where = (
            "the whole model was in eval mode (model.eval())"
            if whole
            else f"{event['count']:g} of {event['sensitive']:g} dropout/normalisation modules were in eval mode"
        )
        yield self.finding(
            run,
            message=(
                f"while the optimizer stepped, {where} from step {event['step']:g}: {types} "
                f"{'behave' if event['count'] > 1 else 'behaves'} as at inference (no dropout, BatchNorm "
                f"with frozen running statistics)"
            ),
            onset=event.get("step"),
            module=str(event["modules"][0]) if event.get("modules") and not whole else None,
            evidence={
                "modules_in_eval": event["count"],
                "mode_sensitive_modules": event["sensitive"],
                "model_training": bool(event.get("model_training", 1)),
                "modules": event.get("modules", []),
            },
            confidence=0.9,
            severity=Severity.ERROR if whole else None,
            causes=["model.eval() called for an evaluation and model.train() not called again before training"],
            fixes=[
                "call model.train() at the start of every training epoch",
                "look for: model.eval() (or an evaluate() helper) before the training loop with no "
                "model.train() after it",
            ],
        )


_MISMATCH_TEXT = {
    "softmax-into-cross-entropy": (
        "softmax fed into CrossEntropyLoss",
        "CrossEntropyLoss was given probabilities (rows in [{pred_min:.3g}, {pred_max:.3g}] summing to 1): it "
        "applies log_softmax itself, so the loss cannot go below {floor}",
        "remove the softmax before CrossEntropyLoss: it expects raw logits",
        "look for: softmax/Softmax as the last step of forward() or applied to the output before the loss",
    ),
    "nll-on-raw-scores": (
        "NLLLoss on raw scores",
        "NLLLoss was given values in [{pred_min:.3g}, {pred_max:.3g}] that are not log-probabilities: it "
        "only negates the true class's score, so the loss falls without bound",
        "apply log_softmax before NLLLoss, or use CrossEntropyLoss on the logits",
        "look for: NLLLoss() with a model whose last layer is Linear (no LogSoftmax)",
    ),
    "sigmoid-into-bce-with-logits": (
        "sigmoid fed into BCEWithLogitsLoss",
        "BCEWithLogitsLoss was given values in [{pred_min:.3g}, {pred_max:.3g}]: probabilities, not logits; it "
        "applies the sigmoid itself, so its outputs stay between 0.5 and 0.73 and the loss floors",
        "remove the sigmoid before BCEWithLogitsLoss (or use BCELoss on the probabilities)",
        "look for: torch.sigmoid/nn.Sigmoid as the last step of forward()",
    ),
    "logits-clamped-at-zero": (
        "a ReLU after the last layer",
        "the loss was given outputs clamped at 0 ({zero_frac:.0%} exactly zero): negative logits are cut off, "
        "so the model cannot make a class unlikely",
        "remove the ReLU (or other clamp) after the last layer: the loss expects unbounded logits",
        "look for: an activation after the final Linear in forward() or nn.Sequential",
    ),
    "regression-clamped-at-zero": (
        "a ReLU after the output layer of a regression model",
        "the predictions are clamped at 0 ({zero_frac:.0%} exactly zero, none negative) while {negative_targets:.0%} "
        "of the targets are negative: those targets cannot be reached and the clamped outputs pass back no gradient",
        "remove the ReLU (or other clamp) after the last layer: a target of both signs needs an unbounded output",
        "look for: nn.ReLU()/F.relu/clamp(min=0) as the last step of forward() or nn.Sequential",
    ),
}


class OutputDoesNotFitLoss(Rule):
    """
    ## What it detects
    What the model gives the loss does not fit the loss function:
    probabilities fed into ``CrossEntropyLoss`` (which expects logits),
    raw scores into ``NLLLoss`` (which expects log-probabilities),
    probabilities into ``BCEWithLogitsLoss``, or outputs clamped at zero by
    a ReLU after the last layer (logits, or regression predictions for
    targets of both signs).

    ## Why it matters
    The loss still runs and still falls a little, so nothing fails; but it
    optimises the wrong quantity. Softmax into cross-entropy floors the loss
    at ``log(1 + (K - 1) / e)`` (1.461 for 10 classes) and flattens the
    gradients; NLLLoss on raw scores drives the loss to minus infinity.

    ## How it decides
    Needs the probes' ``loss_function`` event (the loss module called on the
    output) or ``metadata.loss_fn``, and the ``pred_*`` statistics (median
    over sampled steps): probabilities are values in [0, 1] whose rows sum
    to 1 within ``tolerance``; log-probabilities have a row ``logsumexp``
    within ``tolerance`` of 0 and no value above it; clamped outputs have a
    minimum of exactly 0 with a tenth or more of them at 0 (for a regression
    loss, with a tenth or more of the targets, ``target_neg_frac``, below 0).

    ## What to do
    Give each loss what it expects: logits to ``CrossEntropyLoss`` and
    ``BCEWithLogitsLoss``, ``log_softmax`` outputs to ``NLLLoss``; no
    activation after the last layer.
    """

    code = "BUG006"
    live = True
    name = "output-does-not-fit-loss"
    title = "The model output does not fit the loss function"
    category = Category.BUGS
    severity = Severity.ERROR
    requires = ("pred_min",)
    priority = 3
    explains = (*_LOSS_SHAPE, "GRD003", "ACT001", "ACT002", "INIT001", "ZL001", "LR004", "BUG014", "BUG015", "BUG007")
    thresholds = (
        Threshold(
            "tolerance",
            1e-3,
            "how close a row sum (or logsumexp) must be to 1 (0)",
            source="float32 softmax rows sum to 1 within ~1e-6",
        ),
    )

    def check(self, run: Run, t: Mapping[str, float]) -> Iterator[Finding]:
        loss_fn = _loss_function(run)
        if loss_fn is None:
            return
        stats = {
            c: float(_sampled(run, c).median())
            for c in ("pred_min", "pred_max", "pred_rowsum_dev", "pred_lse_dev", "pred_zero_frac", "target_neg_frac")
            if run.has(c)
        }
        found = sig.output_loss_mismatch(loss_fn, stats, t["tolerance"])
        if found is None:
            return
        bug, text, fix, pattern = _MISMATCH_TEXT[found["kind"]]
        floor = (
            f"{sig.softmax_ce_floor(run.num_classes):.4g} for {run.num_classes} classes"
            if run.num_classes
            else "log(1 + (K - 1)/e) for K classes"
        )
        yield self.finding(
            run,
            message=f"{bug}: " + text.format(floor=floor, **{k: v for k, v in found.items() if k != "kind"}),
            evidence={"loss_fn": loss_fn, **found},
            confidence=0.95,
            causes=[bug],
            fixes=[fix, pattern],
        )


def _loss_function(run: Run) -> str | None:
    described = event_records(run, schema.EV_LOSS_FUNCTION)
    if described:
        return str(described[-1]["loss_fn"])
    named = run.metadata.get("loss_fn")
    return str(named) if named else None


class SoftmaxCrossEntropyFloor(Rule):
    """
    ## What it detects
    From the loss curve alone: a cross-entropy loss that flattens at the
    floor of softmax probabilities fed into ``CrossEntropyLoss``,
    ``log(1 + (K - 1) / e)`` for K classes (1.461 for 10, 0.313 for 2), and
    never goes below it.

    ## Why it matters
    ``CrossEntropyLoss`` applies ``log_softmax`` to its input; fed
    probabilities in [0, 1], the logit gap it sees is at most 1, so even a
    perfect classifier scores ``log(1 + (K - 1)/e)``. A loss resting exactly
    there is this bug's fingerprint, not a plateau to push through with a
    higher learning rate.

    ## How it decides
    Needs ``loss`` and ``num_classes`` in the metadata, and is skipped when
    the probes saw the loss input (``OutputDoesNotFitLoss`` decides then).
    The lowest tenth of the loss values sits within ``tolerance`` (relative)
    above the floor, and no value falls below the floor by more than that.

    ## What to do
    Remove the softmax before ``CrossEntropyLoss``: it expects raw logits and
    applies ``log_softmax`` itself (take ``softmax`` only for predictions).
    """

    code = "BUG007"
    name = "softmax-cross-entropy-floor"
    title = "Loss rests on the softmax-into-cross-entropy floor"
    category = Category.BUGS
    severity = Severity.ERROR
    requires = ("loss",)
    priority = 4
    explains = _LOSS_SHAPE
    thresholds = (
        Threshold(
            "tolerance",
            0.03,
            "relative distance above the floor that counts as resting on it",
            source="the floor is approached from above as the model sharpens; 3% covers "
            "float32 and a batch-mean of near-perfect rows",
        ),
    )

    def check(self, run: Run, t: Mapping[str, float]) -> Iterator[Finding]:
        classes = run.num_classes
        if classes is None or run.has("pred_min") or (run.task and run.task not in ("binary", "multiclass")):
            return
        loss = curves.finite(run.series("loss"))
        if len(loss) < 20:
            return
        floor = sig.softmax_ce_floor(classes)
        if float(loss.min()) < floor * (1 - t["tolerance"]):  # below the floor: most runs, judged without the decile
            return
        low = float(np.quantile(loss.to_numpy(), 0.1))
        if not low <= floor * (1 + t["tolerance"]):
            return
        yield self.finding(
            run,
            message=(
                f"the loss bottoms out at {loss.min():.4g}, on the floor log(1 + (K-1)/e) = {floor:.4g} "
                f"for K = {classes} classes that CrossEntropyLoss cannot go below when it is fed "
                f"softmax probabilities instead of logits"
            ),
            evidence={"floor": floor, "min_loss": float(loss.min()), "low_decile": low, "num_classes": classes},
            confidence=0.7,
            causes=["softmax applied before CrossEntropyLoss"],
            fixes=[
                "remove the softmax before CrossEntropyLoss: it expects raw logits",
                "look for: softmax/Softmax as the last step of forward()",
            ],
        )


class LossBroadcastWarning(Rule):
    """
    ## What it detects
    The loss warned that the target's shape differs from the output's and
    broadcast them (``MSELoss``: "Using a target size ... that is different
    to the input size"), or the probes saw the loss given shapes that
    broadcast (``(N, 1)`` against ``(N,)``).

    ## Why it matters
    Broadcasting ``(N, 1)`` against ``(N,)`` compares every output with every
    target: the loss becomes the distance to the mean target, the best the
    model can do is predict that mean for every input, and the loss floors at
    the variance of the targets (the mean-only floor).

    ## How it decides
    Needs events: the ``warning`` event with that message, or a
    ``loss_function`` event whose input and target shapes differ with the
    same dtype.

    ## What to do
    Make the shapes of output and target equal before the loss:
    ``loss_fn(output.squeeze(-1), target)`` or ``target.unsqueeze(-1)``.
    """

    code = "BUG008"
    name = "loss-broadcasts-target"
    title = "The loss broadcasts the target against the output: shapes differ"
    category = Category.BUGS
    severity = Severity.ERROR
    requires = ("events",)
    priority = 3
    explains = (*_LOSS_SHAPE, "GRD003")

    def check(self, run: Run, t: Mapping[str, float]) -> Iterator[Finding]:
        warned = sig.broadcast_warning([str(e.get("message", "")) for e in event_records(run, schema.EV_WARNING)])
        shapes = next((e for e in event_records(run, schema.EV_LOSS_FUNCTION) if e.get("broadcast")), None)
        if warned is None and shapes is None:
            return
        detail = (
            (
                f"{shapes['loss_fn']} was given an output of shape {tuple(shapes['input_shape'])} and a target "
                f"of shape {tuple(shapes['target_shape'])}"
            )
            if shapes
            else f"the loss warned: {warned[:160]}"
        )
        yield self.finding(
            run,
            message=(
                f"{detail}: broadcasting compares every output with every target, so the model can only "
                f"learn the mean target and the loss floors at the targets' variance"
            ),
            onset=(shapes or {}).get("step"),
            evidence={
                "warning": warned,
                "input_shape": (shapes or {}).get("input_shape"),
                "target_shape": (shapes or {}).get("target_shape"),
            },
            confidence=0.95,
            causes=["output of shape (N, 1) against a target of shape (N,)"],
            fixes=[
                "make the shapes equal: loss_fn(output.squeeze(-1), target) or target.unsqueeze(-1)",
                "look for: a regression head nn.Linear(..., 1) with a 1-d target",
            ],
        )


class InputsNotNormalised(Rule):
    """
    ## What it detects
    The features reaching the first layer are far from unit scale (raw
    values in the hundreds or thousands): the inputs were not standardised.

    ## Why it matters
    The first layer's pre-activations, and its gradients, scale with the
    inputs: a learning rate that suits standardised data is orders of
    magnitude too high, units saturate or die, and the loss spikes or
    diverges. Standardising inputs to zero mean and unit variance is the
    first recommendation of LeCun et al. 1998 ("Efficient BackProp", §4.3).

    ## How it decides
    Needs the per-layer ``in_std`` / ``in_mean`` of the first Linear or
    convolution (the probes, on sampled steps): fires when the larger of
    |mean| and std exceeds ``max_scale``.

    ## What to do
    Standardise the inputs with the training set's statistics
    (``(x - mean) / std`` per feature, ``transforms.Normalize`` for images,
    ``StandardScaler`` for tables), or put a normalisation layer first.
    """

    code = "BUG009"
    name = "raw-input-features"
    title = "Inputs are not normalised: raw features reach the first layer"
    category = Category.BUGS
    severity = Severity.WARNING
    requires = ("layers.in_std",)
    priority = 6
    explains = (*_LOSS_SHAPE, "NF001", "GRD001", "ACT001", "ACT002", "INIT001", "GRD003")
    thresholds = (
        Threshold(
            "max_scale",
            20.0,
            "largest |mean| or std of the first layer's input",
            source="standardised features have std 1; images in [0, 255] have std ~60",
        ),
    )

    def check(self, run: Run, t: Mapping[str, float]) -> Iterator[Finding]:
        first = _first_layer_with(run, "in_std")
        if first is None or _normalised_after(run, first):
            return
        stats = {c: float(run.layer_series(c)[first].median()) for c in ("in_absmax", "in_std", "in_mean")}
        found = sig.unnormalised_inputs(stats["in_absmax"], stats["in_std"], stats["in_mean"], t["max_scale"])
        if found is None:
            return
        yield self.finding(
            run,
            message=(
                f"the input of the first layer ({first}) has std {stats['in_std']:.3g}, mean "
                f"{stats['in_mean']:.3g} and values up to {stats['in_absmax']:.3g}: the features were not "
                f"standardised"
            ),
            module=first,
            evidence=found,
            confidence=0.85,
            causes=["raw features (pixel values, prices, counts) fed to the model unscaled"],
            fixes=[
                "standardise the inputs with the training set's mean and std (transforms.Normalize, StandardScaler)",
                "look for: a dataset that returns raw values with no normalisation step",
            ],
        )


def _normalised_after(run: Run, module: str) -> bool:
    """True when the module right after ``module`` normalises (BatchNorm/LayerNorm/GroupNorm...):
    raw features into a first layer followed by a normalisation are trained at unit scale."""
    modules = [m for m in (run.meta.get("model") or {}).get("modules") or [] if isinstance(m, (list, tuple))]
    names = [m[0] for m in modules]
    if module not in names or names.index(module) + 1 >= len(names):
        return False
    return "Norm" in str(modules[names.index(module) + 1][1])


def _first_layer_with(run: Run, column: str) -> str | None:
    table = run.layer_series(column)
    return table.columns[0] if not table.empty else None


class IdenticalUnits(Rule):
    """
    ## What it detects
    A layer whose weight rows are all identical at the start and still
    identical after training steps: constant (or symmetric) initialisation.

    ## Why it matters
    Units with identical weights get identical gradients and stay identical
    for ever: a layer of 256 units computes one feature. The loss falls a
    little and stalls, whatever the learning rate.

    ## How it decides
    Needs the probes' ``duplicate_rows`` events: a layer (not the output
    layer, whose rows separate by themselves) with one distinct row at the
    start; for an all-zero matrix (a zero-initialised adapter separates by
    itself) also at a check during training (after steps 10 and 100).

    ## What to do
    Use a random initialisation (PyTorch's default, ``kaiming_normal_``,
    ``xavier_uniform_``); never ``nn.init.constant_`` or ``zeros_`` on hidden
    weight matrices.
    """

    code = "BUG010"
    live = True
    name = "identical-units"
    title = "Units are identical: constant weight initialisation"
    category = Category.BUGS
    severity = Severity.ERROR
    requires = ("events",)
    priority = 3
    explains = (*_STALL, "ACT003", "GRD002")

    def check(self, run: Run, t: Mapping[str, float]) -> Iterator[Finding]:
        order = run.module_order()
        found = sig.identical_units(event_records(run, schema.EV_DUPLICATE_ROWS))
        found = [e for e in found if _has_layer_after(order, e["module"], run)]
        if not found:
            return
        names = listing([f"{run.module_label(e['module'])} ({e['rows']:g} rows)" for e in found], 6)
        yield self.finding(
            run,
            message=(
                f"every row of the weights of {names} was the same at the start"
                f"{' and still was after training steps' if found[0]['stayed'] else ''}: the units of the layer "
                f"start identical, get the same gradient (up to their biases) and stay (nearly) identical"
            ),
            module=str(found[0]["module"]),
            evidence={"layers": [e["module"] for e in found], "rows": [e["rows"] for e in found]},
            confidence=0.95,
            causes=["weights initialised to a constant (nn.init.constant_, zeros_, fill_)"],
            fixes=[
                "initialise weights randomly (the PyTorch default, kaiming_normal_ or xavier_uniform_)",
                "look for: nn.init.constant_/zeros_/fill_ on weight matrices",
            ],
        )


def _has_layer_after(order: list[str], module: str, run: Run) -> bool:
    """True unless ``module`` is the last layer with weights (its rows separate on their own)."""
    weighted = [m for m in order if m in set(run.layers["module"])] if "module" in run.layers.columns else order
    return bool(weighted) and module != weighted[-1] if weighted else True


class FunctionalActivationTrouble(Rule):
    """
    ## What it detects
    The input of a Linear or convolution layer (after the first) looks like
    the output of saturated tanh units (values in [-1, 1], most beyond 0.99
    in magnitude) or of dead ReLUs (non-negative, most features zero for the
    whole batch), where no activation module precedes the layer: a
    functional ``torch.tanh`` / ``F.relu`` inside ``forward``.

    ## Why it matters
    Saturated and dead units pass back no gradient; the layers before them
    stop learning. Module hooks cannot see a functional activation, so the
    layer after it is where it shows.

    ## How it decides
    Needs the per-layer ``in_*`` statistics. Median over sampled steps of the
    saturated share, or of the dead share, at least ``min_share``; skipped
    when the module just before the layer is an activation module (the
    activation rules judge those).

    ## What to do
    Saturation: lower the scale of the pre-activations (initialisation with
    ``xavier_uniform_``, normalise the inputs, add LayerNorm before the tanh).
    Dead units: use LeakyReLU/GELU, initialise biases at zero, check the
    learning rate of the first steps.
    """

    code = "BUG011"
    name = "functional-activation-trouble"
    title = "A functional activation inside forward() saturates or dies"
    category = Category.BUGS
    severity = Severity.WARNING
    requires = ("layers.in_sat_frac",)
    priority = 20
    explains = (*_STALL, "GRD002", "ACT002")
    thresholds = (
        Threshold(
            "min_share",
            0.5,
            "median share of saturated values / dead features",
            source="ACT001/ACT002 use the same half-of-the-layer level",
        ),
    )

    def check(self, run: Run, t: Mapping[str, float]) -> Iterator[Finding]:
        found = functional_activations(run, t["min_share"])
        if found:
            yield self._report(run, *found[0])

    def _report(self, run: Run, module: str, kind: str, found: dict) -> Finding:
        if kind == "tanh":
            message = (
                f"{found['saturated']:.0%} of the input of {module} is beyond 0.99 in magnitude: a tanh "
                f"applied in forward() (torch.tanh) saturates and passes back almost no gradient"
            )
            fixes = [
                "scale the pre-activations down: xavier_uniform_ initialisation, normalised inputs, or "
                "LayerNorm before the tanh",
                "look for: torch.tanh/torch.sigmoid inside forward()",
            ]
        else:
            message = (
                f"{found['dead']:.0%} of the features entering {module} are zero for the whole batch: "
                f"the ReLU applied in forward() (F.relu) before it has dead units"
            )
            fixes = ["use LeakyReLU or GELU, initialise biases at 0", "look for: F.relu/torch.relu inside forward()"]
        return self.finding(
            run, message=message, module=module, evidence={"kind": kind, **found}, confidence=0.75, fixes=fixes
        )


class LearningRateCollapsed(Rule):
    """
    ## What it detects
    The learning rate falls by orders of magnitude within the first few
    percent of the run and never recovers: a scheduler stepped every batch
    with milestones (or ``step_size``) counted in epochs.

    ## Why it matters
    ``StepLR(step_size=10, gamma=0.1)`` stepped per batch divides the rate by
    10 every 10 batches: by step 60 it is 1e-6 of the start, and the rest of
    the run cannot move the weights. The curve flattens early and looks like
    a plateau or a learning rate too low.

    ## How it decides
    Needs ``lr`` (at least 20 points). The rate falls by ``min_drop`` x or
    more within the first ``within`` of the run and ends at least that far
    below its start.

    ## What to do
    Call ``scheduler.step()`` once per epoch for an epoch-based schedule, or
    express ``milestones``/``step_size``/``T_max`` in batches.
    """

    code = "BUG012"
    live = True
    name = "lr-collapsed-early"
    title = "Learning rate collapsed early: scheduler stepped per batch with epoch-sized settings"
    category = Category.BUGS
    severity = Severity.ERROR
    requires = ("lr",)
    priority = 3
    explains = (*_STALL, "LR004", "SPK001")
    thresholds = (
        Threshold(
            "within",
            0.1,
            "early share of the run in which the collapse happens",
            source="a per-epoch schedule stepped per batch runs its whole course in 1/batches-per-epoch of the run",
        ),
        Threshold(
            "min_drop",
            100.0,
            "how many times smaller the rate becomes",
            source="two decades: no sane warm-down reaches this in a tenth of a run",
        ),
    )

    def check(self, run: Run, t: Mapping[str, float]) -> Iterator[Finding]:
        lr = run.series("lr")
        found = sig.learning_rate_collapse(lr.index.to_numpy(), lr.to_numpy(), t["within"], t["min_drop"])
        if found is None:
            return
        yield self.finding(
            run,
            message=(
                f"the learning rate fell from {found['initial_lr']:.3g} to {found['lr_at_cutoff']:.3g} "
                f"({found['drop']:.3g}x) by step {int(found['cutoff_step'])}, {t['within']:.0%} into the run, "
                f"and ended at {found['final_lr']:.3g}: the scheduler is stepped per batch with settings "
                f"counted in epochs"
            ),
            onset=found["collapsed_at"],
            evidence=found,
            confidence=0.85,
            causes=["scheduler.step() called every batch with milestones/step_size/T_max in epochs"],
            fixes=[
                "call scheduler.step() once per epoch, or give its milestones/step_size/T_max in batches",
                "look for: scheduler.step() inside the batch loop",
            ],
        )


class LabelsSortedByClass(Rule):
    """
    ## What it detects
    Each batch holds far fewer classes than the data: the labels arrive
    sorted (or grouped) by class.

    ## Why it matters
    A model trained on one class at a time learns "everything is class k",
    then forgets it at the next block: the loss saws up and down with the
    blocks, the gradients jump, and it looks like a learning rate too high or
    a batch too small. Shuffled, the same rate trains fine.

    ## How it decides
    Needs ``label_entropy`` (the probes, from the target the loss module was
    given). The mean batch label entropy is under ``max_share`` of
    ``ln(classes)``, the entropy of mixed batches, over at least 3 sampled
    batches.

    ## What to do
    Shuffle the training data: ``DataLoader(..., shuffle=True)`` (or a
    shuffling sampler); for a hand-made loop, permute the indices every epoch.
    """

    code = "BUG013"
    name = "labels-sorted-by-class"
    title = "Batches hold one class at a time: the data is sorted by label, shuffle it"
    category = Category.BUGS
    severity = Severity.ERROR
    requires = ("label_entropy",)
    priority = 3
    explains = (*_LOSS_SHAPE, "GRD001", "GRD003", "OVF001", "ACT003")
    thresholds = (
        Threshold(
            "max_share",
            0.35,
            "mean batch label entropy over ln(classes)",
            source="a shuffled batch of 32 from 10 balanced classes has ~0.9 ln(10); one of 3 "
            "classes in a batch gives <= 0.48",
        ),
    )

    def check(self, run: Run, t: Mapping[str, float]) -> Iterator[Finding]:
        entropy, classes = run.series("label_entropy"), run.series("label_classes")
        found = sig.sorted_labels(
            entropy.to_numpy(), classes.reindex(entropy.index).to_numpy(), run.num_classes, t["max_share"]
        )
        if found is None:
            return
        yield self.finding(
            run,
            message=(
                f"the batches held {found['classes_per_batch']:g} class(es) each (median of "
                f"{found['batches']} sampled batches; {found['classes']:g} classes in all), label entropy "
                f"{found['batch_entropy']:.3g} against {found['mixed_entropy']:.3g} for mixed batches: the "
                f"training data arrives sorted by class"
            ),
            evidence=found,
            confidence=0.9,
            causes=["a DataLoader without shuffle=True over data stored class by class"],
            fixes=[
                "shuffle the training data: DataLoader(dataset, shuffle=True)",
                "look for: DataLoader(..., shuffle=False) or a hand-made loop over an unpermuted index",
            ],
        )


class NonFiniteMadeInLoss(Rule):
    """
    ## What it detects
    The first NaN/Inf was made by the loss computation itself, in its
    backward: the loss and every module output were finite, but the gradient
    of the loss with respect to the model output was not.

    ## Why it matters
    The last layer gets the blame otherwise: its gradients are the first to
    turn NaN. The fix is in the loss: a ``log`` of 0 (``torch.log(softmax)``,
    BCE on a sigmoid that reached exactly 0 or 1), a division by a zero
    count, a ``sqrt`` of 0 in a hand-written loss.

    ## How it decides
    Needs ``loss_grad_nonfinite`` (the probes, every step): at its first step
    that a GradScaler did not skip (an overflow of the scaled backward is
    what AMP expects and handles) the loss is finite and no module's forward
    made a NaN/Inf at or before it. (A loss that is itself NaN while the outputs are finite is NF001's
    ``where=loss``: usually a divergence, judged there.)

    ## What to do
    Use the fused, stable forms: ``F.cross_entropy`` on logits instead of
    ``log(softmax)``, ``BCEWithLogitsLoss`` instead of sigmoid + BCE,
    ``log_softmax``; clamp before ``log`` (``x.clamp_min(1e-12)``); guard
    divisions by a count with ``max(count, 1)``.
    """

    code = "BUG014"
    live = True
    live_at_once = True
    name = "nonfinite-made-in-loss"
    title = "The NaN/Inf was made in the loss computation, not in the model"
    category = Category.BUGS
    severity = Severity.ERROR
    requires = ("loss",)  # loss_grad_nonfinite is written only where it is 1
    priority = 1
    explains = ("NF001", "SPK001", "GRD001", "LR001")

    def check(self, run: Run, t: Mapping[str, float]) -> Iterator[Finding]:
        if not run.has("loss_grad_nonfinite"):
            return
        # A step the GradScaler skipped overflowed in the scaled backward: AMP working, not a loss bug.
        skipped = {e["step"] for e in event_records(run, schema.EV_SKIPPED_STEP)}
        made = [step for step in run.series("loss_grad_nonfinite").index if step not in skipped]
        if not made:
            return
        first_loss = float(min(made))
        loss = run.series("loss", keep_nan=True)
        if first_loss not in loss.index or not np.isfinite(loss.loc[first_loss]):
            return
        made_forward = [
            e["step"]
            for e in event_records(run, schema.EV_NONFINITE)
            if e.get("where") == schema.WHERE_FORWARD and e["step"] <= first_loss
        ]
        if made_forward:
            return
        yield self.finding(
            run,
            message=(
                f"at step {first_loss:g} the loss and every module output were finite, but the gradient of "
                f"the loss with respect to the model output was NaN/Inf: the loss computation made it in its "
                f"backward, not the last layer"
            ),
            onset=first_loss,
            evidence={"step": first_loss},
            confidence=0.9,
            causes=["log of 0, division by 0 or sqrt of 0 inside the loss"],
            fixes=[
                "use fused losses on logits (F.cross_entropy, BCEWithLogitsLoss) instead of log(softmax) or "
                "sigmoid + BCE",
                "look for: torch.log/division/sqrt in the loss code; clamp_min(1e-12) before log",
            ],
        )


class LossFallsWithoutBound(Rule):
    """
    ## What it detects
    The training loss crosses zero and keeps falling by orders of magnitude
    (-1e3, -1e9, ...): a likelihood loss given raw scores (``NLLLoss`` on
    logits), or a loss whose sign is flipped.

    ## Why it matters
    A negative log-likelihood of a discrete label is never below zero; one
    that runs to minus infinity is optimising a score with no minimum, and
    the weights grow until they overflow. Curve rules read such a curve as
    healthy improvement.

    ## How it decides
    Needs ``loss``: it ends below zero, at least ``min_orders`` decades
    larger in magnitude than its start; or, for a run whose metadata says it
    classifies (``task`` binary or multiclass), the median of its last tenth
    is below ``-ln(K)``, further below zero than any cross-entropy of labels
    minus an entropy bonus can go. When the probes saw the loss input, the
    message says whether it was log-probabilities.

    ## What to do
    Apply ``log_softmax`` before ``NLLLoss`` (or use ``CrossEntropyLoss`` on
    logits); check the sign of a custom loss.
    """

    code = "BUG015"
    name = "loss-falls-without-bound"
    title = "Loss falls below zero without bound: NLLLoss on raw scores?"
    category = Category.BUGS
    severity = Severity.ERROR
    requires = ("loss",)
    priority = 4
    explains = (*_LOSS_SHAPE, "NF001", "GRD001")
    thresholds = (
        Threshold(
            "min_orders",
            2.0,
            "decades of magnitude past zero",
            source="a bounded loss cannot end 100x past its starting magnitude on the negative side",
        ),
    )

    def check(self, run: Run, t: Mapping[str, float]) -> Iterator[Finding]:
        if run.task == "regression" or _loss_function(run) in ("GaussianNLLLoss", "PoissonNLLLoss"):
            return
        loss = run.series("loss").to_numpy()
        found = sig.falls_below_zero_without_bound(loss, t["min_orders"])
        if found is not None:
            how = f"{found['orders']:.1f} decades past zero"
        elif run.task in ("binary", "multiclass"):
            found = sig.loss_below_label_bound(loss, run.num_classes)
            how = f"below -ln(K) = {found['bound']:.3g} for a classification task" if found else ""
        if found is None:
            return
        yield self.finding(
            run,
            message=(
                f"the loss went from {found['start']:.3g} to {found['end']:.3g}, {how}: a log-likelihood of "
                f"labels cannot fall below 0, so the loss is given raw scores (NLLLoss/F.nll_loss without "
                f"log_softmax) or has its sign flipped{_not_log_probabilities(run)}"
            ),
            evidence=found,
            confidence=0.7,
            causes=["NLLLoss on logits", "a custom loss with the wrong sign"],
            fixes=[
                "apply log_softmax before NLLLoss, or use CrossEntropyLoss on the logits",
                "look for: NLLLoss() after a plain Linear output",
            ],
        )


def _not_log_probabilities(run: Run) -> str:
    """What the probes saw the loss given, when they saw it and it was not log-probabilities."""
    if not run.has("pred_lse_dev") or not run.has("pred_max"):
        return ""
    lse, top = float(_sampled(run, "pred_lse_dev").median()), float(_sampled(run, "pred_max").median())
    if lse < 1e-3 and top <= 1e-3:
        return ""
    return (
        f"; the values it was given reach {top:.3g} and their rows' logsumexp is {lse:.3g} away from 0: "
        f"not log-probabilities"
    )


def _paired(run: Run, column: str) -> tuple[np.ndarray, np.ndarray]:
    """``column`` and ``grad_norm`` at the steps where ``column`` was sampled."""
    values = _sampled(run, column)
    return values.to_numpy(), run.series("grad_norm").reindex(values.index).to_numpy()


class StepBeforeBackward(Rule):
    """
    ## What it detects
    ``optimizer.step()`` runs while the optimizer's parameters hold no
    gradient, although backward makes one every step: the step comes before
    ``loss.backward()`` (or ``zero_grad()`` sits between backward and step).

    ## Why it matters
    After ``zero_grad()`` the gradients are None (or zeros); a step taken
    then moves nothing, and the gradients the following backward makes are
    reset before the next step sees them. The loss stays where it started,
    whatever the learning rate.

    ## How it decides
    Needs ``grad_at_step`` (the probes: the gradient norm the optimizer holds
    when its step begins) and ``grad_norm`` (made by backward): at least
    ``min_share`` of the sampled steps with a positive ``grad_norm`` have
    ``grad_at_step`` exactly 0. Skipped for LBFGS, whose step runs the
    forward and backward itself (``step(closure)``).

    ## What to do
    Order the loop as ``optimizer.zero_grad(); loss = ...; loss.backward();
    optimizer.step()``.
    """

    code = "BUG016"
    name = "step-before-backward"
    title = "optimizer.step() is called before loss.backward(): the step sees no gradient"
    category = Category.BUGS
    severity = Severity.ERROR
    requires = ("grad_at_step", "grad_norm")
    priority = 2
    explains = (*_STALL, "BUG003", "CH002")
    thresholds = (
        Threshold(
            "min_share",
            0.8,
            "share of sampled steps at which the optimizer held no gradient",
            source="a loop in this order holds none at every step; a skipped AMP step does not call the hook",
        ),
    )

    def check(self, run: Run, t: Mapping[str, float]) -> Iterator[Finding]:
        if (run.meta.get("optimizer") or {}).get("type") == "LBFGS":
            return
        found = sig.steps_without_gradient(*_paired(run, "grad_at_step"), t["min_share"])
        if found is None:
            return
        yield self.finding(
            run,
            message=(
                f"at {found['empty_steps']} of {found['sampled_steps']} sampled steps the optimizer's parameters "
                f"held no gradient when optimizer.step() began, although backward made one: the step is taken "
                f"before loss.backward() (or zero_grad() runs between them), so nothing moves"
            ),
            evidence=found,
            confidence=0.9,
            causes=["optimizer.step() placed before loss.backward()", "zero_grad() between backward and step"],
            fixes=[
                "order the loop as zero_grad(), forward, loss.backward(), optimizer.step()",
                "look for: optimizer.step() above loss.backward() in the batch loop",
            ],
        )


class ClipFarBelowGradient(Rule):
    """
    ## What it detects
    Gradient clipping cuts the gradient to a small fraction of its norm at
    almost every step: ``clip_grad_norm_`` with a ``max_norm`` far below the
    norms the model has.

    ## Why it matters
    Clipping is meant for the rare spike. A threshold the gradient exceeds
    100-fold at every step divides the learning rate by that factor in
    effect: the loss creeps down and looks like a plateau or a learning rate
    too low, and raising the rate only works around the clip.

    ## How it decides
    Needs ``grad_at_step`` (the norm the optimizer is handed, after clipping)
    and ``grad_norm`` (the norm backward made, before it): their ratio is at
    most ``max_factor`` at ``min_share`` of the sampled steps or more.

    ## What to do
    Raise ``max_norm`` to about the typical gradient norm (1.0 is the usual
    default; ``clip_grad_norm_`` returns the norm before clipping: print it
    for a few steps), or remove the clip.
    """

    code = "BUG017"
    name = "clip-far-below-gradient"
    title = "Gradient clipping cuts every step to a fraction of the gradient"
    category = Category.BUGS
    severity = Severity.WARNING
    requires = ("grad_at_step", "grad_norm")
    priority = 4
    explains = (*_STALL, "CH002")
    thresholds = (
        Threshold(
            "max_factor",
            0.01,
            "largest clipped/unclipped norm ratio that counts as cut far below",
            source="a clip meant for spikes leaves ordinary steps untouched (ratio 1); 100x is no spike guard",
        ),
        Threshold(
            "min_share",
            0.8,
            "share of sampled steps cut that far",
            source="a max_norm below the gradient's own level cuts every step, a spike guard a few",
        ),
    )

    def check(self, run: Run, t: Mapping[str, float]) -> Iterator[Finding]:
        found = sig.clipped_far_below(sig.clip_factor(*_paired(run, "grad_at_step")), t["max_factor"], t["min_share"])
        if found is None:
            return
        yield self.finding(
            run,
            message=(
                f"at {found['clipped_steps']} of {found['sampled_steps']} sampled steps the gradient was clipped to "
                f"{found['median_factor']:.2g} of its norm (median) before optimizer.step(): clip_grad_norm_'s "
                f"max_norm is far below the gradient norm, so every step is that much smaller"
            ),
            evidence=found,
            confidence=0.85,
            causes=["clip_grad_norm_ with a max_norm far below the gradient norm"],
            fixes=[
                "raise clip_grad_norm_'s max_norm to about the typical gradient norm (1.0 is the usual default)",
                "look for: clip_grad_norm_(..., max_norm=<tiny>) or clip_grad_value_ with a tiny value",
            ],
        )


class AccumulationNotDivided(Rule):
    """
    ## What it detects
    Gradient accumulation over k micro-batches where each micro-batch's
    loss is backpropagated at full weight: the gradient of an optimizer step
    is the sum of k gradients instead of their mean.

    ## Why it matters
    Summed, the step is k times the one the learning rate was chosen for:
    accumulating 8 micro-batches without ``loss / 8`` is a learning rate 8x
    too high, with the spikes and divergence that brings, and changing the
    accumulation count silently changes the effective rate.

    ## How it decides
    Needs ``grad_at_step`` (written at every sampled step), ``backward_passes``
    (backward passes per optimizer step, written only when more than one: a
    sampled step without it had one) and ``loss_backward_scale`` (the
    gradient that reached the loss module's output: 1 for ``loss.backward()``,
    1/k for ``(loss / k).backward()``): medians at least 2 and within
    ``tolerance`` of 1. Under AMP the scale is the loss scale and never 1, so
    the rule stays silent.

    ## What to do
    Divide each micro-batch's loss by the number of micro-batches:
    ``(loss / accumulation_steps).backward()``.
    """

    code = "BUG018"
    name = "accumulation-not-divided"
    title = "Gradients accumulated over micro-batches without dividing the loss"
    category = Category.BUGS
    severity = Severity.WARNING
    requires = ("grad_at_step", "loss_backward_scale")  # backward_passes is written only where it is above 1
    priority = 3
    explains = (*_LOSS_SHAPE, "GRD001", "NF001", "LR004")
    thresholds = (
        Threshold(
            "tolerance",
            1e-6,
            "how close to 1 the loss weight in backward must be",
            source="(loss / k).backward() gives exactly 1/k; float32 represents 1 exactly",
        ),
    )

    def check(self, run: Run, t: Mapping[str, float]) -> Iterator[Finding]:
        found = sig.undivided_accumulation(
            _backward_passes(run), _sampled(run, "loss_backward_scale").to_numpy(), t["tolerance"]
        )
        if found is None:
            return
        k = found["backward_passes"]
        yield self.finding(
            run,
            message=(
                f"each optimizer step accumulated {k:g} backward passes, and each micro-batch's loss reached "
                f"backward at full weight ({found['loss_weight']:g}): the step is the sum of {k:g} gradients, "
                f"{k:g}x the mean the learning rate was chosen for; divide the loss by {k:g}"
            ),
            evidence=found,
            confidence=0.8,
            causes=["loss.backward() on every micro-batch without loss / accumulation_steps"],
            fixes=[
                f"backpropagate loss / {k:g} on each micro-batch: (loss / accumulation_steps).backward()",
                "look for: an accumulation loop with loss.backward() and optimizer.step() every k batches",
            ],
        )


def _backward_passes(run: Run) -> np.ndarray:
    """Backward passes per sampled step: the probe writes the count only when it is above 1."""
    sampled = _sampled(run, "grad_at_step").index
    return run.series("backward_passes").reindex(sampled).fillna(1).to_numpy()


# Module classes whose gradients explode through time unless clipped.
_RECURRENT_TYPES = ("RNN", "LSTM", "GRU")


class RecurrentWithoutClipping(Rule):
    """
    ## What it detects
    A recurrent network (``nn.RNN``/``LSTM``/``GRU``) whose gradient norm
    spikes far above its usual level while nothing clips it.

    ## Why it matters
    Backpropagation through time multiplies by the recurrent weights once per
    time step, so gradients grow exponentially with the sequence length when
    those weights are large: one spike throws the weights far away and the
    loss jumps. Clipping the gradient norm is the standard remedy for
    recurrent networks (Pascanu et al. 2013, "On the difficulty of training
    recurrent neural networks").

    ## How it decides
    Needs the model's module types (an RNN, LSTM or GRU), ``grad_norm``,
    ``grad_at_step`` and ``loss``: no sampled step shows clipping (the
    optimizer is handed the norm backward made), and the loss gave its
    progress back: it ends more than ``rebound`` (log) above its best
    smoothed level, as LR002 measures it.

    ## What to do
    Clip before the step: ``torch.nn.utils.clip_grad_norm_(model.parameters(),
    max_norm=1.0)`` between ``loss.backward()`` and ``optimizer.step()``.
    """

    code = "BUG019"
    name = "recurrent-without-clipping"
    title = "Recurrent network trained without gradient clipping: its gradients explode"
    category = Category.BUGS
    severity = Severity.WARNING
    requires = ("grad_at_step", "grad_norm", "loss")
    priority = 5
    explains = ("GRD001", "SPK001", "LR001", "LR002", "NF001", "NOI001", "OVF004")
    thresholds = (
        Threshold(
            "rebound",
            0.2,
            "log(end/best) of the smoothed loss that means the run gave its progress back",
            source="LR002's rebound (healthy real-log runs end within 1.15x of their best)",
        ),
    )

    def check(self, run: Run, t: Mapping[str, float]) -> Iterator[Finding]:
        modules = (run.meta.get("model") or {}).get("modules") or []
        recurrent = [str(m[0]) for m in modules if isinstance(m, (list, tuple)) and str(m[1]) in _RECURRENT_TYPES]
        if not recurrent or not sig.never_clipped(sig.clip_factor(*_paired(run, "grad_at_step"))):
            return
        found = sig.gave_progress_back(run.series("loss").to_numpy(), t["rebound"])
        if found is None:
            return
        norms = curves.finite(run.series("grad_norm"))
        found.update(peak_grad_norm=float(norms.max()), median_grad_norm=float(norms.median()))
        yield self.finding(
            run,
            message=(
                f"this recurrent network ({labelled(run, recurrent, most=3)}) trains with no gradient clipping (the "
                f"gradient norm reached {found['peak_grad_norm']:.3g}, median {found['median_grad_norm']:.3g}), "
                f"and its loss fell to {found['best_loss']:.4g} only to end at {found['end_loss']:.4g}: "
                f"backpropagation through "
                f"time needs clip_grad_norm_"
            ),
            module=recurrent[0],
            evidence=found,
            confidence=0.75,
            causes=["no gradient clipping in a recurrent network"],
            fixes=[
                "clip between backward and step: torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)",
                "look for: loss.backward(); optimizer.step() with no clip_grad_norm_ between them",
            ],
        )


class WeightDecayTooLarge(Rule):
    """
    ## What it detects
    A weight decay so large for its learning rate that it takes a sizeable
    share of every weight away at every step.

    ## Why it matters
    SGD's weight decay shrinks the weights by ``lr * wd / (1 - momentum)``
    per step in the steady state, AdamW's by ``lr * wd``. At 1% a step the
    weights halve every 69 steps whatever the data says: they stay pinned
    near zero and the loss stalls high, which looks like a plateau or a
    model too small.

    ## How it decides
    Needs the optimizer's parameter groups in the run's metadata (the
    probes record them). Fires when a group of SGD or AdamW has a weight
    decay beyond the largest in common use (1e-2 for SGD, 1 for AdamW) that
    shrinks the weights by ``min_shrink`` or more per step. Adam's coupled
    ``weight_decay`` is normalised with the gradient and not judged.

    ## What to do
    Use the usual magnitudes: 1e-4 to 5e-4 for SGD, 1e-2 to 1e-1 for AdamW;
    check for a weight decay typed where the learning rate belongs.
    """

    code = "BUG020"
    name = "weight-decay-too-large"
    title = "Weight decay far too large: it pins the weights near zero"
    category = Category.BUGS
    severity = Severity.WARNING
    requires = ("loss",)
    priority = 5
    explains = (*_STALL, "CH002", "ACT003")
    thresholds = (
        Threshold(
            "min_shrink",
            0.01,
            "share of the weights weight decay takes per step",
            source="SGD lr 0.1, momentum 0.9, wd 5e-4 takes 5e-4; AdamW lr 1e-3, wd 1 (grokking) 1e-3; "
            "1% is 10x beyond both",
        ),
    )

    def check(self, run: Run, t: Mapping[str, float]) -> Iterator[Finding]:
        optimizer = run.meta.get("optimizer") or {}
        groups = [g for g in optimizer.get("groups") or [] if isinstance(g, Mapping)]
        found = sig.weight_decay_shrink(groups, str(optimizer.get("type")), t["min_shrink"])
        if found is None:
            return
        yield self.finding(
            run,
            message=(
                f"{optimizer.get('type')} with weight decay {found['weight_decay']:g} at learning rate "
                f"{found['lr']:g} takes {found['shrink']:.2%} of the weights away at every step (they halve "
                f"every {found['half_life_steps']:.2g} steps): the weight decay is far too large"
            ),
            evidence=found,
            confidence=0.8,
            causes=["a weight decay orders of magnitude above the usual 1e-4 (SGD) to 1e-1 (AdamW)"],
            fixes=[
                "set weight_decay to 1e-4 to 5e-4 (SGD) or 1e-2 to 1e-1 (AdamW)",
                "look for: weight_decay= in the optimizer call (a learning rate typed there?)",
            ],
        )


class RegressionLossOnClasses(Rule):
    """
    ## What it detects
    A regression loss (``MSELoss``, ``L1Loss``, Huber) given one value per
    sample in a task of three or more classes: the class index treated as a
    number to predict.

    ## Why it matters
    Regressing on the index tells the model that class 3 lies between
    classes 2 and 4 and that predicting 2.5 is half right: the classes are
    not ordered, so it learns averages of neighbouring labels and rounds
    them into wrong classes. A classifier needs one output per class and
    ``CrossEntropyLoss``.

    ## How it decides
    Needs the probes' ``loss_function`` event and ``num_classes`` in the
    metadata: a regression loss with one output per sample and at least
    three classes.

    ## What to do
    Give the model one output per class and train with
    ``nn.CrossEntropyLoss()`` on the integer labels.
    """

    code = "BUG021"
    name = "regression-loss-on-classes"
    title = "A regression loss on class labels: use CrossEntropyLoss for a classification task"
    category = Category.BUGS
    severity = Severity.ERROR
    requires = ("events",)
    priority = 3
    explains = (*_LOSS_SHAPE, "INIT001", "CH002", "OVF002")

    def check(self, run: Run, t: Mapping[str, float]) -> Iterator[Finding]:
        if run.task == "regression":
            return
        described = event_records(run, schema.EV_LOSS_FUNCTION)
        if not described:
            return
        event = described[-1]
        found = sig.regression_loss_on_classes(str(event["loss_fn"]), event.get("input_shape") or [], run.num_classes)
        if found is None:
            return
        yield self.finding(
            run,
            message=(
                f"{found['loss_fn']} was given one output per sample for a task of {found['num_classes']} classes: "
                f"the class index is regressed as a number, so the model learns averages of labels that have no "
                f"order; this is the wrong loss for a classification task"
            ),
            evidence=found,
            confidence=0.85,
            causes=["a regression loss (MSELoss/L1Loss) on class indices"],
            fixes=[
                "give the model one output per class and use nn.CrossEntropyLoss() on the integer labels",
                "look for: MSELoss/L1Loss with a 1-output head on a classification dataset",
            ],
        )


class LinearLayersWithoutActivation(Rule):
    """
    ## What it detects
    Linear layers that follow each other in an ``nn.Sequential`` with no
    non-linear activation between them.

    ## Why it matters
    Linear maps compose into one linear map: however many layers are stacked
    and however wide, the network computes what a single Linear layer
    computes. On data that is not linearly separable it underfits, and no
    learning rate or training time changes that.

    ## How it decides
    Needs the model's module list from the run's metadata (the probes
    record it in registration order, which is the order a Sequential runs
    its children): two Linear children of one Sequential with only
    Identity, Dropout or Flatten between them.

    ## What to do
    Put an activation between the layers (``nn.ReLU()``, ``nn.GELU()``);
    in a helper that builds the layers, check the activation it is given is
    not ``nn.Identity``.
    """

    code = "BUG022"
    name = "linear-layers-without-activation"
    title = "Linear layers stacked without an activation: the network is one linear map"
    category = Category.BUGS
    severity = Severity.WARNING
    requires = ("loss",)
    priority = 5
    explains = (*_STALL, "CH002", "OVF002")

    def check(self, run: Run, t: Mapping[str, float]) -> Iterator[Finding]:
        model = run.meta.get("model") or {}
        modules = [m for m in model.get("modules") or [] if isinstance(m, (list, tuple)) and len(m) >= 2]
        pairs = sig.linear_stacks([(str(m[0]), str(m[1])) for m in modules], str(model.get("class")))
        if not pairs:
            return
        shown = ", ".join(f"{a} -> {b}" for a, b in pairs[:4])
        yield self.finding(
            run,
            message=(
                f"{len(pairs)} pair(s) of Linear layers follow each other with no non-linear activation between "
                f"them ({shown}): stacked linear layers compute one linear map, so the extra layers add no "
                f"capacity"
            ),
            module=pairs[0][1],
            evidence={"pairs": [list(p) for p in pairs]},
            confidence=0.8,
            causes=["an activation missing between Linear layers (or nn.Identity passed as the activation)"],
            fixes=[
                "put an activation (nn.ReLU(), nn.GELU()) between the Linear layers",
                "look for: nn.Sequential(nn.Linear(...), nn.Linear(...)) with nothing non-linear between",
            ],
        )


class LossNotConnectedToModel(Rule):
    """
    ## What it detects
    ``loss.backward()`` runs, but its backward pass never reaches the model's
    output and no parameter receives a gradient: the loss was cut from the
    model's graph.

    ## Why it matters
    A loss rebuilt from a number (``torch.tensor(loss.item(),
    requires_grad=True)``), computed on ``output.detach()`` or through
    ``.numpy()`` still has a backward, so nothing fails; it just ends at the
    new leaf. The optimizer steps on no gradient and the model never learns,
    whatever the learning rate.

    ## How it decides
    Needs ``backward_missed_model`` and ``grad_at_step`` (the probes, on
    sampled steps): at ``min_share`` of the sampled steps or more, backward
    was called, none of its passes reached the model output, and the
    optimizer's parameters held no gradient at the step.

    ## What to do
    Compute the loss from the model's output tensor directly and call
    ``backward()`` on that; log with ``loss.item()`` but never rebuild the
    loss from it.
    """

    code = "BUG023"
    name = "loss-not-connected-to-model"
    title = "loss.backward() never reaches the model: the loss is cut from its graph"
    category = Category.BUGS
    severity = Severity.ERROR
    requires = ("grad_at_step",)  # backward_missed_model is written only where it is 1
    priority = 2
    explains = (*_STALL, "CH002", "OVF002", "BUG004", "BUG016")
    thresholds = (
        Threshold(
            "min_share",
            0.8,
            "share of sampled steps whose backward missed the model",
            source="a cut loss misses it at every step; a step that skipped backward on purpose is rare",
        ),
    )

    def check(self, run: Run, t: Mapping[str, float]) -> Iterator[Finding]:
        at_step = _sampled(run, "grad_at_step")
        missed = run.series("backward_missed_model").reindex(at_step.index).fillna(0)
        cut = (missed == 1) & (at_step == 0)
        if len(at_step) < 3 or cut.mean() < t["min_share"]:
            return
        yield self.finding(
            run,
            message=(
                f"at {int(cut.sum())} of {len(at_step)} sampled steps loss.backward() ran, but its backward pass "
                f"never reached the model output and no parameter got a gradient: the loss is not connected to "
                f"the graph of the model (rebuilt from .item(), or computed on a detached output)"
            ),
            onset=float(cut[cut].index[0]),
            evidence={"cut_steps": int(cut.sum()), "sampled_steps": len(at_step)},
            confidence=0.9,
            causes=[
                "the loss rebuilt from a number: torch.tensor(loss.item(), requires_grad=True)",
                "the loss computed on output.detach() or through .numpy()",
            ],
            fixes=[
                "call backward() on the loss computed from the model output itself; use .item() only to log it",
                "look for: torch.tensor(... .item() ..., requires_grad=True), .detach() or .numpy() before the loss",
            ],
        )


class LabelsCarryNoInformation(Rule):
    """
    ## What it detects
    The weights move at a usual rate, but the training loss never gets below
    the entropy of the batches' labels: the model learns nothing about which
    input carries which label, as when inputs and labels were shuffled apart.

    ## Why it matters
    Predicting every class with its frequency scores exactly the label
    entropy, without looking at the input. A model that trains (its weights
    move, its gradients flow) and still cannot beat that has nothing to
    learn from: labels permuted separately from the inputs, labels read from
    another file or another order, or inputs that are all the same. No
    learning rate, capacity or training time fixes it.

    ## How it decides
    Needs ``label_entropy`` (the probes, from the targets the loss module was
    given), ``num_classes`` and the per-layer ``update_ratio``: batches are
    mixed (entropy at least half of ``ln(K)``), the median update ratio of
    every layer is at least ``min_update`` (the weights move), and the
    lowest of 20 bin medians of the loss stays above ``(1 - tolerance)``
    times the median batch label entropy, and the loss stays finite (a run
    that diverged is above it for another reason). Other bug rules that stall
    training (frozen updates, cut graphs, identical units) explain it when
    they fire too.

    ## What to do
    Check that inputs and labels stay paired: shuffle them with one
    permutation (``x[idx], y[idx]``, or a ``DataLoader`` over one dataset),
    and look at a few (input, label) pairs by eye.
    """

    code = "BUG024"
    name = "labels-carry-no-information"
    title = "The model learns nothing from the inputs: labels and inputs do not match"
    category = Category.BUGS
    severity = Severity.WARNING
    requires = ("label_entropy", "layers.update_ratio")
    priority = 8
    explains = ("PLT001", "CH001", "CH002", "LR003", "OVF001", "OVF002")
    thresholds = (
        Threshold(
            "tolerance",
            0.05,
            "how far below the label entropy the loss must get to show learning",
            source="a model that uses its inputs at all beats the frequency predictor; 5% covers batch noise",
        ),
        Threshold(
            "min_update",
            1e-4,
            "smallest median update ratio of a layer that counts as moving",
            source="GRD003 calls ~1e-3 healthy; 10x below that the weights still move",
        ),
    )

    def check(self, run: Run, t: Mapping[str, float]) -> Iterator[Finding]:
        if run.task == "regression" or not run.num_classes:
            return
        updates = run.layer_series("update_ratio").median()
        if updates.empty or not (updates >= t["min_update"]).all():
            return
        entropy = float(_sampled(run, "label_entropy").median())
        found = sig.loss_at_label_entropy(run.series("loss").to_numpy(), entropy, run.num_classes, t["tolerance"])
        if found is None or not np.isfinite(run.series("loss", keep_nan=True)).all():
            return  # a loss that blew up is above the entropy for another reason
        yield self.finding(
            run,
            message=(
                f"the training loss never got below {found['best_loss']:.4g}, the entropy of the batches' labels "
                f"({entropy:.4g} nats) that predicting each class by its frequency scores, while every layer's "
                f"weights moved (median update ratio {float(updates.min()):.2g} or more): the model finds nothing "
                f"to learn, as when the labels do not match their inputs (shuffled apart)"
            ),
            evidence={**found, "smallest_update_ratio": float(updates.min())},
            confidence=0.6,
            causes=["inputs and labels shuffled with different permutations, or read in different orders"],
            fixes=[
                "shuffle inputs and labels with one permutation (x[idx], y[idx]) and check a few pairs by eye",
                "look for: two separate randperm/shuffle calls, or labels loaded from another file order",
            ],
        )


# Activations whose slope is at most 1 everywhere and near 0 in their tails (sigmoid's at most 0.25).
_SATURATING_TYPES = ("Sigmoid", "Tanh", "Hardsigmoid", "Hardtanh", "Softsign", "LogSigmoid")
_ACTIVATION_MODULES = (*_SATURATING_TYPES, "ReLU", "ReLU6", "LeakyReLU", "PReLU", "ELU", "SELU", "CELU", "GELU", "SiLU")


class SaturatingActivationsVanish(Rule):
    """
    ## What it detects
    A deep stack whose hidden activations are sigmoid or tanh modules, with
    the gradient of its first layers orders of magnitude below that of its
    last: the activations are why the gradient vanishes.

    ## Why it matters
    Backpropagation multiplies by the activation's slope once per layer. The
    sigmoid's slope is at most 0.25 and tanh's at most 1, both near 0 in
    their tails, so through a few such layers the backward signal shrinks
    geometrically (Glorot & Bengio 2010): the first layers stop learning and
    the network trains like a shallow one on random features, often stuck
    at chance. ReLU-family activations pass a slope of 1.

    ## How it decides
    Needs the per-layer ``grad_norm`` and the model's module types. The
    first quarter of the weight layers gets under ``max_ratio`` of the last
    quarter's gradient norm across at least ``min_layers`` weight layers (as
    GRD002 measures it), and at least ``min_saturating`` activation modules
    are sigmoid/tanh-like, making up at least half of the model's activation
    modules.

    ## What to do
    Use ReLU/GELU (or LeakyReLU) between hidden layers, keeping a sigmoid
    only where a probability is the output; or add normalisation (LayerNorm,
    BatchNorm) before each activation and initialise with ``xavier_normal_``.
    """

    code = "BUG025"
    name = "saturating-activations-vanish"
    title = "Sigmoid/tanh activations in a deep stack: the gradient vanishes before the first layers"
    category = Category.BUGS
    severity = Severity.WARNING
    requires = ("layers.grad_norm",)
    priority = 5
    explains = (*_STALL, "GRD002", "ACT002", "ACT003", "CH002", "OVF002")
    thresholds = (
        Threshold(
            "max_ratio",
            1e-3,
            "first-layer / last-layer gradient norm below which gradients vanish",
            source="GRD002's level: healthy sample runs (ReLU, tanh+LayerNorm) stay within 10x",
        ),
        Threshold(
            "min_layers",
            4,
            "fewest weight layers for a depth problem",
            source="GRD002's depth: with fewer layers the first and last quarter are neighbours",
        ),
        Threshold(
            "min_saturating",
            2,
            "fewest sigmoid/tanh activation modules",
            source="one saturating layer shrinks the gradient 4x at most (sigmoid); the vanishing needs a stack",
        ),
    )

    def check(self, run: Run, t: Mapping[str, float]) -> Iterator[Finding]:
        types = [str(m[1]) for m in (run.meta.get("model") or {}).get("modules") or [] if isinstance(m, (list, tuple))]
        activations = [kind for kind in types if kind in _ACTIVATION_MODULES]
        saturating = [kind for kind in activations if kind in _SATURATING_TYPES]
        if len(saturating) < t["min_saturating"] or 2 * len(saturating) < len(activations):
            return
        found = vanishing_gradient(run, t["max_ratio"], int(t["min_layers"]))
        if found is None:
            return
        kinds = " and ".join(sorted(set(saturating)))
        yield self.finding(
            run,
            module=found["first_layers"][0],
            message=(
                f"{len(saturating)} {kinds} activations sit between the {len(found['per_layer'])} weight layers, "
                f"and the first layers ({labelled(run, found['first_layers'])}) get {found['ratio']:.2g} of the "
                f"gradient of the last ({labelled(run, found['last_layers'])}): each saturating activation "
                f"shrinks the backward signal (a sigmoid's slope is at most 0.25), so it vanishes before the "
                f"first layers"
            ),
            evidence={**found, "saturating": len(saturating), "activations": len(activations)},
            confidence=0.8,
            causes=[f"{kinds} between hidden layers of a deep stack"],
            fixes=[
                "use ReLU or GELU between hidden layers (keep a sigmoid only on a probability output)",
                "look for: nn.Sigmoid()/nn.Tanh() (or torch.sigmoid) between the Linear layers; or add "
                "LayerNorm before each activation",
            ],
        )


class GraphCutInsideModel(Rule):
    """
    ## What it detects
    Layers that run in the forward pass (their outputs are measured) but
    never receive a gradient, while layers after them do: the autograd graph
    is cut between them inside ``forward``.

    ## Why it matters
    The layers before the cut keep their initial weights for the whole run:
    the model trains only its last part, on random features. Nothing fails
    and the loss still falls a little, so a ``.detach()`` left from a
    feature-extraction experiment, a ``with torch.no_grad():`` around part
    of ``forward``, or an ``.item()``/``.numpy()`` round trip goes unnoticed.

    ## How it decides
    Needs the per-layer ``grad_norm``, ``param_norm`` (trainable modules)
    and ``act_rms`` (modules seen running forward). It fires when a trainable
    module has output statistics at some sampled step but no non-zero
    gradient at any, and a trainable module after it in model order has a
    non-zero gradient. A module whose output is computed but not used in the
    loss looks the same; the message names both.

    ## What to do
    Remove the ``.detach()``, ``torch.no_grad()`` or ``.item()`` between the
    named layers and the ones after them; if those layers are meant to stay
    fixed, freeze them with ``requires_grad_(False)`` and leave them out of
    the optimizer.
    """

    code = "BUG026"
    name = "graph-cut-inside-model"
    title = "The autograd graph is cut inside forward(): the first layers never get a gradient"
    category = Category.BUGS
    severity = Severity.WARNING
    requires = ("layers.grad_norm", "layers.param_norm", "layers.act_rms")
    priority = 4
    explains = (*_STALL, "GRD004", "GRD003", "CH002", "OVF002")

    def check(self, run: Run, t: Mapping[str, float]) -> Iterator[Finding]:
        order = run.module_order()
        peak = run.layer_series("grad_norm").max()
        ran = set(run.layer_series("act_rms").dropna(axis=1, how="all").columns)
        trainable = [m for m in order if m in set(run.layer_series("param_norm").columns)]
        learning = [m for m in trainable if peak.get(m, 0) > 0]
        cut = [m for m in trainable if m in ran and not peak.get(m, 0) > 0]
        if not learning or not cut or order.index(learning[-1]) < order.index(cut[0]):
            return
        after = [m for m in learning if order.index(m) > order.index(cut[-1])] or learning[-1:]
        yield self.finding(
            run,
            module=cut[0],
            message=(
                f"{labelled(run, cut)} ran in forward but never got a gradient, while {labelled(run, after)}, "
                f"later in the model, did: the graph is cut between them (a .detach(), torch.no_grad() or "
                f".item() in forward), or the output of the first is not used in the loss"
            ),
            evidence={"cut": cut, "learning": learning},
            confidence=0.75,
            causes=["a .detach(), torch.no_grad() or .item() round trip inside forward()"],
            fixes=[
                "remove the .detach()/torch.no_grad() between these layers and the next; freeze on purpose with "
                "requires_grad_(False)",
                "look for: .detach(), with torch.no_grad():, .item() or .numpy() inside forward()",
            ],
        )


class RecurrentBatchAxisSwapped(Rule):
    """
    ## What it detects
    A recurrent layer reads the batch as time: ``nn.RNN``/``LSTM``/``GRU``
    built with the default ``batch_first=False`` and fed
    ``(batch, time, features)`` data (or ``batch_first=True`` fed
    ``(time, batch, features)``).

    ## Why it matters
    The layer then runs its recurrence across the samples of the batch: each
    sample's state is carried into the next sample, the real time steps are
    treated as independent sequences, and which sample an output belongs to
    is scrambled. Nothing fails because the shapes still fit; the model
    learns little and validation stays near chance.

    ## How it decides
    Needs the probes' ``recurrent_input`` event (the layer's ``batch_first``
    and the shape of its first training input) and ``loss_function`` event
    (the batch the loss is given). It fires when the loss's batch size is
    the length of the axis the layer reads as time, and not that of the axis
    it reads as the batch (equal lengths leave it undecided).

    ## What to do
    Build the layer with ``batch_first=True`` for ``(batch, time, features)``
    data, or transpose the input with ``x.transpose(0, 1)`` (and the output
    back) for ``batch_first=False``.
    """

    code = "BUG027"
    name = "recurrent-batch-axis-swapped"
    title = "A recurrent layer reads the batch as time: check batch_first"
    category = Category.BUGS
    severity = Severity.ERROR
    requires = ("events",)
    priority = 3
    explains = (*_STALL, "CH002", "OVF001", "OVF002", "NOI001", "BUG024")

    def check(self, run: Run, t: Mapping[str, float]) -> Iterator[Finding]:
        losses = event_records(run, schema.EV_LOSS_FUNCTION)
        shape = losses[0].get("input_shape") if losses else None
        if not isinstance(shape, list) or not shape:
            return
        for layer in event_records(run, schema.EV_RECURRENT_INPUT):
            batch_first = bool(layer.get("batch_first"))
            found = sig.recurrent_axes_swapped(batch_first, layer.get("input_shape") or [], int(shape[0]))
            if found is not None:
                yield self._report(run, layer, batch_first, found)
                return

    def _report(self, run: Run, layer: Mapping[str, Any], batch_first: bool, found: dict) -> Finding:
        module = str(layer["module"])
        axes = ("dimension 0", "dimension 1") if batch_first else ("dimension 1", "dimension 0")
        fix = "x.transpose(0, 1)" if batch_first else "batch_first=True"
        return self.finding(
            run,
            module=module,
            message=(
                f"{labelled(run, [module])} has batch_first={batch_first} and was given {tuple(layer['input_shape'])}: "
                f"it reads {axes[0]} ({found['read_as_batch']}) as the batch and {axes[1]} "
                f"({found['read_as_time']}) as time, but the loss is given {found['loss_batch']} samples: the "
                f"recurrence runs across the samples of the batch; use {fix}"
            ),
            evidence={**found, "batch_first": int(batch_first), "input_shape": list(layer["input_shape"])},
            confidence=0.85,
            causes=[f"an {layer.get('type', 'RNN')} built with batch_first={batch_first} fed data the other way round"],
            fixes=[
                f"build the layer with batch_first={not batch_first}, or transpose its input: x.transpose(0, 1)",
                "look for: nn.GRU/nn.LSTM/nn.RNN(...) without batch_first=True while the DataLoader yields "
                "(batch, time, features)",
            ],
        )


class LossTensorsKept(Rule):
    """
    ## What it detects
    The training loop keeps the loss tensors of earlier steps alive: stored
    as tensors (``history.append(loss)``, ``total += loss``) instead of as
    numbers (``loss.item()``).

    ## Why it matters
    A loss tensor holds its autograd graph, and with it every activation the
    graph saved (all of them under ``retain_graph=True``). Kept across steps,
    each step's graph stays in memory: the process grows every step until it
    runs out, and the code looks harmless because the list is only meant
    for a plot.

    ## How it decides
    Needs ``graphs_kept`` (the probes hold weak references to the last eight
    sampled loss tensors and count those made two or more steps ago that
    are still alive). It fires when the median over the sampled steps is at
    least ``min_kept``; the loop's own variable, and a kept "previous loss",
    account for one or two at most.

    ## What to do
    Keep numbers, not tensors: ``history.append(loss.item())`` (or
    ``loss.detach()``); drop ``retain_graph=True`` unless a second backward
    through the same graph is needed.
    """

    code = "BUG028"
    name = "loss-tensors-kept"
    title = "Loss tensors are kept across steps with their graphs: store loss.item()"
    category = Category.BUGS
    severity = Severity.WARNING
    requires = ("graphs_kept",)
    priority = 4
    explains = ("MEM001", "MEM002")
    thresholds = (
        Threshold(
            "min_kept",
            3,
            "median count of old loss tensors still alive",
            source="the loop variable and a kept previous loss hold at most 2; a list holds all 8 watched",
        ),
    )

    def check(self, run: Run, t: Mapping[str, float]) -> Iterator[Finding]:
        kept = _sampled(run, "graphs_kept")
        if kept.empty or float(kept.median()) < t["min_kept"]:
            return
        yield self.finding(
            run,
            message=(
                f"{float(kept.median()):g} of the loss tensors made two or more sampled steps earlier were still "
                f"alive (median over {len(kept)} sampled steps): the loop keeps its losses as tensors, each with "
                f"its autograd graph, so memory grows every step; store loss.item()"
            ),
            evidence={"graphs_kept": float(kept.median()), "max_kept": float(kept.max()), "sampled_steps": len(kept)},
            confidence=1.0,  # no inference: the weak references show the loop's own tensors still alive
            causes=["losses stored as tensors: history.append(loss) or total_loss += loss"],
            fixes=[
                "store numbers: history.append(loss.item()) or total += loss.item() (loss.detach() for tensors)",
                "look for: a list or sum of loss tensors kept across steps, backward(retain_graph=True)",
            ],
        )


class ValidationDataUnlikeTraining(Rule):
    """
    ## What it detects
    From the curves alone: the validation loss is already orders of
    magnitude above the training loss at the first evaluation, and stays
    there, while the training loss falls as it should.

    ## Why it matters
    Overfitting builds up over training: at the first evaluations a model
    scores new data about as it scores its training batches, and the gap
    grows from there. A validation loss a hundred times the training loss
    from the start means the validation data are not what the model trains
    on: inputs on another scale (a normalisation fitted and applied to the
    training set only), another preprocessing, labels encoded another way.
    No amount of regularisation or early stopping helps.

    ## How it decides
    Needs a positive training loss and at least ``min_points`` positive
    evaluations of a validation loss. The smoothed training loss is read at
    every evaluation; the ratio validation / training at the first
    evaluation, and its median over all evaluations, must both be at least
    ``min_ratio``, and the training loss must have fallen by more than
    ``min_train_fall`` (log units) over the run: the model learns, just not
    anything that holds on the validation data.

    ## What to do
    Prepare the validation inputs exactly as the training inputs: fit the
    normalisation (mean and std, a scaler, a tokenizer) on the training set
    and apply that same transform to the validation and test data. Check that
    the labels are encoded the same way in both.
    """

    code = "BUG029"
    assumes_falling_loss = True
    name = "validation-data-unlike-training"
    title = "Validation data on another scale or preprocessing than the training data"
    category = Category.BUGS
    severity = Severity.WARNING
    # The validation loss may be logged under another name (val_g0_loss): looked up in check.
    requires = ("loss",)
    priority = 6
    explains = ("OVF001", "OVF002", "OVF003", "OVF004", "OVF005", "OVF006", "CH002")
    thresholds = (
        Threshold(
            "min_ratio",
            100.0,
            "validation loss over training loss, at the first evaluation and as the median over all",
            source="the highest first-evaluation ratio of the real-log corpus's calibration half is 33x (a "
            "run labelled generalisation gap); the bug suite's healthy twins sit near 1x",
        ),
        Threshold(
            "min_train_fall",
            0.1,
            "log fall of the smoothed training loss from start to end (0.1 = 10%)",
            source="a training loss that does not fall is judged by the stall and chance rules",
        ),
        Threshold("min_points", 3, "fewest evaluations judged", source="a first evaluation and a median of three"),
    )

    def check(self, run: Run, t: Mapping[str, float]) -> Iterator[Finding]:
        column, val = validation_loss(run)
        train = curves.finite(run.series("loss"))
        if len(val) < t["min_points"] or len(train) < 3 or not (curves.is_positive(val) and curves.is_positive(train)):
            return
        if curves.log_ratio(curves.start_level(train), curves.end_level(train)) <= t["min_train_fall"]:
            return
        ratios = val.to_numpy() / curves.value_at(curves.smooth(train), val.index)
        if not (ratios[0] >= t["min_ratio"] and float(np.median(ratios)) >= t["min_ratio"]):
            return
        yield self.finding(
            run,
            message=(
                f"validation inputs look prepared differently (another scale or preprocessing): {column} is "
                f"{ratios[0]:.3g}x the training loss at the first evaluation (step {val.index[0]:.0f}: "
                f"{val.iloc[0]:.4g} against {val.iloc[0] / ratios[0]:.4g}) and {float(np.median(ratios)):.3g}x "
                f"over all {len(val)} evaluations, while the training loss fell: a model does not overfit "
                f"that much before it has trained"
            ),
            onset=float(val.index[0]),
            evidence={
                "first_ratio": float(ratios[0]),
                "median_ratio": float(np.median(ratios)),
                "first_val_loss": float(val.iloc[0]),
                "evaluations": len(val),
            },
            confidence=0.6,
            causes=[
                "the normalisation (mean/std, scaler) fitted and applied to the training set only",
                "validation data preprocessed, tokenised or label-encoded differently",
            ],
            fixes=[
                "fit the normalisation on the training set and apply the same transform to validation and test data",
                "look for: a transform applied in the training dataset or loop but not in the validation one",
            ],
        )
