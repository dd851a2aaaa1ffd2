"""`preflight()`: run every experiment on copies, record them as a run file, judge them with the rules."""

from __future__ import annotations

import datetime as _dt
import os
import time
import traceback
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from diagnose.probes.preflight.context import Batch, Budget, Context, OptimizerFactory, Skip, preserved_rng
from diagnose.probes.preflight.data import measure_inputs, measure_labels
from diagnose.probes.preflight.fitting import measure_baseline, measure_overfit
from diagnose.probes.preflight.gradients import measure_gradients
from diagnose.probes.preflight.initial_loss import measure_initial_loss
from diagnose.probes.preflight.lr_range import measure_lr_range
from diagnose.probes.preflight.mixing import measure_mixing
from diagnose.probes.preflight.outcome import Outcome
from diagnose.probes.summary import describe_model, describe_optimizer
from diagnose.runfile import RunWriter, schema

DEFAULT_PATH = "diagnose-preflight.jsonl"
# The code prefix of the preflight rules: the only ones that apply to a preflight run.
RULES = "PRE"
SEED = 0
# The wall-clock seconds the experiments share by default. The MNIST CNN of
# pytorch/examples (1.2 M parameters, batch 64) runs them all on one CPU thread
# in 26 s of CPU time, 18 s of it the learning-rate range test's 100 full batches
# (benchmarks/preflight_time.py on this project's 2-core machine); an experiment
# that would run past the budget stops and says so instead.
BUDGET_S = 30.0

# In order: the data first, since a bad label makes every later experiment fail.
EXPERIMENTS: tuple[tuple[str, Callable[[Context], Outcome]], ...] = (
    ("inputs", measure_inputs),
    ("labels", measure_labels),
    ("initial_loss", measure_initial_loss),
    ("gradients", measure_gradients),
    ("mixing", measure_mixing),
    ("overfit", measure_overfit),
    ("baseline", measure_baseline),
    ("lr_range", measure_lr_range),
)


def preflight(
    model: nn.Module,
    loss_fn: Callable[..., torch.Tensor],
    batch_or_loader: Any,
    optimizer: OptimizerFactory | torch.optim.Optimizer,
    metadata: Mapping[str, Any] | None = None,
    path: str | os.PathLike[str] | None = None,
    *,
    config: Any = None,
    budget_s: float | None = BUDGET_S,
) -> Any:
    """Check a model, loss and optimizer on one batch before training, and return the findings.

    Every experiment works on a deep copy of ``model`` (and of ``loss_fn``) with a
    fresh optimizer: ``optimizer`` is a factory (``lambda params:
    torch.optim.AdamW(params, lr=1e-3)``) or an optimizer, rebuilt with its
    class, per-group hyperparameters and state. The user's model, optimizer
    and random-number generators are left as they were. ``batch_or_loader``:
    an ``(inputs, targets)`` batch, or an iterable of them (its first batch is
    checked; the learning-rate range test walks through it). ``metadata``:
    ``{"task": "classification", "num_classes": C}`` enables the experiments that
    need the class count. The results go to the run file ``path`` (replaced
    if it exists; default ``diagnose-preflight.jsonl``); the return value is
    the `Analysis` of that run: the preflight findings, worst first, judged
    by the preflight rules (``PRE*``) configured from ``[tool.diagnose]``
    unless ``config`` is given. The experiments share ``budget_s`` seconds of wall
    clock (None: no limit); one that reaches the end of it stops, is recorded
    as cut short and is not judged, and the experiments after it are skipped.
    """
    from diagnose.readers import load
    from diagnose.rules import analyze, load_config

    ctx = _context(model, loss_fn, batch_or_loader, optimizer, dict(metadata or {}))
    target = Path(path or DEFAULT_PATH)
    target.unlink(missing_ok=True)
    writer = RunWriter(target)
    try:
        with preserved_rng(SEED):
            meta = _meta(ctx, target)
            # The clock starts once the first optimizer is built: in a fresh process that
            # imports torch's compiler stack (torch._dynamo, seconds), as any training pays.
            ctx.budget = Budget.of(budget_s)
            writer.write({**meta, "budget_s": budget_s})
            for record in run_experiments(ctx):
                writer.write(record)
    finally:
        writer.close()
    return analyze(load(target), config or load_config().merged(select=[RULES]))


