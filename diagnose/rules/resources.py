"""Rules about memory (leaks, running out) and mixed-precision steps skipped by the GradScaler."""

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

_GB = 1024**3


@dataclass(frozen=True)
class Growth:
    """A memory counter's steady rise after warm-up: bytes per step and relative growth."""

    slope: float
    start: float
    end: float
    first_step: float
    last_step: float

    @property
    def rise(self) -> float:
        return self.end - self.start

    @property
    def relative(self) -> float:
        return self.rise / self.start


def steady_growth(memory: pd.Series, t: Mapping[str, float]) -> Growth | None:
    """The rise of a memory counter past its warm-up, when it is steady (not a step up to a plateau)."""
    memory = curves.finite(memory)
    warmup = max(3, int(np.ceil(len(memory) * t["warmup"])))
    judged = memory.iloc[warmup:]
    if len(judged) < t["min_points"]:
        return None
    whole, late = curves.trend(judged), curves.trend(curves.tail(judged, 0.5, 3))
    if whole is None or late is None or not whole.rising or late.slope < 0.5 * whole.slope:
        return None
    growth = Growth(
        whole.slope,
        curves.start_level(judged),
        curves.end_level(judged),
        float(judged.index[0]),
        float(judged.index[-1]),
    )
    if growth.start <= 0:
        return None
    # A large baseline (a notebook, a process that trained other models) hides a leak in the
    # relative growth; a straight rise of many MiB is a leak whatever the total.
    steady = curves.linearity(judged) >= t["min_linearity"] and growth.rise >= t["min_rise_mib"] * 2**20
    return growth if growth.relative >= t["min_growth"] or steady else None


class MemoryLeak(Rule):
    """
    ## What it detects
    Device memory held by tensors (``cuda_allocated``) or the process's
    resident memory (``rss``) grows steadily with the step, past the
    warm-up of the first steps.

    ## Why it matters
    Memory that grows every step is a leak: the run will die of
    out-of-memory, and before that it slows down. The classic cause is
    keeping tensors that still hold their autograd graph:
    ``total_loss += loss`` instead of ``loss.item()``, appending outputs or
    losses to a list, or ``retain_graph=True``.

    ## How it decides
    The first ``warmup`` of the points are skipped (allocators and caches
    fill up there). On the rest, the Theil-Sen slope must be rising, the
    last half must still rise at least half as fast (a step up to a plateau
    is caching, not a leak), and the counter must grow by ``min_growth`` of
    its level, or, whatever the level, rise along a straight line (R^2 of a
    linear fit at least ``min_linearity``) by at least ``min_rise_mib`` MiB:
    in a long-lived process with a large baseline (a notebook, a script that
    trains several models) a steady leak is a small share of the total. With
    a known device total it projects the steps left until the memory is full.

    ## What to do
    Log ``loss.item()`` (or ``loss.detach()``) instead of the loss tensor;
    do not keep outputs or losses across steps without ``.detach()``; drop
    ``retain_graph=True``; look for growing caches (lists, dicts) in the
    training loop.
    """

    code = "MEM001"
    live = True
    live_after = 100
    name = "memory-leak"
    title = "Memory grows with every step"
    category = Category.RESOURCES
    severity = Severity.WARNING
    requires = ("rss",)
    priority = 20
    thresholds = (
        Threshold(
            "min_growth",
            0.1,
            "growth after warm-up, relative to the level after warm-up",
            source="healthy sample runs stay within 1% after warm-up; the recorded leak grows 35%",
        ),
        Threshold(
            "min_linearity",
            0.9,
            "R^2 of a straight line through the memory after warm-up that makes a rise steady",
            source="the recorded leaks rise at R^2 0.99; allocator and cache growth comes in steps "
            "that a line fits badly, and a flat counter's R^2 means nothing without min_rise_mib",
        ),
        Threshold(
            "min_rise_mib",
            64,
            "rise in MiB after warm-up that a steady rise must reach, whatever the baseline",
            source="the healthy recorded runs (sample_runs/examples/healthy, MEM001/good) rise at most "
            "0.1 MiB after warm-up; the recorded leak (one small MLP step's graph) rises 1.7 MiB per "
            "step, 64 MiB in under 40 steps",
        ),
        Threshold(
            "warmup",
            0.1,
            "fraction of the points skipped as warm-up",
            source="allocator and cache warm-up happens in the first few steps in practice",
        ),
        Threshold(
            "min_points", 10, "fewest memory points judged after warm-up", source="a steady trend needs ~10 points"
        ),
    )

    def check(self, run: Run, t: Mapping[str, float]) -> Iterator[Finding]:
        for column, total in (("cuda_allocated", "cuda_total"), ("rss", None)):
            growth = steady_growth(run.series(column), t) if run.has(column) else None
            if growth is not None:
                yield self._finding(run, column, growth, _capacity(run, total))

    def _finding(self, run: Run, column: str, growth: Growth, capacity: float | None) -> Finding:
        per_step = growth.slope / 1024**2
        message = (
            f"{column} grows {per_step:.3g} MiB per step from step {growth.first_step:.0f} to "
            f"{growth.last_step:.0f} ({growth.start / _GB:.3g} -> {growth.end / _GB:.3g} GiB, "
            f"+{growth.relative:.0%})"
        )
        steps_left = (capacity - growth.end) / growth.slope if capacity else None
        if steps_left is not None:
            message += f"; full in about {max(steps_left, 0):.0f} more steps at this rate"
        return self.finding(
            run,
            message=message,
            onset=growth.first_step,
            end=growth.last_step,
            evidence={
                "column": column,
                "bytes_per_step": growth.slope,
                "start_bytes": growth.start,
                "end_bytes": growth.end,
                "growth": growth.relative,
                "steps_to_full": steps_left,
            },
            causes=[
                "tensors kept with their autograd graph: total_loss += loss, or a list of losses/outputs",
                "retain_graph=True",
                "a cache (list, dict) that grows every step",
            ],
            fixes=[
                "log loss.item() instead of the loss tensor",
                "detach() whatever is kept across steps",
                "drop retain_graph=True",
                "clear or bound growing caches in the training loop",
            ],
        )


