"""`watch()`: attach the probes to a model and optimizer and record the run.

The `Watch` owns the step lifecycle. A step begins with the first training
forward pass after the previous optimizer step and ends when the optimizer
steps (or, without an optimizer, when a training loss is logged). Probes get
callbacks at those points; what they measure goes into one `StepRecord` per
step, and records reach the file in batches, with one host-device
synchronisation per batch.

Nothing here may break the user's training: every callback runs guarded, a
failing probe is recorded as a ``probe_error`` event and switched off, and a
failure of the watch itself switches the whole watch off.
"""

from __future__ import annotations

import atexit
import contextlib
import math
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from diagnose.live.monitor import LiveMonitor
from diagnose.live.policy import TrainingStopped
from diagnose.live.status import status_board
from diagnose.probes.activations import ActivationProbe
from diagnose.probes.amp import GradScalerProbe
from diagnose.probes.base import (
    Hook,
    Probe,
    clear_compiled_mark,
    dependency_order,
    first_float_tensor,
    ran_compiled,
)
from diagnose.probes.distributed import DistributedOptions, RankSetup
from diagnose.probes.gradients import GradientProbe, UpdateRatioProbe
from diagnose.probes.learning_rate import LearningRateProbe
from diagnose.probes.loss_inputs import LayerInputProbe, LossInputProbe
from diagnose.probes.memory import MemoryProbe, NvmlProbe
from diagnose.probes.nan_ops import NonFiniteOperationProbe
from diagnose.probes.nonfinite import NonFiniteProbe
from diagnose.probes.presets import Preset, get_preset
from diagnose.probes.record import StepRecord, materialize
from diagnose.probes.signatures import (
    CarriedGradientProbe,
    DuplicateRowsProbe,
    LossGradientProbe,
    OptimizerCoverageProbe,
    RecurrentLayoutProbe,
    StepGradientProbe,
    TrainingModeProbe,
    WarningProbe,
)
from diagnose.probes.summary import describe_run
from diagnose.probes.timing import StepTimeProbe
from diagnose.runfile import RunWriter, schema

_CALLBACKS = (
    "on_forward_start",
    "on_forward_end",
    "on_output_grad",
    "on_gradients_ready",
    "before_step",
    "after_step",
    "finish",
    "resolve",
)

# Records waiting for the host: bounded so that a run that never flushes by
# time (very fast steps) still writes regularly and holds little memory.
_MAX_PENDING = 500
# Longest text kept from a non-numeric value given to `Watch.log`.
_MAX_NOTE = 500
# Logged keys whose canonical names are kept (a loop that logs a new key at every step keeps no more).
_MAX_KEY_NAMES = 1000
_COMPILED = (
    "the model runs under torch.compile: hooks cannot see inside a compiled graph, so activations, "
    "layer inputs and the module that made a NaN/Inf are not recorded for the modules in it"
)