def run_experiments(ctx: Context) -> Iterable[dict[str, Any]]:
    """The records of every experiment in order: one event each, and the step records some add."""
    blocked: str | None = None
    for name, measure in EXPERIMENTS:
        event: dict[str, Any] = {"kind": schema.EVENT, "step": 0, "event": schema.EV_PREFLIGHT, "experiment": name}
        if ctx.budget.spent and not blocked:
            blocked = f"the {ctx.budget.seconds:g} s time budget was spent before this experiment"
        if blocked:
            yield {**event, "skipped": blocked}
            continue
        started = time.monotonic()
        try:
            outcome = measure(ctx)
        except Skip as skip:
            yield {**event, "skipped": str(skip), "seconds": time.monotonic() - started}
            continue
        except Exception as exc:  # noqa: BLE001 - a failing model is a finding, not a crash
            yield {
                **event,
                "error": f"{type(exc).__name__}: {exc}",
                "where": _where(exc),
                "seconds": time.monotonic() - started,
            }
            continue
        blocked = outcome.blocks
        yield {**event, **outcome.fields, "seconds": time.monotonic() - started}
        yield from ({"kind": schema.STEP, **step} for step in outcome.steps)


def _context(
    model: nn.Module,
    loss_fn: Callable[..., torch.Tensor],
    batch_or_loader: Any,
    optimizer: OptimizerFactory | torch.optim.Optimizer,
    metadata: dict[str, Any],
) -> Context:
    from diagnose.errors import InputError

    loader = None if _is_batch(batch_or_loader) else batch_or_loader
    first = batch_or_loader if loader is None else next(iter(loader), None)
    if first is None:
        raise InputError("the loader yields no batch")
    if not (isinstance(optimizer, torch.optim.Optimizer) or callable(optimizer)):
        raise InputError("optimizer: pass an optimizer or a factory (lambda params: torch.optim.SGD(params, lr=0.1))")
    ctx = Context(model, loss_fn, Batch.of(first), optimizer, metadata, loader)
    ctx.batch = ctx.batch.to(ctx.device)
    return ctx


def _is_batch(value: Any) -> bool:
    """An (inputs, targets) pair or a dict of tensors, rather than a loader."""
    if isinstance(value, Mapping):
        return True
    return isinstance(value, (tuple, list)) and len(value) == 2 and not isinstance(value[0], (tuple, list, Mapping))


def _meta(ctx: Context, path: Path) -> dict[str, Any]:
    probe_optimizer = ctx.trial().optimizer
    ctx.user_lr = float(probe_optimizer.param_groups[0]["lr"])
    return {
        "kind": schema.META,
        "schema": schema.SCHEMA,
        "name": path.stem,
        "preflight": True,
        "started": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "device": str(ctx.device),
        "model": describe_model(ctx.model),
        "optimizer": describe_optimizer(probe_optimizer),
        "metadata": ctx.metadata,
        "batch_size": ctx.batch.size,
    }


def _where(exc: BaseException) -> str:
    frame = traceback.extract_tb(exc.__traceback__)[-1]
    return f"{Path(frame.filename).name}:{frame.lineno} in {frame.name}"


def time_spent(run: Any) -> str:
    """How long the experiments of a preflight run took, against their budget, and which the budget cut."""
    events = run.events
    experiments = events[events["event"] == schema.EV_PREFLIGHT] if "event" in events.columns else events.iloc[:0]
    seconds = float(experiments["seconds"].sum()) if "seconds" in experiments.columns else 0.0
    budget = run.meta.get("budget_s")
    line = f"preflight experiments took {seconds:.1f} s" + (f" of their {budget:g} s budget" if budget else "")
    if "skipped" in experiments.columns:
        cut = experiments.loc[experiments["skipped"].astype(str).str.contains("time budget", regex=False), "experiment"]
        if len(cut):
            line += f"; cut by the budget: {', '.join(map(str, cut))}"
    return line
