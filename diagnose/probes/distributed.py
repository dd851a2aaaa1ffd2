"""Recording a run trained by several processes under ``torch.distributed``.

When a process group is initialised (and has more than one rank), every rank
writes its own run file next to the path it was given, with the rank in the
name: ``run.jsonl`` becomes ``run.rank0.jsonl``, ``run.rank1.jsonl``, ...
Each file's meta record holds ``rank``, ``world_size`` and a ``distributed``
block with the options below. The readers put the files back together.

By default no collective is ever issued: what the cross-rank rules need is
measured locally on each rank and compared later, from the files.

* ``data_time``: host seconds from the end of the previous optimizer step to
  this step's first training forward (waiting for data, host-side work).
* ``forward_time``: host seconds from the step's first training forward to the
  end of its last one. ``data_time + forward_time`` is the work a rank does
  before the gradient all-reduce, where ranks wait for each other; it names a
  straggler even though every rank's ``step_time`` is the same under DDP.
* ``forward_wait``: the part of ``forward_time`` before the model's first
  submodule starts, summed over the step's forward passes. DDP broadcasts the
  buffers (BatchNorm statistics) there, at the start of its forward, so a fast
  rank waits for the slow one inside its own forward; without that wait the
  lead ``data_time + forward_time - forward_wait`` is each rank's own work.
* ``param_checksum`` (step field) and per-module ``param_checksum`` (layer
  field): float64 sums of the parameters after the optimizer step, on a
  sampled schedule. Replicated parameters (DDP) are bit-identical across
  ranks, so any difference at the same step is a desynchronisation.

``distributed="gather"`` adds one ``all_gather`` of five numbers per rank
every ``gather_every`` optimizer steps, and rank 0 writes the cross-rank
summary (``ranks_loss_min/mean/max``, ``ranks_grad_norm_min/max``,
``ranks_lead_time_min/max``, ``slowest_rank``, ``ranks_checksum_spread``) into
its steps. That collective runs from its own hooks on a schedule every rank
follows identically (the first training forward after every
``gather_every``-th optimizer step); its payload is built defensively (a rank
whose probes failed sends NaN) and it keeps running after the watch itself
has failed, so a local failure can never leave the other ranks waiting in it.
Only `Watch.close` removes it: call ``close`` (or leave the ``with`` block) at
the same point on every rank, and do not use gather mode with uneven inputs
(DDP's ``Join``), where ranks take different numbers of steps. With the gloo
backend and a model on a GPU, the gather copies the five numbers to the host
(one synchronisation every ``gather_every`` steps); with NCCL it stays on the
device until the next flush.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from diagnose.errors import ConfigError
from diagnose.probes.base import Hook, Probe, is_sharded, local_part
from diagnose.probes.presets import Schedule
from diagnose.probes.record import StepRecord
from diagnose.runfile import schema

MODES = ("files", "gather", "off")
# Payload of the gather, one row per rank.
_PAYLOAD = ("loss", "grad_norm", "step_time", "lead_time", "checksum")


@dataclass(frozen=True)
class DistributedOptions:
    """How a watch records under ``torch.distributed`` (``watch(..., distributed=...)``).

    ``mode``: ``"files"`` (one file per rank, no collectives), ``"gather"``
    (also a cross-rank summary on rank 0, one collective every
    ``gather_every`` steps) or ``"off"`` (ignore the process group: write to
    the path as given, e.g. when only rank 0 is watched). ``checksum_every``:
    steps between parameter checksums (0: never). ``replicated``: whether every
    rank holds the same parameters; ``None`` guesses (False for FSDP models).
    """

    mode: str = "files"
    gather_every: int = 10
    checksum_every: int = 50
    replicated: bool | None = None

    @classmethod
    def parse(cls, value: str | DistributedOptions) -> DistributedOptions:
        options = cls(mode=value) if isinstance(value, str) else value
        if options.mode not in MODES:
            raise ConfigError(f"unknown distributed mode {options.mode!r}; choose one of {', '.join(MODES)}")
        if options.mode == "gather" and options.gather_every < 1:
            raise ConfigError("distributed gather_every must be at least 1")
        return options


@dataclass(frozen=True)
class RankSetup:
    """The rank this process records as, and what it records."""

    rank: int | None
    world_size: int | None
    options: DistributedOptions

    @classmethod
    def detect(
        cls, value: str | DistributedOptions, rank: int | None, world_size: int | None, optimizer: Any
    ) -> RankSetup:
        options = DistributedOptions.parse(value)
        if options.mode == "gather" and optimizer is None:
            raise ConfigError("distributed='gather' needs the optimizer (its steps set the schedule)")
        if options.mode != "off" and _group_ready():
            import torch.distributed as dist

            rank = dist.get_rank() if rank is None else rank
            world_size = dist.get_world_size() if world_size is None else world_size
        return cls(rank, world_size, options)

    @property
    def active(self) -> bool:
        """True when this process is one of several ranks and records as such."""
        return self.options.mode != "off" and self.rank is not None and (self.world_size or 1) > 1

    def file_for(self, path: Path) -> Path:
        """``run.jsonl`` -> ``run.rank3.jsonl`` for a rank of a multi-process run; else unchanged."""
        return schema.rank_file(path, self.rank) if self.active else path

    def describe(self, model: nn.Module) -> dict[str, Any]:
        """The ``distributed`` block of the meta record."""
        replicated = self.options.replicated
        if replicated is None:
            replicated = not _is_sharded(model)
        options = replace(self.options, replicated=replicated)
        return {"distributed": {**asdict(options), "backend": _backend()}}

    def probes(self) -> list[Probe]:
        return [RankProbe(Schedule(self.options.checksum_every))] if self.active else []

    def start_gather(self, watch: Any, probes: list[Probe]) -> RankGather | None:
        """The cross-rank gather, in gather mode; ``probes`` are the watch's attached probes."""
        if not (self.active and self.options.mode == "gather"):
            return None
        probe = next((p for p in probes if isinstance(p, RankProbe)), None)
        return RankGather(watch, probe, self.options.gather_every, self.rank)


