"""Record a Hugging Face ``Trainer`` run: ``Trainer(..., callbacks=[DiagnoseCallback("run.jsonl")])``.

The callback watches the model and the optimizer from ``on_train_begin``
(unwrapping accelerate's optimizer wrapper, whose ``step`` the probes cannot
hook), records the ``loss`` of each ``on_log`` under ``state.global_step``,
which counts optimizer steps as the probes do, and the ``eval_*`` metrics of
each ``on_evaluate``, and closes the run in ``on_train_end``.

The Trainer logs the mean loss of every ``logging_steps`` steps: set
``logging_steps=1`` for a loss point per step. It also replaces a NaN or
infinite loss by the running mean unless ``logging_nan_inf_filter=False``;
the probes still see the non-finite gradients. Under multi-process training
only the main process records.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch

from diagnose.adapters import Recorder

try:
    from transformers import TrainerCallback
except ImportError:
    raise ImportError(
        "diagnose.adapters.transformers needs transformers: pip install 'diagnose[transformers]'"
    ) from None

__all__ = ["DiagnoseCallback"]

# The Trainer adds timing and throughput to the evaluation metrics; they say nothing about the model.
_SPEED_SUFFIXES = ("_runtime", "_per_second", "_preparation_time")


class DiagnoseCallback(TrainerCallback):
    """Attach the probes to a Trainer run; ``options`` are those of `diagnose.watch`
    (``preset``, ``metadata={"task": ..., "num_classes": ...}``, ``name``, ``every``)."""

    def __init__(self, path: str | Path = "diagnose-run.jsonl", **options: Any) -> None:
        self.recorder = Recorder(path, **options)

    def on_train_begin(
        self, args: Any, state: Any, control: Any, model: Any = None, optimizer: Any = None, **kwargs: Any
    ) -> None:
        if not state.is_world_process_zero or model is None:
            return
        ranks = {"rank": args.process_index, "world_size": args.world_size} if args.world_size > 1 else {}
        if getattr(args, "logging_nan_inf_filter", False):
            warnings.warn(
                "diagnose: logging_nan_inf_filter=True replaces NaN/Inf losses by the running mean before "
                "they are logged; set logging_nan_inf_filter=False to have them recorded (the gradients "
                "are recorded either way)",
                UserWarning,
                stacklevel=2,
            )
        self.recorder.start(model, _torch_optimizer(optimizer), state.global_step + 1, **ranks)

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if logs and "loss" in logs:
            self.recorder.train(state.global_step, loss=logs["loss"])
        if self.recorder.should_stop():
            control.should_training_stop = True

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.recorder.should_stop():
            control.should_training_stop = True

    def on_evaluate(
        self, args: Any, state: Any, control: Any, metrics: dict[str, Any] | None = None, **kwargs: Any
    ) -> None:
        quality = {k: v for k, v in (metrics or {}).items() if not k.endswith(_SPEED_SUFFIXES)}
        self.recorder.evaluate(state.global_step, quality)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.recorder.close()


def _torch_optimizer(optimizer: Any) -> torch.optim.Optimizer | None:
    """The plain torch optimizer inside the Trainer's (accelerate's) wrapper."""
    while optimizer is not None and not _hookable(optimizer):
        optimizer = getattr(optimizer, "optimizer", None)
    return optimizer


def _hookable(optimizer: Any) -> bool:
    return isinstance(optimizer, torch.optim.Optimizer) and hasattr(optimizer, "_optimizer_step_pre_hooks")
