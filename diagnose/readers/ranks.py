"""A multi-process run: the per-rank files of one run read back as one `Run`.

Under ``torch.distributed`` every rank writes its own file next to the path it
was given: ``run.rank0.jsonl``, ``run.rank1.jsonl``, ... (see
:mod:`diagnose.probes.distributed`). Any of these paths opens the whole set:
``run.jsonl`` (even when no such file exists), ``run.rank0.jsonl``, or a
folder whose run files are all rank files. ``run.rank2.jsonl`` on its own
reads rank 2 alone.

How ranks are represented: the result is a `Run` whose own
frames (``steps``, ``evals``, ``layers``, ``events``, ``nan_steps``) are those
of rank 0 (the lowest rank present), with ``rank`` set to it. Every
single-rank rule therefore reads it exactly as it reads a single-process run,
and its findings name that rank. The other ranks are in ``ranks`` (rank ->
that rank's own `Run`, with ``Run.rank`` set), which the cross-rank rules
read; ``rank_frame("steps")`` gives every rank's rows in one frame with a
``rank`` column. ``meta["ranks"]`` lists the files read (rank, source, steps)
and ``meta["missing_ranks"]`` the ranks below ``world_size`` that wrote no file.
"""

from __future__ import annotations

import glob
from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path

import numpy as np
import pandas as pd

from diagnose.errors import InputError
from diagnose.readers import native
from diagnose.run import Run
from diagnose.runfile.schema import split_rank_name

SHARD_NORM = "grad_norm_shard"


def rank_sets(path: str | Path) -> list[list[Path]]:
    """The per-rank file sets ``path`` stands for (empty when it is no rank set)."""
    path = Path(path)
    if path.is_dir():
        return _folder_sets(path)
    named = split_rank_name(path)
    if named is not None and named[1] != 0:
        return []  # one particular rank, read alone
    base = named[0] if named else path.stem
    files = _siblings(path.parent, base, path.suffix)
    return [files] if files else []


def read_rank_set(files: list[Path], *, mapping: Mapping[str, str] | None = None) -> Run:
    """Read the files of one rank set into one `Run` with every rank in ``ranks``."""
    ranks: dict[int, Run] = {}
    notes: list[str] = []
    unread: list[InputError] = []
    for file in files:
        try:
            runs = native.read_jsonl(file, mapping=mapping)
        except InputError as exc:  # a rank that crashed before writing anything: the others still count
            unread.append(exc)
            notes.append(f"skipped {exc}")
            continue
        if len(runs) > 1:
            notes.append(f"{file.name} holds {len(runs)} runs; the last one is used")
        run = runs[-1]
        rank = split_rank_name(file)[1]
        run.rank = rank if run.rank is None else int(run.rank)
        ranks[run.rank] = run
    if not ranks:
        raise unread[0]
    _combine_sharded_norms(ranks)
    return _combine(ranks, files, notes)


def _combine_sharded_norms(ranks: dict[int, Run]) -> None:
    """``grad_norm`` of a run with sharded gradients (``fully_shard``): each rank recorded its part,
    ``grad_norm_shard``; the norm is the root of the sum of their squares, written into every rank's
    steps (and layers) where every rank of the run recorded its part."""
    world = max(int(run.meta.get("world_size") or 0) for run in ranks.values())
    if len(ranks) < world:
        return  # a rank's part is missing: any sum would be too small
    for kind, keys in (("steps", ["step"]), ("layers", ["step", "module"])):
        frames = [getattr(run, kind) for run in ranks.values()]
        if not all(SHARD_NORM in frame.columns for frame in frames):
            continue
        parts = [_logged_parts(run, frame, keys, kind) for run, frame in zip(ranks.values(), frames, strict=True)]
        total = np.sqrt((pd.concat(parts, axis=1, join="inner") ** 2).sum(axis=1, min_count=len(parts)))
        for run, frame in zip(ranks.values(), frames, strict=True):
            _write_norm(run, frame, keys, total)


def _write_norm(run: Run, frame: pd.DataFrame, keys: list[str], total: pd.Series) -> None:
    """Put the combined norm into ``frame`` as ``grad_norm`` (a norm the user logged is kept); a NaN
    part makes a logged NaN norm."""
    where = pd.MultiIndex.from_frame(frame[keys]) if len(keys) > 1 else pd.Index(frame["step"])
    combined = total.reindex(where).to_numpy()
    own = frame["grad_norm"].to_numpy(dtype="float64") if "grad_norm" in frame else combined
    frame["grad_norm"] = np.where(np.isnan(own), combined, own)
    if len(keys) == 1:
        nan = np.isin(frame["step"].to_numpy(), total.index[total.isna()])
        if nan.any():
            run.nan_steps["grad_norm"] = np.union1d(run.nan_steps.get("grad_norm", []), frame["step"].to_numpy()[nan])


def _logged_parts(run: Run, frame: pd.DataFrame, keys: list[str], kind: str) -> pd.Series:
    """The rows of ``frame`` where the rank recorded its part (a logged NaN included), by ``keys``."""
    logged = frame[SHARD_NORM].notna().to_numpy().copy()
    if kind == "steps":
        logged |= np.isin(frame["step"].to_numpy(), run.nan_steps.get(SHARD_NORM, []))
    return frame.loc[logged].set_index(keys)[SHARD_NORM]


def _combine(ranks: dict[int, Run], files: list[Path], notes: list[str]) -> Run:
    first = ranks[min(ranks)]
    base = split_rank_name(files[0])[0]
    own = {f.name: getattr(first, f.name) for f in fields(Run) if f.init and f.name != "ranks"}
    meta = dict(first.meta)
    meta["ranks"] = [{"rank": rank, "source": run.source, "steps": run.n_steps} for rank, run in sorted(ranks.items())]
    world_size = max([int(r.meta.get("world_size") or 0) for r in ranks.values()] + [max(ranks) + 1])
    meta["world_size"] = world_size
    meta["missing_ranks"] = sorted(set(range(world_size)) - set(ranks))
    warnings = list(first.warnings) + notes
    if meta["missing_ranks"]:
        warnings.append(f"no file for rank(s) {', '.join(map(str, meta['missing_ranks']))} of {world_size}")
    own.update(
        name=str(first.meta.get("name") or base), source=str(files[0].parent / base), meta=meta, warnings=warnings
    )
    return Run(**own, ranks=ranks)


def _siblings(folder: Path, base: str, suffix: str) -> list[Path]:
    """``base.rank<N><suffix>`` files in ``folder``, in rank order. The pattern names the base: every
    file of a folder of many runs asks this, and testing each entry of the folder would make that
    quadratic."""
    pattern = f"{glob.escape(base)}.rank*{glob.escape(suffix)}"
    found = [(split_rank_name(p), p) for p in folder.glob(pattern) if p.is_file()]
    return [p for named, p in sorted((n, p) for n, p in found if n is not None and n[0] == base)]


def _folder_sets(folder: Path) -> list[list[Path]]:
    """One set per base name, when every JSON Lines file directly in ``folder`` is a rank file."""
    files = sorted(p for p in folder.glob("*.jsonl") if p.is_file())
    names = [split_rank_name(p) for p in files]
    if not files or any(n is None for n in names):
        return []
    bases = sorted({n[0] for n in names})
    return [_siblings(folder, base, ".jsonl") for base in bases]
