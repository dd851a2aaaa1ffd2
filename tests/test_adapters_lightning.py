"""The Lightning adapter on real (tiny, CPU) Lightning fits."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

L = pytest.importorskip("lightning.pytorch")

import diagnose  # noqa: E402
from diagnose.adapters.lightning import DiagnoseCallback  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:.*LeafSpec.*is deprecated")

METADATA = {"task": "classification", "num_classes": 3}


class Classifier(L.LightningModule):
    """Three-class MLP; remembers each micro-batch loss it computed."""

    def __init__(self, lr: float = 0.05, through_forward: bool = True, fail_at: int | None = None) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 3))
        self.lr = lr
        self.through_forward = through_forward
        self.fail_at = fail_at
        self.losses: list[float] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        if self.fail_at is not None and self.global_step + 1 == self.fail_at:
            raise RuntimeError("broken batch")
        x, y = batch
        logits = self(x) if self.through_forward else self.net(x)
        loss = nn.functional.cross_entropy(logits, y)
        self.losses.append(loss.item())
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        self.log("val_loss", nn.functional.cross_entropy(self(x), y))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.lr, momentum=0.9)


class GradNorms(L.Callback):
    """The global gradient norm Lightning has just before it clips (the reference)."""

    def __init__(self) -> None:
        self.norms: list[float] = []

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: object) -> None:
        grads = [p.grad for p in pl_module.parameters() if p.grad is not None]
        self.norms.append(float(torch.nn.utils.get_total_norm(grads)))


def loader(n: int, seed: int, batch_size: int) -> DataLoader:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 8, generator=gen)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()
    return DataLoader(TensorDataset(x, y), batch_size=batch_size)


def fit(
    path: Path,
    module: Classifier,
    *,
    epochs: int = 2,
    train_size: int = 64,
    callbacks: tuple[L.Callback, ...] = (),
    **trainer_options: object,
) -> L.Trainer:
    torch.manual_seed(0)
    trainer = L.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=path.parent,
        callbacks=[DiagnoseCallback(path, metadata=METADATA), *callbacks],
        **trainer_options,
    )
    trainer.fit(module, loader(train_size, 1, 8), loader(32, 2, 16))
    return trainer


def hook_count(module: nn.Module, optimizer: torch.optim.Optimizer) -> int:
    model_hooks = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in module.modules())
    return model_hooks + len(optimizer._optimizer_step_pre_hooks) + len(optimizer._optimizer_step_post_hooks)


def test_a_fit_records_steps_evaluations_and_layers(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    fit(path, Classifier(), epochs=2)
    run = diagnose.load(path)
    assert run.series("loss").index.tolist() == list(range(1, 17))  # 8 batches x 2 epochs
    assert run.series("grad_norm").notna().all() and len(run.series("grad_norm")) == 16
    assert run.series("val_loss").index.tolist() == [8, 16]  # after each epoch, sanity check left out
    assert run.series("epoch").tolist() == [0.0] * 8 + [1.0] * 8
    assert {"net.0", "net.2"} <= set(run.layers["module"])
    assert run.metadata == METADATA


def test_recorded_loss_and_norm_are_per_optimizer_step_and_before_clipping(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    module, norms = Classifier(), GradNorms()
    # 8 batches, 3 per step: steps of 3, 3 and 2 micro-batches; every step clipped.
    fit(path, module, epochs=1, callbacks=(norms,), accumulate_grad_batches=3, gradient_clip_val=1e-3)
    run = diagnose.load(path)
    micro = module.losses
    assert run.series("loss").to_numpy() == pytest.approx(
        [sum(micro[0:3]) / 3, sum(micro[3:6]) / 3, sum(micro[6:8]) / 2], rel=1e-5
    )
    assert run.series("grad_norm").to_numpy() == pytest.approx(norms.norms, rel=1e-5)
    assert min(norms.norms) > 1e-3  # clipping really changed the gradients


def test_steps_stay_aligned_when_training_step_bypasses_forward(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    module, norms = Classifier(through_forward=False), GradNorms()
    fit(path, module, epochs=1, callbacks=(norms,))
    run = diagnose.load(path)
    assert run.series("loss").to_numpy() == pytest.approx(module.losses, rel=1e-5)
    assert run.series("grad_norm").to_numpy() == pytest.approx(norms.norms, rel=1e-5)


def test_hooks_are_removed_after_fit(tmp_path: Path) -> None:
    module = Classifier()
    trainer = fit(tmp_path / "run.jsonl", module, epochs=1)
    assert hook_count(module, trainer.optimizers[0]) == 0


def test_a_failing_fit_is_recorded_and_unhooked(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    module = Classifier(fail_at=4)
    with pytest.raises(RuntimeError, match="broken batch"):
        fit(path, module, epochs=1)
    run = diagnose.load(path)
    assert run.series("loss").index.tolist() == [1, 2, 3]
    assert "exception" in set(run.events["event"])
    assert hook_count(module, module.optimizers().optimizer) == 0


def test_a_learning_rate_100x_too_high_is_diagnosed(tmp_path: Path) -> None:
    codes = {}
    for lr in (0.05, 5.0):
        path = tmp_path / f"lr{lr}.jsonl"
        fit(path, Classifier(lr=lr), epochs=4, train_size=256)
        codes[lr] = {finding.code: finding.severity.value for finding in diagnose.analyze(diagnose.load(path))}
    assert "error" not in codes[0.05].values()
    assert codes[5.0].get("LR001") == "error"  # loss-diverges