def _group_ready() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def _backend() -> str | None:
    if not _group_ready():
        return None
    import torch.distributed as dist

    return str(dist.get_backend())


def _is_sharded(model: nn.Module) -> bool:
    """FSDP (and similar) hold a different shard of the parameters on each rank; FSDP2 (``fully_shard``)
    and tensor parallelism hold DTensor parameters."""
    return any(
        "FullyShardedDataParallel" in type(m).__name__ or hasattr(m, "_fsdp_state") for m in model.modules()
    ) or any(is_sharded(p) for p in model.parameters())


class RankProbe(Probe):
    """Per-rank timings and parameter checksums; never communicates with other ranks."""

    name = "ranks"
    provides = ("data_time", "forward_time", "forward_wait", "param_checksum", "layers.param_checksum")

    def __init__(self, checksums: Schedule) -> None:
        super().__init__()
        self.checksums = checksums
        self.last: StepRecord | None = None  # the last finished step, for the gather
        self._groups: list[tuple[str, list[nn.Parameter]]] = []
        self._step_end: float | None = None
        self._forward_start: float | None = None
        self._forward_end: float | None = None
        self._pass_start: float | None = None  # this forward pass's start, until its first submodule runs
        self._wait = 0.0

    def attach(self, host: Any) -> None:
        super().attach(host)
        for child in host.model.children():
            self.keep(child.register_forward_pre_hook(host.guard(self, self._on_submodule_start)))
        seen: set[int] = set()
        for name, module in host.modules:
            own = [p for p in module.parameters(recurse=False) if id(p) not in seen]
            seen.update(id(p) for p in own)
            if own:
                self._groups.append((name or schema.MODEL_MODULE, own))

    def on_forward_start(self, record: StepRecord) -> None:
        self._pass_start = time.perf_counter()
        if self._forward_start is None:
            self._forward_start = self._pass_start
            if self._step_end is not None:
                record.fields["data_time"] = self._forward_start - self._step_end

    def _on_submodule_start(self, module: nn.Module, args: Any) -> None:
        if self._pass_start is not None:
            self._wait += time.perf_counter() - self._pass_start
            self._pass_start = None

    def on_forward_end(self, record: StepRecord, output: Any) -> None:
        self._forward_end = time.perf_counter()

    def after_step(self, record: StepRecord) -> None:
        self._close_step(record)

    def finish(self, record: StepRecord) -> None:
        if self._forward_start is not None:  # no optimizer step ended this step
            self._close_step(record)
        if self._groups and self.checksums.due(record.step, self.host.first_step):
            with torch.no_grad():
                sums = [
                    torch.sum(local_part(p.detach()), dtype=torch.float64) for _, params in self._groups for p in params
                ]
                record.private["rank_checksums"] = torch.stack(sums)
        self.last = record

    def resolve(self, record: StepRecord) -> None:
        sums = record.private.get("rank_checksums")
        if sums is None:
            return
        sums = sums if isinstance(sums, list) else [sums]
        offset = 0
        for module, params in self._groups:
            record.layer(module, param_checksum=math.fsum(sums[offset : offset + len(params)]))
            offset += len(params)
        record.fields["param_checksum"] = math.fsum(sums)

    def payload(self, device: torch.device) -> torch.Tensor:
        """This rank's row of the gather: the last finished step's numbers, NaN where missing."""
        record = self.last
        if record is None:
            return _missing(device)
        fields = record.fields
        losses = [_tensor(v, device) for v in record.losses]
        sums = record.private.get("rank_checksums")
        lead = [fields.get("data_time", 0.0), fields.get("forward_time", math.nan), -fields.get("forward_wait", 0.0)]
        values = [
            torch.stack(losses).mean() if losses else _tensor(math.nan, device),
            _tensor(fields.get("grad_norm", math.nan), device),
            _tensor(fields.get("step_time", math.nan), device),
            _tensor(sum(lead), device),
            _total(sums, device) if sums is not None else _tensor(math.nan, device),
        ]
        return torch.stack(values)

    def _close_step(self, record: StepRecord) -> None:
        now = time.perf_counter()
        if self._forward_start is not None and self._forward_end is not None:
            record.fields["forward_time"] = self._forward_end - self._forward_start
            record.fields["forward_wait"] = self._wait
        self._step_end = now
        self._forward_start = self._forward_end = self._pass_start = None
        self._wait = 0.0


