"""Adapters: attach the probes to a training framework's loop with one callback.

* ``diagnose.adapters.lightning.DiagnoseCallback`` for Lightning's ``Trainer``
  (``pip install 'diagnose[lightning]'``);
* ``diagnose.adapters.transformers.DiagnoseCallback`` for the Hugging Face
  ``Trainer`` (``pip install 'diagnose[transformers]'``).

Each callback is a thin layer over `Recorder`, which knows nothing of any
framework: it creates one `Watch` when training begins, takes the training
loss and evaluation metrics with the framework's own optimizer-step number
(so that both count steps the same way), and closes the watch at the end.
The framework modules are imported only by the adapter that needs them.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from diagnose.live.policy import StopPolicy
from diagnose.probes.watch import Watch
from diagnose.rules.base import Finding
from diagnose.runfile import schema

__all__ = ["Recorder", "scalars"]


def scalars(values: Mapping[str, Any]) -> dict[str, Any]:
    """The entries of ``values`` that `Watch.log` can record: numbers and floating-point tensors."""
    return {key: value for key, value in values.items() if _is_scalar(value)}


class Recorder:
    """One recorded run, fed by a framework callback; all methods are no-ops until `start`.

    ``options`` are those of `diagnose.watch` (``preset``, ``metadata``,
    ``name``, ``every``, ``flush_seconds``, ``stop_on``, ``on_finding``, ...).
    A finding that matches ``stop_on`` does not raise here: `should_stop`
    turns True, for the callback to set the framework's own stop signal.
    """

    def __init__(self, path: str | Path = "diagnose-run.jsonl", **options: Any) -> None:
        self.path = Path(path)
        self.policy = StopPolicy(options.pop("stop_on", None))
        self.sink = options.pop("on_finding", None)
        self.options = {**options, "on_finding": self._found}
        self.stopped_by: Finding | None = None
        self.watch: Watch | None = None

    def _found(self, finding: Finding) -> None:
        if self.stopped_by is None and self.policy.matches(finding):
            self.stopped_by = finding
        if self.sink is not None:
            self.sink(finding)

    def should_stop(self) -> bool:
        """True once a finding matched ``stop_on``; the run is then closed (flushed) here."""
        if self.stopped_by is None:
            return False
        self.close()
        return True

    def start(self, model: torch.nn.Module, optimizer: Any, first_step: int, **extra: Any) -> None:
        """Attach the probes; ``first_step`` is the number the next optimizer step will have."""
        if self.watch is None:
            self.watch = Watch(model, optimizer, self.path, start_step=first_step, **{**self.options, **extra})

    def train(self, step: int, **values: Any) -> None:
        """Training scalars (``loss`` first of all) of optimizer step ``step``."""
        if self.watch is not None:
            self.watch.log(step=step, **scalars(values))

    def gradients_ready(self) -> None:
        """Gradients are final and not yet clipped: record their norms now."""
        if self.watch is not None:
            self.watch.gradients_ready()

    def evaluate(self, step: int, metrics: Mapping[str, Any]) -> None:
        """The evaluation metrics (``val_*``, ``eval_*`` keys) measured after optimizer step ``step``."""
        evals = {k: v for k, v in scalars(metrics).items() if schema.is_eval_key(k)}
        if self.watch is not None and evals:
            self.watch.log(step=step, **evals)

    def close(self, error: BaseException | None = None) -> None:
        """Write what is left and remove the hooks; ``error`` is recorded as the reason training stopped."""
        watch, self.watch = self.watch, None
        if watch is None:
            return
        if error is None:
            watch.close()
        else:
            watch.__exit__(type(error), error, error.__traceback__)


def _is_scalar(value: Any) -> bool:
    if isinstance(value, torch.Tensor):
        return value.is_floating_point()
    return isinstance(value, (int, float)) and not isinstance(value, bool)