class Watch:
    """Probes attached to one model; use `diagnose.watch` to create it."""

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer | None = None,
        path: str | Path = "diagnose-run.jsonl",
        *,
        preset: str | Preset = "default",
        metadata: dict[str, Any] | None = None,
        name: str | None = None,
        scaler: Any = None,
        every: dict[str, int] | None = None,
        start_step: int = 1,
        flush_seconds: float = 1.0,
        rank: int | None = None,
        world_size: int | None = None,
        distributed: str | DistributedOptions = "files",
        live: bool = True,
        stop_on: str | list[str] | None = None,
        on_finding: Callable[[Any], Any] | None = None,
        status: bool = False,
    ) -> None:
        self.model = model
        self.optimizer = optimizer
        self.preset = get_preset(preset).with_overrides(every)
        self.ranks = RankSetup.detect(distributed, rank, world_size, optimizer)
        self.path = self.ranks.file_for(Path(path))
        self.first_step = start_step
        self.modules = list(model.named_modules())
        self._module_types = {name or schema.MODEL_MODULE: type(module).__name__ for name, module in self.modules}
        self.params = _owned_parameters(model)
        self.training_pass = False
        self.optimizer_steps = 0
        self._record = StepRecord(start_step)
        self._pending: list[StepRecord] = []
        self._step_done = False
        self._user_logged = False  # the user logged a training value into the record in progress
        self._closed = False
        self._handles: list[Any] = []
        self._gather = None
        self._live = None
        self._probes: list[Probe] = []
        self._implementers: dict[str, tuple[tuple[Probe, Callable[..., Any]], ...]] = {}
        self._warned_keys: set[str] = set()
        self._key_names: dict[str, tuple[bool, str]] = {}  # see _name_key
        self._compiled_noted = False
        self._writer = self._open(flush_seconds)
        if self._writer is None:
            return
        self.path = self._writer.path  # another live run may hold the path given
        run_name = name or Path(path).stem
        self._live = (
            LiveMonitor(
                run_name,
                self._writer.write,
                stop_on=stop_on,
                on_finding=on_finding,
                status=status_board() if status else None,
            )
            if live or stop_on or on_finding or status
            else None
        )
        self._emit(
            describe_run(
                model,
                optimizer,
                name=run_name,
                metadata=metadata,
                preset=self.preset,
                rank=self.ranks.rank,
                world_size=self.ranks.world_size,
            )
            | self.ranks.describe(model)
        )
        for probe in self._choose_probes(scaler):
            self._attach(probe)
        self._install_hooks()
        # Cross-rank gather (opt-in): its own hooks, removed only by close() so that it keeps
        # every rank's schedule even after this watch failed.
        self._gather = self.ranks.start_gather(self, self._probes)
        atexit.register(self.close)

    # -- public API ------------------------------------------------------------

    @property
    def record(self) -> StepRecord:
        """The record of the step in progress."""
        return self._record

    @property
    def step(self) -> int:
        return self._record.step

    def log(self, step: int | None = None, **scalars: Any) -> None:
        """Record the training loss (tensor or float) and any other scalar.

        Keys starting with ``val_``, ``eval_``, ``test_`` (or ``valid``) go to
        evaluation records; everything else belongs to the training step.
        ``step`` defaults to the step in progress, counted in optimizer steps.
        """
        if self._closed:
            return
        try:
            self._log(step, scalars)
        except TrainingStopped:
            raise
        except Exception as exc:  # noqa: BLE001 - logging must never stop training (only stop_on does)
            self._fail(exc)

    def flush(self) -> None:
        """Write everything measured so far (one host-device synchronisation)."""
        if self._closed:
            return
        try:
            self._flush()
        except Exception as exc:  # noqa: BLE001
            self._fail(exc)

    def close(self) -> None:
        """Write what is left and remove every hook. Safe to call twice."""
        if self._gather is not None:
            self._gather.remove()
        if self._closed:
            return
        try:
            if self._holds_a_step():
                self._finish_step()
            self._flush(final=True)
        except TrainingStopped:
            pass  # the last step matched stop_on: there is no loop left to stop
        except Exception as exc:  # noqa: BLE001
            warnings.warn(f"diagnose: could not write the last records: {exc}", RuntimeWarning, stacklevel=2)
        finally:
            self._shutdown()

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        if exc is not None and not self._closed:
            self._record_exception(exc)
        self.close()

    # -- probe host API (see probes.base.ProbeHost) ------------------------------

    def guard(self, probe: Probe, fn: Callable[..., Any]) -> Callable[..., Any]:
        """Wrap a probe callback so that its failure switches the probe off instead of raising."""

        def guarded(*args: Any) -> Any:
            if not probe.active:
                return None
            try:
                return fn(*args)
            except Exception as exc:  # noqa: BLE001
                self._probe_failed(probe, exc)
                return None

        return Hook(guarded)

    def add_record(self, record: StepRecord) -> None:
        """Queue a record measured outside the step lifecycle; it is written with the next batch."""
        if not self._closed:
            self._pending.append(record)

    def gradients_ready(self) -> None:
        """Read the gradient norms now: for loops that clip before the watched model's
        backward hook could fire (e.g. a training step that calls submodules directly)."""
        if not self._closed:
            self._each("on_gradients_ready", self._record)

    def end_step(self) -> None:
        """Mark the step in progress as complete; the next training forward opens a new one."""
        self._step_done = True

    # -- lifecycle -------------------------------------------------------------

    def _open(self, flush_seconds: float) -> RunWriter | None:
        """The run file's writer; None (recording off, one warning) when the path cannot be written."""
        try:
            return RunWriter(self.path, flush_seconds=flush_seconds)
        except OSError as exc:
            warnings.warn(
                f"diagnose: cannot write the run file {self.path} ({exc.strerror or exc}); "
                "training goes on without recording",
                RuntimeWarning,
                stacklevel=4,
            )
            self._closed = True
            return None

    def _choose_probes(self, scaler: Any) -> list[Probe]:
        preset = self.preset
        probes: list[Probe] = [StepTimeProbe(), MemoryProbe(preset.memory)]
        probes.append(GradientProbe(preset.layer_grads, scaler))
        if self.optimizer is not None:
            probes.append(LearningRateProbe())
            if preset.updates.every:
                probes.append(UpdateRatioProbe(preset.updates))
        if preset.activations.every:
            probes += [ActivationProbe(preset.activations), LayerInputProbe(preset.activations)]
        probes += self._signature_probes()
        if preset.nvml.every and NvmlProbe.available_for(self.model):
            probes.append(NvmlProbe(preset.nvml))
        if scaler is not None:
            probes.append(GradScalerProbe(scaler, preset.memory))
        probes += self.ranks.probes()
        if preset.nonfinite:
            probes.append(NonFiniteOperationProbe())
        probes.append(NonFiniteProbe(per_module=preset.nonfinite))
        return dependency_order(probes)

    def _signature_probes(self) -> list[Probe]:
        """The bug signatures (see `diagnose.probes.signatures`): once-only checks always,
        sampled ones on the per-layer gradient schedule."""
        preset = self.preset
        if not preset.signatures:
            return [LossInputProbe(preset.layer_grads, signatures=False)] if preset.layer_grads.every else []
        probes: list[Probe] = [WarningProbe(), DuplicateRowsProbe(), RecurrentLayoutProbe()]
        if self.optimizer is not None:
            probes += [OptimizerCoverageProbe(), TrainingModeProbe(preset.activations)]
            if preset.layer_grads.every:
                probes += [CarriedGradientProbe(preset.layer_grads), StepGradientProbe(preset.layer_grads)]
        if preset.layer_grads.every:
            probes.append(LossInputProbe(preset.layer_grads))
        if preset.nonfinite:
            probes.append(LossGradientProbe())
        return probes

    def _attach(self, probe: Probe) -> None:
        try:
            probe.attach(self)
        except Exception as exc:  # noqa: BLE001 - e.g. NVML missing a driver
            probe.detach()
            self._record.event(
                schema.EV_PROBE_ERROR, probe=probe.name, phase="attach", error=f"{type(exc).__name__}: {exc}"
            )
            return
        self._probes.append(probe)
        self._index_callbacks()

    def _install_hooks(self) -> None:
        self._output_grad_hook = self._safe(self._on_output_grad)  # made once: registered at every step
        self._handles.append(self.model.register_forward_pre_hook(self._safe(self._on_forward_start)))
        self._handles.append(self.model.register_forward_hook(self._safe(self._on_forward_end)))
        if self.optimizer is not None:
            self._handles.append(self.optimizer.register_step_pre_hook(self._safe(self._before_step)))
            self._handles.append(self.optimizer.register_step_post_hook(self._safe(self._after_step)))

    def _safe(self, fn: Callable[..., Any]) -> Hook:
        def safe(*args: Any) -> None:
            if self._closed:
                return
            try:
                fn(*args)
            except TrainingStopped:
                raise
            except Exception as exc:  # noqa: BLE001
                self._fail(exc)

        return Hook(safe)

    def _on_forward_start(self, module: nn.Module, args: Any) -> None:
        self.training_pass = torch.is_grad_enabled() and self.model.training
        if not self.training_pass:
            return
        if self._step_done:
            self._finish_step()
        self._each("on_forward_start", self._record)

    def _on_forward_end(self, module: nn.Module, args: Any, output: Any) -> None:
        if not self.training_pass:
            return
        self._each("on_forward_end", self._record, output)
        if "on_output_grad" in self._implementers:
            tensor = first_float_tensor(output)
            if tensor is not None and tensor.requires_grad:
                # A hook on a tensor dies with the tensor; no handle to keep.
                tensor.register_hook(self._output_grad_hook)

    def _on_output_grad(self, grad: torch.Tensor) -> None:
        self._each("on_output_grad", self._record, grad)

    def _before_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        if self._step_done:  # a loop whose forward never goes through the watched module
            self._finish_step()
        self._each("before_step", self._record)

    def _after_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        self.optimizer_steps += 1
        self._each("after_step", self._record)
        self.end_step()

    def _holds_a_step(self) -> bool:
        """Whether the record in progress is a step: an optimizer step, a backward, something the user
        logged, or an event. A forward pass after the last step (evaluating in train mode) is none."""
        record = self._record
        return (
            self._step_done
            or self._user_logged
            or bool(record.losses or record.events)
            or record.grad_norms is not None
            or "evals" in record.private
        )

    def _finish_step(self) -> None:
        record = self._record
        self._each("finish", record)
        if ran_compiled():  # probes read the mark in finish(); the next step starts unmarked
            clear_compiled_mark()
            if not self._compiled_noted:
                self._compiled_noted = True
                record.event(schema.EV_COMPILED, detail=_COMPILED)
        self._pending.append(record)
        self._record = StepRecord(record.step + 1)
        self._step_done = False
        self._user_logged = False
        urgent = self._live is not None and self._live.step_finished(record)
        if urgent or len(self._pending) >= _MAX_PENDING or self._writer.due():
            self._flush()
        stop = self._live.take_stop() if self._live is not None else None
        if stop is not None:
            self.close()
            raise TrainingStopped(stop)

    def _each(self, callback: str, *args: Any) -> None:
        for probe, method in self._implementers.get(callback, ()):
            try:
                method(*args)
            except Exception as exc:  # noqa: BLE001 - a probe bug switches the probe off
                self._probe_failed(probe, exc)

    def _index_callbacks(self) -> None:
        """Which probes implement each callback, with the method bound once: the others are not called at
        all, and the callers spare an attribute look-up per probe and callback, every step."""
        implementers = {
            name: tuple((p, getattr(p, name)) for p in self._probes if _implements(p, name)) for name in _CALLBACKS
        }
        # A callback no probe implements is left out, so that the watch can skip what only serves it.
        self._implementers = {name: pairs for name, pairs in implementers.items() if pairs}

    # -- logging ---------------------------------------------------------------

    def _log(self, step: int | None, scalars: dict[str, Any]) -> None:
        scalars = self._numbers(scalars)
        train: list[tuple[str, Any]] = []  # pairs: two keys of one name (loss=, train_loss=) both count
        evals: dict[str, Any] = {}
        for key, value in scalars.items():
            is_eval, canonical = self._key_names.get(key) or self._name_key(key)
            if is_eval:
                evals[canonical] = value
            else:
                train.append((canonical, value))
        if train:
            if step is None and self._step_done and self._record.losses:
                self._finish_step()  # the step's loss is in: this one belongs to the next step
            record = self._record_for_train(step)
            self._user_logged = True
            for canonical, value in train:
                if canonical == "loss":
                    record.losses.append(value)
                else:
                    record.fields[canonical] = value
            if self.optimizer is None and any(canonical == "loss" for canonical, _ in train):
                self.end_step()
        if evals:
            target = self._eval_record(step)
            target.private.setdefault("evals", {}).update(evals)
            if target is not self._record:
                self._pending.append(target)

    def _eval_record(self, step: int | None) -> StepRecord:
        """Where logged evaluation values go: the step named, else the step in progress, else, when the
        record in progress has seen no training yet (an evaluation whose forward ran in train mode with
        gradients on opened it), the last step: the weights evaluated are the ones that step left."""
        record = self._record
        if step is not None and int(step) != record.step:
            return StepRecord(int(step))
        untrained = not (self._step_done or self._user_logged or record.losses or record.grad_norms is not None)
        if step is None and untrained and record.step > self.first_step:
            return StepRecord(record.step - 1)
        return record

    def _name_key(self, key: str) -> tuple[bool, str]:
        """Whether a logged key is an evaluation value, and its canonical name; kept, since a loop
        logs the same few keys at every step."""
        is_eval = schema.is_eval_key(key)
        named = (is_eval, schema.canonical_eval_key(key) if is_eval else schema.canonical_step_key(key))
        if len(self._key_names) < _MAX_KEY_NAMES:
            self._key_names[key] = named
        return named

    def _numbers(self, scalars: dict[str, Any]) -> dict[str, Any]:
        """The logged values that are numbers. Text (``phase="warmup-done"``) becomes a ``note`` event of
        the step in progress; anything else (None, a list, an object) is left out with one warning per key."""
        numbers = {}
        for key, value in scalars.items():
            try:
                numbers[key] = _scalar(value)
            except (TypeError, ValueError, RuntimeError):
                if isinstance(value, str):
                    self._record.event(schema.EV_NOTE, key=key, text=value[:_MAX_NOTE])
                elif key not in self._warned_keys:
                    self._warned_keys.add(key)
                    warnings.warn(
                        f"diagnose: log({key}=...) got a {type(value).__name__}, not a number or text; not recorded",
                        RuntimeWarning,
                        stacklevel=4,
                    )
        return numbers

    def _record_for_train(self, step: int | None) -> StepRecord:
        """The record train scalars belong to; an explicit step renumbers the step in progress."""
        if step is not None and int(step) != self._record.step:
            if self._record.losses:  # already holds another step's loss: keep it, start a new one
                self._finish_step()
            self._record.step = int(step)
        return self._record

    # -- writing ---------------------------------------------------------------

    def _flush(self, final: bool = False) -> None:
        records, self._pending = self._pending, []
        if records:
            materialize(records)
            for record in records:
                if record.losses:
                    record.fields["loss"] = math.fsum(record.losses) / len(record.losses)
                self._each("resolve", record)
                self._write(record)
        if self._live is not None:
            self._live.flushed(final=final)
        self._writer.flush()

    def _write(self, record: StepRecord) -> None:
        step = record.step
        if record.fields:
            self._emit({"kind": schema.STEP, "step": step, **record.fields})
        evals = record.private.get("evals")
        if evals:
            self._emit({"kind": schema.EVAL, "step": step, **evals})
        layers = [
            {
                "kind": schema.LAYER,
                "step": step,
                "module": module,
                "type": self._module_types.get(module, schema.OUTPUT_TYPE),
                **values,
            }
            for module, values in record.layers.items()
        ]
        for line in layers:
            self._writer.write(line)
        if self._live is not None and layers:
            self._live.observe_layers(layers)
        for event in record.events:
            self._emit({"kind": schema.EVENT, "step": step, **event})

    def _emit(self, line: dict[str, Any]) -> None:
        text = self._writer.write(line)
        if self._live is not None:
            self._live.observe(line, text)

    # -- failures --------------------------------------------------------------

    def _probe_failed(self, probe: Probe, exc: Exception) -> None:
        probe.detach()
        if probe in self._probes:
            self._probes.remove(probe)
            self._index_callbacks()
        error = _describe_error(exc)
        self._record.event(schema.EV_PROBE_ERROR, probe=probe.name, error=error)
        warnings.warn(
            f"diagnose: probe {probe.name!r} failed and was switched off ({error})", RuntimeWarning, stacklevel=3
        )

    def _fail(self, exc: Exception) -> None:
        """The watch itself broke: say so once, keep what was measured if possible, and get out of the way."""
        warnings.warn(
            f"diagnose: recording stopped after an internal error ({type(exc).__name__}: {exc})",
            RuntimeWarning,
            stacklevel=3,
        )
        with contextlib.suppress(Exception):  # the file itself may be the problem
            if not self._record.empty:
                self._finish_step()
            self._flush()
        with contextlib.suppress(Exception):
            self._writer.write(
                {
                    "kind": schema.EVENT,
                    "step": self._record.step,
                    "event": schema.EV_PROBE_ERROR,
                    "probe": "watch",
                    "error": f"{type(exc).__name__}: {exc}",
                }
            )
        self._shutdown()

    def _record_exception(self, exc: BaseException) -> None:
        text = str(exc).lower()
        # CUDA says "out of memory"; the CPU allocator says "can't allocate memory".
        is_oom = (
            isinstance(exc, (torch.cuda.OutOfMemoryError, MemoryError))
            or "out of memory" in text
            or "can't allocate memory" in text
        )
        detail: dict[str, Any] = {"error": f"{type(exc).__name__}: {str(exc)[:500]}"}
        if is_oom and torch.cuda.is_available():
            detail["cuda_allocated"] = torch.cuda.memory_allocated()
            detail["cuda_reserved"] = torch.cuda.memory_reserved()
        self._record.event(schema.EV_OOM if is_oom else schema.EV_EXCEPTION, **detail)

    def _shutdown(self) -> None:
        self._closed = True
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        for probe in self._probes:
            probe.detach()
        self._probes.clear()
        self._implementers = {}
        atexit.unregister(self.close)
        if self._live is not None:
            self._live.close()
        with contextlib.suppress(OSError):  # a full disk must not reach the training loop
            self._writer.close()