class RankGather:
    """One ``all_gather`` every ``every`` optimizer steps, run identically by every rank.

    It owns its hooks (an optimizer post-step hook counts steps, a forward
    pre-hook on the model exchanges), so it keeps the schedule even after the
    watch or its probes have been switched off on this rank; it sends NaN then.
    """

    def __init__(self, watch: Any, probe: RankProbe | None, every: int, rank: int | None) -> None:
        self.watch = watch
        self.probe = probe
        self.every = every
        self.rank = rank
        self.device = _payload_device()
        self._steps = 0
        self._done = 0
        self._handles = [  # Hook: pickles as a no-op, and stays out of torch.compile graphs on every rank alike
            watch.optimizer.register_step_post_hook(Hook(self._count)),
            watch.model.register_forward_pre_hook(Hook(self._maybe_exchange)),
        ]

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _count(self, *args: Any) -> None:
        self._steps += 1

    def _maybe_exchange(self, module: nn.Module, args: Any) -> None:
        training = torch.is_grad_enabled() and module.training
        if training and self._steps - self._done >= self.every:
            self._done = self._steps
            self._exchange()

    def _exchange(self) -> None:
        import torch.distributed as dist

        row = self._row()
        try:
            rows = [torch.empty_like(row) for _ in range(dist.get_world_size())]
            dist.all_gather(rows, row)
        except Exception as exc:  # noqa: BLE001 - the group itself is broken: every rank sees this
            self.remove()
            warnings.warn(
                f"diagnose: cross-rank gather stopped ({type(exc).__name__}: {exc})", RuntimeWarning, stacklevel=2
            )
            return
        if self.rank == 0:
            last = self.probe.last if self.probe is not None else None
            step = last.step if last is not None else self._steps
            self.watch.add_record(_summary(step, torch.stack(rows)))

    def _row(self) -> torch.Tensor:
        """Never raises: a rank that cannot measure still takes part, with NaN."""
        try:
            if self.probe is None or not self.probe.active:
                return _missing(self.device)
            return self.probe.payload(self.device)
        except Exception:  # noqa: BLE001 - the collective below must run on every rank regardless
            return _missing(self.device)


def _summary(step: int, table: torch.Tensor) -> StepRecord:
    """Rank 0's cross-rank summary of one gathered step (values stay on the device until the flush)."""
    column = {name: table[:, i] for i, name in enumerate(_PAYLOAD)}
    record = StepRecord(step)
    record.fields.update(
        ranks_loss_min=column["loss"].min(),
        ranks_loss_mean=column["loss"].mean(),
        ranks_loss_max=column["loss"].max(),
        ranks_grad_norm_min=column["grad_norm"].min(),
        ranks_grad_norm_max=column["grad_norm"].max(),
        ranks_lead_time_min=column["lead_time"].min(),
        ranks_lead_time_max=column["lead_time"].max(),
        slowest_rank=torch.nan_to_num(column["lead_time"], nan=-1.0).argmax().to(torch.float64),
        ranks_checksum_spread=column["checksum"].max() - column["checksum"].min(),
    )
    return record


def _payload_device() -> torch.device:
    if _backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _missing(device: torch.device) -> torch.Tensor:
    return torch.full((len(_PAYLOAD),), math.nan, dtype=torch.float64, device=device)


def _tensor(value: Any, device: torch.device) -> torch.Tensor:
    """A 0-d float64 tensor on ``device`` from a tensor (still on its device) or a float."""
    if isinstance(value, torch.Tensor):
        return value.detach().to(device=device, dtype=torch.float64).reshape(())
    return torch.tensor(float(value), dtype=torch.float64, device=device)


def _total(value: torch.Tensor | list[float], device: torch.device) -> torch.Tensor:
    """The sum of the per-parameter checksums, whether they are still a tensor or already floats."""
    if isinstance(value, torch.Tensor):
        return value.detach().to(device=device, dtype=torch.float64).sum()
    return torch.tensor(math.fsum(value), dtype=torch.float64, device=device)
