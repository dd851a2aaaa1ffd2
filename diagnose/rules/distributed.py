"""Rules across the ranks of a multi-process run (torch.distributed).

They read ``run.ranks`` (rank -> that rank's own `Run`), which the reader of
per-rank files fills (see :mod:`diagnose.readers.ranks`); on a single-process
run they find nothing. Findings carry the rank they blame in ``Finding.rank``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd

from diagnose import curves
from diagnose.rules.base import RANKS, Category, Finding, Rule, Severity, Threshold
from diagnose.rules.helpers import event_records
from diagnose.run import Run
from diagnose.runfile import schema


def _ranks(run: Run) -> dict[int, Run]:
    """Every rank's own run, when there are at least two; else empty."""
    return run.ranks if len(run.ranks) >= 2 else {}


def _table(ranks: dict[int, Run], column: str, *, keep_nan: bool = False) -> pd.DataFrame:
    """step x rank values of a step column, only steps that every rank logged."""
    series = {rank: r.series(column, keep_nan=keep_nan) for rank, r in ranks.items() if r.has(column)}
    if len(series) < len(ranks):
        return pd.DataFrame()
    series = {rank: s[~s.index.duplicated(keep="last")] for rank, s in series.items()}
    return pd.DataFrame(series).dropna()


def _others_median(table: pd.DataFrame, rank: int) -> pd.Series:
    return table.drop(columns=rank).median(axis=1)


def _blame(finding: Finding, rank: int | None) -> Finding:
    """The finding, naming the rank it blames (``Rule.finding`` names the run's own rank)."""
    return replace(finding, rank=rank)


def _rank_list(ranks: list[int]) -> str:
    return ", ".join(str(r) for r in ranks)


