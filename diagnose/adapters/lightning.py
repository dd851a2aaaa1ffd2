"""Record a Lightning run: ``Trainer(callbacks=[DiagnoseCallback("run.jsonl")])``.

The callback watches the LightningModule and the first optimizer from
``on_train_start``, records the training loss of every batch under the
optimizer step it belongs to (``trainer.global_step + 1`` while the step is
being accumulated), the ``val_*`` metrics of each validation run under the
last finished step, and closes the run when fitting ends or fails.

Lightning runs forward and backward inside ``optimizer.step(closure)``; the
watch reads gradients after the step, so they are the step's own. Lightning
clips between backward and the step; ``on_before_optimizer_step`` comes before
the clipping, so the gradient norm is read there. Under multi-process training
only global rank zero records.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from diagnose.adapters import Recorder

try:
    from lightning.pytorch import Callback
except ImportError:
    try:
        from pytorch_lightning import Callback
    except ImportError:
        raise ImportError("diagnose.adapters.lightning needs Lightning: pip install 'diagnose[lightning]'") from None

__all__ = ["DiagnoseCallback"]


class DiagnoseCallback(Callback):
    """Attach the probes to a Lightning fit; ``options`` are those of `diagnose.watch`
    (``preset``, ``metadata={"task": ..., "num_classes": ...}``, ``name``, ``every``)."""

    def __init__(self, path: str | Path = "diagnose-run.jsonl", **options: Any) -> None:
        super().__init__()
        self.recorder = Recorder(path, **options)
        self._step = 0

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        if not trainer.is_global_zero:
            return
        optimizer = trainer.optimizers[0] if trainer.optimizers else None
        ranks = {"rank": trainer.global_rank, "world_size": trainer.world_size} if trainer.world_size > 1 else {}
        scaler = getattr(trainer.precision_plugin, "scaler", None)
        self.recorder.start(pl_module, optimizer, trainer.global_step + 1, scaler=scaler, **ranks)

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        self._step = trainer.global_step + 1
        self.recorder.train(self._step, epoch=trainer.current_epoch)

    def on_before_optimizer_step(self, trainer: Any, pl_module: Any, optimizer: Any) -> None:
        self.recorder.gradients_ready()

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
        if isinstance(loss, torch.Tensor):
            # Automatic optimization hands back the loss divided by the accumulation factor.
            scale = trainer.accumulate_grad_batches if pl_module.automatic_optimization else 1
            self.recorder.train(self._step, loss=loss.detach() * scale)
        if self.recorder.should_stop():
            trainer.should_stop = True

    def on_validation_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        if not trainer.sanity_checking:
            self.recorder.evaluate(trainer.global_step, trainer.callback_metrics)

    def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
        self.recorder.close()

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        self.recorder.close(exception)