def _capacity(run: Run, column: str | None) -> float | None:
    if column is None or not run.has(column):
        return None
    values = curves.finite(run.series(column))
    return float(values.max()) if len(values) else None


class NearOutOfMemory(Rule):
    """
    ## What it detects
    The run ran out of device memory (``out_of_memory`` events), or came
    close: peak allocated memory or the device's used memory above
    ``max_used`` of its capacity.

    ## Why it matters
    An out-of-memory error ends the run. A run at 95%+ of the device dies
    on the first longer sequence, larger batch or fragmented allocation,
    and the caching allocator starts freeing and retrying, which slows
    every step.

    ## How it decides
    Any ``out_of_memory`` event is an error. Otherwise the highest of
    ``cuda_peak / cuda_total`` and ``gpu_mem_used / gpu_mem_total`` above
    ``max_used`` is a warning. Needs either the memory counters or events.

    ## What to do
    Reduce the batch size (keep the effective batch with gradient
    accumulation); use mixed precision (bf16/fp16); enable activation
    checkpointing; free references to tensors you no longer need; set
    ``PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True`` against fragmentation.
    """

    code = "MEM002"
    live = True
    name = "out-of-memory"
    title = "Out of device memory, or close to it"
    category = Category.RESOURCES
    severity = Severity.WARNING
    requires = ("cuda_peak or gpu_mem_used, or events",)
    priority = 5
    thresholds = (
        Threshold(
            "max_used",
            0.95,
            "share of device memory in use that counts as close to running out",
            source="practice: above ~95% the caching allocator retries and fragmentation makes OOM likely "
            "(PyTorch CUDA semantics notes on memory management)",
        ),
    )

    def missing(self, run: Run) -> list[str]:
        if run.has("cuda_peak") or run.has("gpu_mem_used") or not run.events.empty:
            return []
        return list(self.requires)

    def check(self, run: Run, t: Mapping[str, float]) -> Iterator[Finding]:
        ooms = events_named(run, schema.EV_OOM)
        if len(ooms):
            yield self._oom(run, ooms)
            return
        used, step, column = _highest_share(run)
        if used is not None and used > t["max_used"]:
            yield self.finding(
                run,
                onset=step,
                steps=[step],
                message=f"{column} reached {used:.1%} of device memory at step {step:.0f}",
                evidence={"share": used, "column": column},
                causes=["batch, sequence or model too large for the device"],
                fixes=_MEMORY_FIXES,
            )

    def _oom(self, run: Run, ooms: pd.DataFrame) -> Finding:
        first = float(ooms["step"].iloc[0])
        detail = str(ooms["error"].iloc[0]) if "error" in ooms.columns else ""
        return self.finding(
            run,
            severity=Severity.ERROR,
            onset=first,
            steps=ooms["step"].tolist(),
            message=f"out of memory at step {first:.0f}" + (f": {detail[:160]}" if detail else ""),
            evidence={"events": len(ooms), "first_step": first},
            causes=["batch, sequence or model too large for the device", "a memory leak (see MEM001)"],
            fixes=_MEMORY_FIXES,
        )


_MEMORY_FIXES = [
    "halve the batch size and keep the effective batch with gradient accumulation",
    "train in bf16/fp16 mixed precision",
    "enable activation checkpointing",
    "PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True against fragmentation",
]