class RankOutlier(Rule):
    """
    ## What it detects
    One rank whose training loss (or gradient norm) stays far from the other
    ranks' at the same steps, while the other ranks agree with each other.

    ## Why it matters
    Data-parallel ranks train one model on different shards of the same data:
    their losses differ by batch noise only. A rank that sits persistently
    higher or lower sees different data (a shard of another split, unshuffled
    or corrupted files, labels mapped differently) or runs different code (a
    seed or augmentation that depends on the rank). Its gradients are averaged
    into everyone's update, so the whole model learns from the bad shard.

    ## How it decides
    At every step that all ranks logged, each rank's value is compared with
    the median of the other ranks on a log scale. A rank is an outlier when
    the median of that log-ratio over the second half of the run exceeds
    ``loss_ratio`` (``grad_ratio`` for gradient norms), the gap is at least
    ``min_gap`` of the run's starting loss, and the other ranks stay within
    half that ratio of each other. With two ranks the higher one is named,
    but either may be the broken one. Under DDP the gradient norm is measured
    after the all-reduce and is the same on every rank, so only the loss can
    differ there.

    ## What to do
    Check what that rank loads: the sampler (``DistributedSampler(dataset,
    rank=..., num_replicas=...)``, ``set_epoch`` every epoch), the file list
    or shard index it was given, and any preprocessing or label mapping that
    depends on the rank or the host. Print a few samples and targets per rank
    at the first step and compare their statistics.
    """

    code = "DST001"
    name = "rank-outlier"
    title = "One rank's loss or gradient norm differs from the others"
    category = Category.DISTRIBUTED
    severity = Severity.WARNING
    requires = (RANKS,)
    priority = 20
    thresholds = (
        Threshold(
            "loss_ratio",
            0.4,
            "median log-ratio of a rank's loss to the other ranks' median (0.4 = 1.5x)",
            source="healthy data-parallel ranks differ by batch noise only; the median over half a run of "
            "the per-step ratio stays within a few percent of 1",
        ),
        Threshold(
            "grad_ratio",
            0.7,
            "the same for the gradient norm (0.7 = 2x), which is noisier per batch",
            source="per-batch gradient norms scatter about twice as much as losses",
        ),
        Threshold(
            "min_gap",
            0.1,
            "smallest gap that counts, as a fraction of the run's starting loss",
            source="keeps tiny, converged losses (1e-4 vs 3e-4) from counting as a ratio",
        ),
        Threshold(
            "min_steps",
            6,
            "fewest steps logged by every rank",
            source="the median over the second half needs a few points to outvote one odd batch",
        ),
    )

    def check(self, run: Run, t: Mapping[str, float]) -> Iterator[Finding]:
        ranks = _ranks(run)
        for column, ratio in (("loss", t["loss_ratio"]), ("grad_norm", t["grad_ratio"])):
            found = self._outlier(run, _table(ranks, column), column, ratio, t)
            if found is not None:
                yield found
                return

    def _outlier(
        self, run: Run, table: pd.DataFrame, column: str, ratio: float, t: Mapping[str, float]
    ) -> Finding | None:
        if len(table) < t["min_steps"] or not (table.to_numpy() > 0).all():
            return None
        logs = np.log(table)
        recent = logs.iloc[len(logs) // 2 :]
        deviation = {rank: float((recent[rank] - _others_median(recent, rank)).median()) for rank in table.columns}
        rank = max(deviation, key=lambda r: abs(deviation[r]))
        others = recent.drop(columns=rank)
        spread = float((others.max(axis=1) - others.min(axis=1)).median()) if others.shape[1] > 1 else 0.0
        level = float(table[rank].iloc[len(table) // 2 :].median())
        reference = float(np.exp(_others_median(recent, rank)).median())
        start = float(table.iloc[0].median())
        if abs(deviation[rank]) <= ratio or spread > ratio / 2 or abs(level - reference) < t["min_gap"] * start:
            return None
        return self._finding(run, table, column, rank, level, reference, deviation[rank], ratio)

    def _finding(
        self,
        run: Run,
        table: pd.DataFrame,
        column: str,
        rank: int,
        level: float,
        reference: float,
        deviation: float,
        ratio: float,
    ) -> Finding:
        per_step = np.log(table[rank]) - np.log(table.drop(columns=rank)).median(axis=1)
        onset = float(per_step.index[np.argmax(np.abs(per_step.to_numpy()) > ratio)])
        what = "loss" if column == "loss" else "gradient norm"
        pair = " (with two ranks either one may be the odd one)" if table.shape[1] == 2 else ""
        message = (
            f"rank {rank}'s {what} is {math.exp(abs(deviation)):.2f}x {'above' if deviation > 0 else 'below'} "
            f"the other ranks' ({level:.4g} vs {reference:.4g} over the second half of the run){pair}"
        )
        finding = self.finding(
            run,
            message=message,
            onset=onset,
            evidence={
                "column": column,
                "rank": rank,
                "rank_level": level,
                "others_level": reference,
                "ratio": math.exp(deviation),
                "steps_compared": len(table),
            },
            causes=[
                "that rank reads a different or broken data shard (wrong split, unshuffled or corrupted files, "
                "DistributedSampler missing or given the wrong rank)",
                "preprocessing, augmentation or label mapping that depends on the rank or the host",
                "a seed derived from the rank where it should not be (or the same seed where shards should differ)",
            ],
            fixes=[
                f"print a few inputs and targets on rank {rank} and on another rank at step 1 and compare them",
                "check the sampler: DistributedSampler(dataset, num_replicas=world_size, rank=rank) and "
                "sampler.set_epoch(epoch) every epoch",
                "check the file list or shard index each rank was given",
            ],
        )
        return _blame(finding, rank)


class NonFiniteOnOneRank(Rule):
    """
    ## What it detects
    The rank where a NaN or Inf appeared first, when one rank got there
    before the others: its step, and the module and pass (forward, backward)
    the probes blamed on that rank.

    ## Why it matters
    Under data parallelism one rank's NaN reaches every rank within a step,
    through the gradient all-reduce, so every rank's log ends in NaN and the
    single-rank view (rank 0) shows only the consequence. The rank that made
    it first, and its batch at that step, are where the cause is.

    ## How it decides
    For each rank it takes the first step with a non-finite loss, a
    ``nonfinite`` event of the probes, or a non-finite gradient norm. A NaN
    made by the rank itself (forward, backward or loss) comes before one it
    received (the gradient norm after the all-reduce) at the same step. The
    rank that is strictly first is named; when all ranks break at once no
    rank is singled out (NF001 reports the run).

    ## What to do
    Look at the batch that rank loaded at that step: save the sample indices
    per rank, and check them for NaN/Inf, empty or extreme inputs. If the same
    physical device breaks again on other data, test its memory. Then follow
    NF001's advice for the module named.
    """

    code = "DST002"
    name = "nonfinite-on-one-rank"
    title = "A NaN/Inf appeared on one rank first"
    category = Category.DISTRIBUTED
    severity = Severity.ERROR
    requires = (RANKS,)
    priority = 2

    def check(self, run: Run, t: Mapping[str, float]) -> Iterator[Finding]:
        firsts = {rank: first for rank, r in _ranks(run).items() if (first := _first_nonfinite(r)) is not None}
        if not firsts:
            return
        earliest = min(f["order"] for f in firsts.values())
        leaders = [rank for rank, f in firsts.items() if f["order"] == earliest]
        if len(leaders) != 1:
            return
        yield self._finding(run, leaders[0], firsts, _ranks(run))

    def _finding(self, run: Run, rank: int, firsts: dict[int, dict[str, Any]], ranks: dict[int, Run]) -> Finding:
        first = firsts[rank]
        module = first.get("module")
        where = f" in the {first['where']} pass of module {module!r}" if module else f" ({first['where']})"
        followers = {r: f["step"] for r, f in firsts.items() if r != rank}
        clean = sorted(set(ranks) - set(firsts))
        after = (
            (
                f"; ranks {_rank_list(sorted(followers))} followed at step(s) "
                f"{_rank_list(sorted({int(s) for s in followers.values()}))}"
            )
            if followers
            else ""
        )
        after += f"; rank(s) {_rank_list(clean)} stayed finite" if clean else ""
        message = f"rank {rank} produced the first NaN/Inf at step {first['step']:.0f}{where}{after}"
        finding = self.finding(
            run,
            message=message,
            onset=first["step"],
            steps=[first["step"]],
            module=module,
            evidence={
                "rank": rank,
                "step": first["step"],
                "where": first["where"],
                "module": module,
                "type": first.get("type"),
                "followers": {str(r): s for r, s in followers.items()},
            },
            causes=[
                f"a bad sample in the batch rank {rank} loaded at that step (NaN/Inf or extreme values, "
                "an empty sequence, a division by zero in preprocessing)",
                "code that runs only on that rank (rank-dependent augmentation, loss term or data path)",
                "a faulty device, when it keeps happening on the same physical GPU",
            ],
            fixes=[
                f"save the sample indices each rank loads and check rank {rank}'s batch at step "
                f"{first['step']:.0f} with torch.isfinite",
                "assert torch.isfinite(inputs).all() on every rank before the forward while you search",
                "run that batch alone under torch.autograd.set_detect_anomaly(True) to find the operation",
                "if it follows one device across data, run a GPU memory test on that host",
            ],
        )
        return _blame(finding, rank)


def _first_nonfinite(run: Run) -> dict[str, Any] | None:
    """The rank's first non-finite value: step, where, module; ``order`` sorts own NaNs before received ones."""
    candidates = []
    loss = run.series("loss", keep_nan=True)
    step = curves.first_nonfinite_step(loss)
    if step is not None:
        candidates.append({"step": step, "where": schema.WHERE_LOSS, "order": (step, 0)})
    grads = run.series("grad_norm", keep_nan=True)
    step = curves.first_nonfinite_step(grads)
    if step is not None:
        candidates.append({"step": step, "where": schema.WHERE_GRAD_NORM, "order": (step, 1)})
    candidates += _nonfinite_events(run)
    # Among equals, the probes' event first: it names the module.
    return min(candidates, key=lambda c: (c["order"], c.get("module") is None)) if candidates else None


def _nonfinite_events(run: Run) -> list[dict[str, Any]]:
    result = []
    for event in event_records(run, schema.EV_NONFINITE):
        where = str(event.get("where", "?"))
        module, kind = event.get("module"), event.get("type")
        result.append(
            {
                "step": float(event["step"]),
                "where": where,
                "order": (float(event["step"]), 1 if where == schema.WHERE_GRAD_NORM else 0),
                "module": module if isinstance(module, str) else None,
                "type": kind if isinstance(kind, str) else None,
            }
        )
    return result


class StragglerRank(Rule):
    """
    ## What it detects
    A rank that is consistently the slowest: it spends clearly more time
    than the others on the work it does before the ranks synchronise.

    ## Why it matters
    Synchronous data parallelism runs at the pace of its slowest rank: every
    other rank waits in the gradient all-reduce. Under DDP every rank's step
    time is therefore the same, and the straggler only shows in how long each
    rank takes before it reaches the all-reduce.

    ## How it decides
    Per rank and step it takes the lead time, ``data_time + forward_time -
    forward_wait`` (written by ``watch`` under torch.distributed: the work
    before the gradient all-reduce, less the wait inside forward where DDP
    broadcasts buffers such as BatchNorm statistics and a fast rank waits for
    the slow one), or the step time when those are missing. After the first step, a rank is a straggler when it is
    the slowest at ``min_share`` of the steps and its median excess over the
    other ranks' median is at least ``min_excess`` of the median step time.

    ## What to do
    Find what that rank does differently: a slower data path (fewer
    DataLoader workers, a remote or cold disk, heavier samples in its shard),
    extra work only there (logging, checkpointing and evaluation on rank 0),
    CPU contention or wrong NUMA/GPU affinity on its host, or a slower or
    throttled device. Move rank-0-only work off the training step or make it
    asynchronous, and balance the shards by cost, not by count.
    """

    code = "DST003"
    name = "straggler-rank"
    title = "One rank is consistently slower than the others"
    category = Category.DISTRIBUTED
    severity = Severity.WARNING
    requires = (RANKS,)
    priority = 40
    thresholds = (
        Threshold(
            "min_share",
            0.7,
            "fraction of steps at which the rank must be the slowest",
            source="with 2 ranks a rank is the slowest at half the steps by chance",
        ),
        Threshold(
            "min_excess",
            0.15,
            "median excess over the other ranks, as a fraction of the median step time",
            source="scheduling jitter of a few percent of a step is normal; 15% is a slowdown worth fixing",
        ),
        Threshold(
            "min_steps",
            5,
            "fewest steps timed on every rank",
            source="min_share over fewer steps is decided by one or two noisy steps",
        ),
    )

    def check(self, run: Run, t: Mapping[str, float]) -> Iterator[Finding]:
        ranks = _ranks(run)
        lead, measure = _lead_times(ranks)
        if len(lead) < t["min_steps"]:
            return
        step_time = _table(ranks, "step_time")
        scale = float(np.median(step_time.to_numpy())) if not step_time.empty else float(np.median(lead.to_numpy()))
        slowest = lead.idxmax(axis=1)
        for rank in lead.columns:
            share = float((slowest == rank).mean())
            excess = float((lead[rank] - _others_median(lead, rank)).median())
            if share >= t["min_share"] and scale > 0 and excess >= t["min_excess"] * scale:
                yield self._finding(run, rank, share, excess, scale, measure, lead)

    def _finding(
        self, run: Run, rank: int, share: float, excess: float, scale: float, measure: str, lead: pd.DataFrame
    ) -> Finding:
        message = (
            f"rank {rank} is the slowest at {share:.0%} of steps: its {measure} exceeds the other ranks' by "
            f"{excess * 1000:.1f} ms per step (median), {excess / scale:.0%} of a step; every rank waits for it"
        )
        finding = self.finding(
            run,
            message=message,
            onset=float(lead.index[0]),
            evidence={
                "rank": rank,
                "share_slowest": share,
                "excess_seconds": excess,
                "median_step_time": scale,
                "measure": measure,
                "median_by_rank": {str(r): float(lead[r].median()) for r in lead.columns},
            },
            causes=[
                "a slower data path on that rank: fewer DataLoader workers, a remote or cold disk, heavier "
                "samples in its shard",
                "work only that rank does inside the step (logging, checkpointing, evaluation on rank 0)",
                "CPU contention or a wrong CPU/GPU affinity on its host, or a slower or throttled device",
            ],
            fixes=[
                "profile that rank's data loading (time next(iterator)) and raise num_workers / pin_memory",
                "move rank-0-only work out of the step or make it asynchronous",
                "check the host: other processes, CPU affinity (numactl), GPU clocks and temperature",
                "balance shards by cost (sequence length, image size), not by sample count",
            ],
        )
        return _blame(finding, rank)


def _lead_times(ranks: dict[int, Run]) -> tuple[pd.DataFrame, str]:
    """step x rank time spent before the ranks synchronise (or the whole step), first step dropped."""
    data, forward = _table(ranks, "data_time"), _table(ranks, "forward_time")
    wait = _table(ranks, "forward_wait")
    if not data.empty and not forward.empty and not wait.empty:
        lead, measure = (data + forward - wait).dropna(), "data + forward time without waiting for other ranks"
    elif not data.empty and not forward.empty:
        lead, measure = (data + forward).dropna(), "data + forward time"
    else:
        lead, measure = _table(ranks, "step_time"), "step time"
    return lead.iloc[1:], measure


class ParameterDesync(Rule):
    """
    ## What it detects
    Ranks whose parameters differ at the same step although every rank
    should hold the same replica: the first step and module where it shows,
    and the rank that disagrees with the others.

    ## Why it matters
    Data parallelism assumes identical replicas. Once they drift apart, each
    rank computes gradients for a different model, the averaged update fits
    none of them, and a checkpoint saved on rank 0 is not the model the other
    ranks trained. Nothing crashes; the run quietly learns worse.

    ## How it decides
    ``watch`` writes a float64 sum of each module's parameters (and their
    total) on a sampled schedule. Healthy replicas are bit-identical, so the
    sums match exactly; any relative difference above ``rel_tolerance`` at a
    step all ranks sampled is a desynchronisation. With three or more ranks
    the rank that differs from the majority is named; with two, rank 1 is
    compared with rank 0. Runs whose meta says the parameters are sharded
    (FSDP) are skipped.

    ## What to do
    Make every change to the parameters happen on every rank: wrap the model
    in DDP after loading checkpoints (DDP broadcasts rank 0's weights once,
    at construction), broadcast by hand after any rank-specific change, seed
    all ranks identically before building the model, make sure no parameter
    is left out of the gradient all-reduce (unused parameters, a
    hand-written all-reduce that skips some, ``no_sync`` left on), and keep
    buffers that are updated in place in sync (``broadcast_buffers``).
    """

    code = "DST004"
    name = "parameter-desync"
    title = "Parameters differ across ranks"
    category = Category.DISTRIBUTED
    severity = Severity.ERROR
    requires = (RANKS,)
    priority = 5
    thresholds = (
        Threshold(
            "rel_tolerance",
            1e-6,
            "relative difference of two parameter sums that counts as different",
            source="replicas under DDP are bit-identical; float32 rounding alone is about 1e-7 relative",
        ),
    )

    def check(self, run: Run, t: Mapping[str, float]) -> Iterator[Finding]:
        ranks = _ranks(run)
        if not ranks or not _replicated(ranks):
            return
        sums = _table(ranks, "param_checksum")
        if sums.empty:
            return
        differs = _odd_ranks(sums, t["rel_tolerance"])
        bad_steps = [step for step, odd in differs.items() if odd]
        if bad_steps:
            yield self._finding(run, ranks, sums, bad_steps, differs[bad_steps[0]], t["rel_tolerance"])

    def _finding(
        self,
        run: Run,
        ranks: dict[int, Run],
        sums: pd.DataFrame,
        bad_steps: list[float],
        odd: list[int],
        tolerance: float,
    ) -> Finding:
        step = bad_steps[0]
        rank = odd[0]
        reference = _reference_rank(sums.loc[step], rank)
        module = _first_module(ranks, run, step, rank, reference, tolerance)
        where = f", first in module {module!r}" if module else ""
        message = (
            f"parameters of rank(s) {_rank_list(odd)} differ from rank {reference}'s "
            f"from step {step:.0f}{where} "
            f"({len(bad_steps)} of {len(sums)} compared steps differ)"
        )
        finding = self.finding(
            run,
            message=message,
            onset=step,
            steps=bad_steps[:20],
            module=module,
            evidence={
                "ranks": odd,
                "reference_rank": reference,
                "first_step": step,
                "checksums": {str(r): float(sums.loc[step, r]) for r in sums.columns},
                "steps_compared": len(sums),
                "steps_differing": len(bad_steps),
            },
            causes=[
                "parameters changed on one rank only (a checkpoint loaded or weights edited on one rank "
                "after DDP broadcast them)",
                "the model is not wrapped in DDP and was initialised with different seeds, or gradients are "
                "all-reduced by hand and some parameters are skipped",
                "unused parameters or no_sync left on, so some gradients were never averaged",
            ],
            fixes=[
                "load checkpoints and edit weights before wrapping the model in DDP, on every rank",
                "after any rank-specific change, broadcast: for p in model.parameters(): dist.broadcast(p.data, 0)",
                "seed every rank identically before building the model",
                "check that every parameter's gradient is all-reduced (find_unused_parameters, no_sync)",
            ],
        )
        return _blame(finding, rank)


def _replicated(ranks: dict[int, Run]) -> bool:
    """False when a rank says its parameters are sharded, or the ranks hold different models."""
    metas = [r.meta for r in ranks.values()]
    if any((m.get("distributed") or {}).get("replicated") is False for m in metas):
        return False
    sizes = {(m.get("model") or {}).get("parameters") for m in metas}
    return len(sizes) == 1


def _differ(a: float, b: float, tolerance: float) -> bool:
    return abs(a - b) > tolerance * max(abs(a), abs(b)) + 1e-12


def _odd_ranks(sums: pd.DataFrame, tolerance: float) -> dict[float, list[int]]:
    """Per step, the ranks whose sum differs from the majority's (from rank 0's when there are two)."""
    result = {}
    for step, row in sums.iterrows():
        values = row.to_dict()
        if len(values) == 2:
            first, second = sorted(values)
            result[step] = [second] if _differ(values[first], values[second], tolerance) else []
            continue
        agree = {r: sum(not _differ(v, w, tolerance) for w in values.values()) for r, v in values.items()}
        best = max(agree.values())
        result[step] = sorted(r for r, n in agree.items() if n < best) if best < len(values) else []
    return result


def _reference_rank(row: pd.Series, odd_rank: int) -> int:
    return int(min(r for r in row.index if r != odd_rank))


def _first_module(
    ranks: dict[int, Run], run: Run, step: float, rank: int, reference: int, tolerance: float
) -> str | None:
    """The first module, in model order, whose parameter sum differs between two ranks at ``step``."""
    sums = {}
    for r in (rank, reference):
        layers = ranks[r].layers
        if "param_checksum" not in layers.columns:
            return None
        at = layers[(layers["step"] == step) & layers["param_checksum"].notna()]
        sums[r] = dict(zip(at["module"], at["param_checksum"], strict=False))
    order = run.module_order() + sorted(sums[rank])
    for module in dict.fromkeys(order):
        if (
            module in sums[rank]
            and module in sums[reference]
            and _differ(sums[rank][module], sums[reference][module], tolerance)
        ):
            return module
    return None


class UnevenSteps(Rule):
    """
    ## What it detects
    Ranks that recorded different numbers of steps, or ranks of the world
    that wrote no file at all.

    ## Why it matters
    Synchronous ranks take the same steps. A rank that stopped early crashed,
    was killed (out of host memory, a preempted node) or left the training
    loop on its own condition, and the others then hung or went on without
    it; a rank with more steps saw more data (uneven shards, ``Join``).
    Every cross-rank comparison after that point is one-sided.

    ## How it decides
    The last step of each rank is compared with the furthest rank's. A rank
    that is short by more than ``max_short`` of the run (at least one step)
    is named, and so is every rank below ``world_size`` without a file. The
    tolerance covers ranks killed together whose last batch of records was
    not yet written.

    ## What to do
    Read that rank's own log and exit status for the error (an OOM killer
    message, a Python exception, NCCL timeouts). Give every rank the same
    number of batches (``DistributedSampler(drop_last=True)``) and make any
    early-stopping decision on one rank and broadcast it to all.
    """

    code = "DST005"
    name = "uneven-steps"
    title = "Ranks recorded different numbers of steps"
    category = Category.DISTRIBUTED
    severity = Severity.WARNING
    requires = (RANKS,)
    priority = 30
    thresholds = (
        Threshold(
            "max_short",
            0.02,
            "fraction of the run a rank may be short without counting",
            source="records reach the file in batches (about a second); ranks killed together can differ by one batch",
        ),
    )

    def check(self, run: Run, t: Mapping[str, float]) -> Iterator[Finding]:
        ranks = getattr(run, "ranks", None) or {}
        missing = list(run.meta.get("missing_ranks") or [])
        lasts = {rank: r.last_step for rank, r in ranks.items() if r.last_step is not None}
        if not lasts or (len(lasts) < 2 and not missing):
            return
        furthest = max(lasts.values())
        allowed = max(1.0, t["max_short"] * furthest)
        short = {rank: last for rank, last in sorted(lasts.items()) if furthest - last > allowed}
        if short or missing:
            yield self._finding(run, lasts, short, missing)

    def _finding(self, run: Run, lasts: dict[int, int], short: dict[int, int], missing: list[int]) -> Finding:
        furthest = max(lasts.values())
        parts = [f"rank {rank} stopped at step {last} while others reached {furthest}" for rank, last in short.items()]
        if missing:
            parts.append(f"rank(s) {_rank_list(missing)} wrote no file")
        onset = min(short.values()) if short else None
        finding = self.finding(
            run,
            message="; ".join(parts),
            onset=onset,
            evidence={
                "last_step_by_rank": {str(r): last for r, last in lasts.items()},
                "missing_ranks": missing,
                "furthest": furthest,
            },
            causes=[
                "the rank crashed or was killed (host out of memory, preemption, an exception only it hit)",
                "ranks got different numbers of batches (uneven shards, DistributedSampler without drop_last)",
                "a rank left the loop on its own condition (early stopping decided per rank)",
            ],
            fixes=[
                "read that rank's own log and exit status for the error",
                "give every rank the same number of batches: DistributedSampler(..., drop_last=True)",
                "decide early stopping on rank 0 and broadcast the decision to every rank",
            ],
        )
        blamed = next(iter(short), missing[0] if missing else None)
        return _blame(finding, blamed)
