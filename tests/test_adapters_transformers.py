"""The Transformers adapter on real (tiny, CPU, built from config) Trainer runs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

os.environ.setdefault("HF_HUB_OFFLINE", "1")
transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")  # the Trainer needs it

import diagnose  # noqa: E402
from diagnose.adapters.transformers import DiagnoseCallback  # noqa: E402

METADATA = {"task": "classification", "num_classes": 3}


class Tokens(Dataset):
    """Random token sequences labelled by their second token."""

    def __init__(self, n: int, seed: int) -> None:
        gen = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(5, 60, (n, 8), generator=gen)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "labels": (self.ids[i, 1] > 32).long()}


class Points(Dataset):
    def __init__(self, n: int, seed: int) -> None:
        gen = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, 8, generator=gen)
        self.y = (self.x[:, 0] > 0).long() + (self.x[:, 1] > 0.5).long()

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"x": self.x[i], "labels": self.y[i]}


class Mlp(nn.Module):
    """A plain module with the output the Trainer expects (a dict holding ``loss``)."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 3))

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = self.body(x)
        return {"loss": nn.functional.cross_entropy(logits, labels), "logits": logits}


def tiny_bert() -> nn.Module:
    config = transformers.BertConfig(
        vocab_size=64,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=16,
        num_labels=2,
    )
    return transformers.BertForSequenceClassification(config)


def train(path: Path, model: nn.Module, train_set: Dataset, eval_set: Dataset, **options: object):
    settings = {
        "output_dir": str(path.parent / "out"),
        "use_cpu": True,
        "report_to": [],
        "save_strategy": "no",
        "disable_tqdm": True,
        "per_device_train_batch_size": 8,
        "logging_steps": 1,
        "logging_nan_inf_filter": False,
        **options,
    }
    trainer = transformers.Trainer(
        model=model,
        args=transformers.TrainingArguments(**settings),
        train_dataset=train_set,
        eval_dataset=eval_set,
        callbacks=[DiagnoseCallback(path, metadata=METADATA)],
    )
    trainer.train()
    return trainer


def logged(trainer, key: str) -> dict[int, float]:
    return {entry["step"]: entry[key] for entry in trainer.state.log_history if key in entry}


def hook_count(model: nn.Module, optimizer: torch.optim.Optimizer) -> int:
    model_hooks = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())
    return model_hooks + len(optimizer._optimizer_step_pre_hooks) + len(optimizer._optimizer_step_post_hooks)


def test_a_bert_run_records_what_the_trainer_logs_and_more(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    model = tiny_bert()
    # max_grad_norm far below the real norm: every step is clipped by the Trainer.
    trainer = train(
        path, model, Tokens(48, 1), Tokens(16, 2), max_steps=6, eval_strategy="steps", eval_steps=3, max_grad_norm=1e-3
    )
    run = diagnose.load(path)
    assert run.series("loss").to_dict() == pytest.approx(logged(trainer, "loss"), rel=1e-6)
    assert run.series("loss").index.tolist() == list(range(1, 7))
    assert run.series("grad_norm").to_dict() == pytest.approx(logged(trainer, "grad_norm"), rel=1e-4)
    assert min(logged(trainer, "grad_norm").values()) > 1e-3  # the recorded norm is the one before clipping
    assert run.series("val_loss").to_dict() == pytest.approx(logged(trainer, "eval_loss"), rel=1e-6)
    assert [c for c in run.evals.columns if c != "step"] == ["val_loss"]  # no timing columns
    assert "bert.encoder.layer.1.output.dense" in set(run.layers["module"])
    assert run.metadata == METADATA
    assert hook_count(model, trainer.optimizer.optimizer) == 0


def test_gradient_accumulation_counts_optimizer_steps(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    trainer = train(path, Mlp(), Points(64, 1), Points(16, 2), max_steps=4, gradient_accumulation_steps=2)
    run = diagnose.load(path)
    assert run.series("loss").index.tolist() == [1, 2, 3, 4]
    assert run.series("grad_norm").to_dict() == pytest.approx(logged(trainer, "grad_norm"), rel=1e-4)


def test_a_sparse_training_log_keeps_a_record_per_step(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    train(path, Mlp(), Points(64, 1), Points(16, 2), max_steps=6, logging_steps=3)
    run = diagnose.load(path)
    assert run.series("loss").index.tolist() == [3, 6]  # the Trainer's mean over each window
    assert run.series("grad_norm").index.tolist() == list(range(1, 7))


def test_a_learning_rate_100x_too_high_is_diagnosed(tmp_path: Path) -> None:
    codes = {}
    for lr in (0.05, 5.0):
        path = tmp_path / f"lr{lr}.jsonl"
        train(
            path,
            Mlp(),
            Points(256, 1),
            Points(64, 2),
            num_train_epochs=3,
            per_device_train_batch_size=16,
            learning_rate=lr,
            optim="sgd",
            lr_scheduler_type="constant",
            eval_strategy="epoch",
        )
        codes[lr] = {finding.code: finding.severity.value for finding in diagnose.analyze(diagnose.load(path))}
    assert "error" not in codes[0.05].values()
    assert codes[5.0].get("LR001") == "error"  # loss-diverges