def _highest_share(run: Run) -> tuple[float | None, float, str]:
    """Highest used/total share among the memory counters, with its step and column."""
    best: tuple[float | None, float, str] = (None, 0.0, "")
    for used, total in (("cuda_peak", "cuda_total"), ("gpu_mem_used", "gpu_mem_total")):
        if not (run.has(used) and run.has(total)):
            continue
        share = curves.finite(run.series(used) / run.series(total))
        if len(share) and (best[0] is None or share.max() > best[0]):
            best = (float(share.max()), float(share.idxmax()), used)
    return best


class SkippedAmpSteps(Rule):
    """
    ## What it detects
    The AMP GradScaler keeps skipping optimizer steps because the scaled
    gradients overflow, beyond the few skips at the start while the scale
    calibrates, and the loss scale collapses.

    ## Why it matters
    A skipped step is a step that did not train. The scaler halves its scale
    at each overflow and doubles it only after ``growth_interval`` (2000)
    clean steps, so a healthy run skips a handful of steps at the start and
    then about one in two thousand. Repeated skips mean the gradients
    themselves overflow (or are NaN) even at a small scale; a scale below 1
    means AMP is no longer protecting anything.

    ## How it decides
    Skips at the very start, one after another, are calibration and
    excused. Of the rest, it fires when there are at least ``min_skips``
    and they are more than ``max_rate`` of the steps after calibration. It
    is an error when the last loss scale is below ``min_scale``.

    ## What to do
    Find where the gradients overflow (NF001 names the module when the
    probes saw it): a loss computed in fp16 (compute it in fp32), an
    unstable op (softmax/log/exp outside autocast's fp32 list), a learning
    rate too high. Prefer bf16, which has fp32's range and needs no scaler.
    """

    code = "AMP001"
    name = "amp-steps-skipped"
    title = "AMP GradScaler skips steps repeatedly"
    category = Category.RESOURCES
    severity = Severity.WARNING
    requires = ("events",)
    priority = 15
    thresholds = (
        Threshold(
            "min_skips",
            3,
            "fewest skips after calibration",
            source="practice: one or two are the scaler probing a larger scale",
        ),
        Threshold(
            "max_rate",
            0.01,
            "skipped share of the steps after calibration",
            source="GradScaler's default growth_interval=2000 gives ~0.05% skips in a healthy run "
            "(PyTorch AMP docs); 1% is 20x that",
        ),
        Threshold(
            "min_scale",
            1.0,
            "loss scale below which AMP scaling has collapsed",
            source="a scale under 1 shrinks the gradients instead of protecting them from underflow",
        ),
    )

    def check(self, run: Run, t: Mapping[str, float]) -> Iterator[Finding]:
        skips = events_named(run, schema.EV_SKIPPED_STEP)
        steps = skips["step"].to_numpy(dtype="float64")
        if not len(steps):
            return
        first = float(run.steps["step"].min()) if len(run.steps) else steps[0]
        calibration = _calibration_skips(steps, first)
        later = steps[calibration:]
        after = max(float(run.last_step or steps[-1]) - (steps[calibration - 1] if calibration else first - 1), 1.0)
        if len(later) < t["min_skips"] or len(later) / after <= t["max_rate"]:
            return
        scale = _last_scale(run, skips)
        collapsed = scale is not None and scale < t["min_scale"]
        yield self.finding(
            run,
            onset=later[0],
            steps=later,
            severity=Severity.ERROR if collapsed else None,
            message=(
                f"{len(later)} optimizer steps skipped after calibration ({len(later) / after:.0%} of "
                f"{after:.0f} steps)" + (f"; loss scale down to {scale:.3g}" if scale is not None else "")
            ),
            evidence={
                "skipped": len(later),
                "calibration_skips": calibration,
                "rate": len(later) / after,
                "last_scale": scale,
            },
            causes=[
                "gradients overflow even at a small scale: loss or an op computed in fp16",
                "learning rate too high",
                "NaN gradients from the model itself (see NF001)",
            ],
            fixes=[
                "compute the loss in fp32 (outside autocast)",
                "switch to bf16 autocast (no scaler needed)",
                "lower the learning rate",
                "find the overflowing module with the non-finite probe (NF001)",
            ],
        )


def _calibration_skips(steps: np.ndarray, first: float) -> int:
    """How many skips open the run back to back (the scale calibrating down from its initial value)."""
    expected = first + np.arange(len(steps))
    back_to_back = steps <= expected + 1
    return int(np.argmin(back_to_back)) if not back_to_back.all() else len(steps)


def _last_scale(run: Run, skips: pd.DataFrame) -> float | None:
    if run.has("loss_scale"):
        values = curves.finite(run.series("loss_scale"))
        return float(values.iloc[-1]) if len(values) else None
    if "loss_scale" in skips.columns:
        values = pd.to_numeric(skips["loss_scale"], errors="coerce").dropna()
        return float(values.iloc[-1]) if len(values) else None
    return None