def _owned_parameters(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """(owning module name, parameter) for every parameter, each once; frozen ones too, since a layer
    unfrozen later (``add_param_group``) must count in the gradient norm from then on."""
    seen: set[int] = set()
    owned = []
    for name, module in model.named_modules():
        for param in module.parameters(recurse=False):
            if id(param) not in seen:
                seen.add(id(param))
                owned.append((name or schema.MODEL_MODULE, param))
    return owned


def _implements(probe: Probe, callback: str) -> bool:
    return getattr(type(probe), callback) is not getattr(Probe, callback)


def _describe_error(exc: Exception) -> str:
    """One short line: torch's dispatcher errors run to pages (a list of every backend)."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {first[:300]}"


def _scalar(value: Any) -> Any:
    """A logged value as something the record can hold: a detached 0-d tensor or a float."""
    if isinstance(value, torch.Tensor):
        if value.dim() == 0:  # the usual loss: no reshape, one op fewer at every step
            return value.detach()
        return value.detach().float().mean() if value.numel() > 1 else value.detach().reshape(())
    return float(value)


def watch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    path: str | Path = "diagnose-run.jsonl",
    **options: Any,
) -> Watch:
    """Attach the probes to ``model`` (and ``optimizer``) and record the run to ``path``.

    Returns a `Watch`, also usable as a context manager::

        with diagnose.watch(model, optimizer, "run.jsonl") as w:
            for x, y in loader:
                ...
                w.log(loss=loss)

    Options: ``preset`` ("minimal", "default", "full"), ``metadata`` (task,
    num_classes, loss_fn, ...), ``name``, ``scaler`` (an AMP GradScaler, to
    record skipped steps), ``every`` (override schedules, e.g.
    ``{"activations": 10}``), ``start_step``, ``flush_seconds``,
    ``distributed`` (under torch.distributed: ``"files"``, one file per rank,
    the default; ``"gather"``, also a cross-rank summary on rank 0; ``"off"``;
    or a `DistributedOptions`, see :mod:`diagnose.probes.distributed`).

    Live findings (:mod:`diagnose.live`): ``live`` (default True) judges the
    run while it goes and announces each new finding once on the logger
    ``diagnose``; ``on_finding`` is called with each one; ``stop_on``
    (``"error"``, another severity, or rule codes) raises
    `diagnose.TrainingStopped` in the training loop at the next step boundary,
    after the file is flushed and closed; ``status=True`` draws a status line
    on a terminal.
    """
    return Watch(model, optimizer, path, **options)
