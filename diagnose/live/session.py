"""Record every model/optimizer pair a script creates, without changing the script (`diagnose run`).

torch's global hooks see every module forward and every optimizer step in
the process:

* a module whose forward is called while no other module's forward is
  running, with gradients enabled and in training mode, is a candidate
  model (evaluation under ``no_grad``/``inference_mode`` or ``eval()`` is
  not training and never counts as a step);
* at an optimizer's first step the candidate that owns its first parameter
  becomes its model, and a `Watch` is attached to the pair, writing its own
  run file. With ``optimizer.step(closure)`` (Lightning) the forward runs
  inside the step, so the pair is made after that first step instead;
* the training loss is the tensor ``backward()`` is called on (see
  :mod:`diagnose.probes.backward_tap`), credited to the model whose
  training forward ran last. A loss scaled by an AMP GradScaler is recorded
  scaled.

The first step of each pair is recorded without what only the model's own
forward hooks see (the non-finite origin, activations); every later step
is recorded in full.
"""

from __future__ import annotations

import warnings
import weakref
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.modules import module as torch_module
from torch.optim import optimizer as torch_optimizer

from diagnose.live.policy import TrainingStopped
from diagnose.probes import backward_tap
from diagnose.probes.watch import Watch


class Session:
    """Global hooks that attach one `Watch` per model/optimizer pair; `close` removes them all."""

    def __init__(self, out: Path, name: str, **watch_options: Any) -> None:
        self.out = out
        self.name = name
        self.options = watch_options
        self.watches: dict[int, Watch] = {}  # id(optimizer) -> its watch
        self.paths: list[Path] = []
        self._depth = 0
        self._candidates: weakref.WeakValueDictionary[int, nn.Module] = weakref.WeakValueDictionary()
        self._last_model: nn.Module | None = None
        self._early_losses: dict[int, list[torch.Tensor]] = {}  # id(model) -> losses before its watch existed
        self._handles: list[Any] = []

    def start(self) -> Session:
        self._handles = [
            torch_module.register_module_forward_pre_hook(self._guarded(self._forward_starts)),
            torch_module.register_module_forward_hook(self._guarded(self._forward_ends), always_call=True),
            torch_optimizer.register_optimizer_step_pre_hook(self._guarded(self._before_step)),
            torch_optimizer.register_optimizer_step_post_hook(self._guarded(self._after_step)),
            backward_tap.add(self._guarded(self._backward)),
        ]
        return self

    def _guarded(self, hook: Any) -> Any:
        """A hook whose failure switches the session off (with one warning) instead of reaching the script."""

        def guarded(*args: Any) -> None:
            try:
                hook(*args)
            except TrainingStopped:
                raise
            except Exception as exc:  # noqa: BLE001 - recording must never break the script
                warnings.warn(
                    f"diagnose run: recording stopped after an internal error ({type(exc).__name__}: {exc})",
                    RuntimeWarning,
                    stacklevel=2,
                )
                self.close()

        return guarded

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        for watch in self.watches.values():
            watch.close()

    # -- hooks --------------------------------------------------------------------

    def _forward_starts(self, module: nn.Module, args: Any) -> None:
        self._depth += 1
        if self._depth == 1 and module.training and torch.is_grad_enabled():
            self._last_model = module
            self._candidates[id(module)] = module

    def _forward_ends(self, module: nn.Module, args: Any, output: Any) -> None:
        self._depth = max(0, self._depth - 1)

    def _backward(self, tensor: torch.Tensor) -> None:
        model = self._last_model
        if model is None or tensor.numel() != 1 or tensor.grad_fn is None:
            return
        watch = next((w for w in self.watches.values() if w.model is model), None)
        if watch is not None:
            watch.log(loss=tensor)
        else:
            self._early_losses.setdefault(id(model), []).append(tensor.detach())

    def _before_step(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        if id(optimizer) not in self.watches:
            self._pair(optimizer, stepped=False)

    def _after_step(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        if id(optimizer) not in self.watches:
            self._pair(optimizer, stepped=True)

    # -- pairing ------------------------------------------------------------------

    def _pair(self, optimizer: torch.optim.Optimizer, *, stepped: bool) -> None:
        model = self._owner(optimizer)
        if model is None:
            return
        path = self._path_for(model)
        watch = Watch(model, optimizer, path, name=path.stem, **self.options)
        self.watches[id(optimizer)] = watch
        self.paths.append(watch.path)
        for loss in self._early_losses.pop(id(model), []):
            watch.log(loss=loss)
        watch.gradients_ready()
        if stepped:  # its first step is over: the next training forward opens step 2
            watch.end_step()

    def _owner(self, optimizer: torch.optim.Optimizer) -> nn.Module | None:
        """The candidate model holding the most of the optimizer's parameters (None when none holds any)."""
        wanted = {id(p) for group in optimizer.param_groups for p in group["params"]}
        best, held = None, 0
        for model in list(self._candidates.values()):
            count = sum(1 for p in model.parameters() if id(p) in wanted)
            if count > held:
                best, held = model, count
        return best

    def _path_for(self, model: nn.Module) -> Path:
        """``<script>-<model class>.jsonl`` in the output folder, numbered instead of appending to an old one."""
        base = f"{self.name}-{type(model).__name__}"
        taken = {p.name for p in self.paths}
        for index in range(1, 10_000):
            candidate = self.out / (f"{base}.jsonl" if index == 1 else f"{base}-{index}.jsonl")
            if candidate.name not in taken and not candidate.exists():
                return candidate
        raise FileExistsError(f"{self.out}: too many runs named {base}")
