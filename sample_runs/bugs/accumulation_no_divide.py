"""Gradient accumulation over 8 micro-batches without dividing the loss by 8: every step is 8 times too large."""

import itertools

import torch
from _common import blobs, fit, main, mlp
from torch import nn

ACCUMULATE = 8

BUG = {
    "kind": "accumulation_no_divide",
    "description": "loss.backward() on 8 micro-batches per optimizer step without loss / 8: the lr is in effect 8x",
    "observable": "live",
    "symptoms": ["LR001", "SPK001", "GRD001", "NF001", "LR002", "NOI001"],
    "root_cause": r"accumulat",
    "part": "calibration",
    "verify": {"twin": [("val_accuracy", ">=", 0.95)], "bug": [("val_loss", ">=", 0.5)]},
}


def run(fixed: bool, out) -> None:
    torch.manual_seed(0)
    model = mlp(8, 64, 4)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    criterion = nn.CrossEntropyLoss()
    micro_batches = itertools.count(1)

    def step(xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        loss = criterion(model(xb), yb)
        (loss / ACCUMULATE if fixed else loss).backward()
        if next(micro_batches) % ACCUMULATE == 0:
            optimizer.step()
            optimizer.zero_grad()
        return loss

    fit(
        model,
        optimizer,
        criterion,
        blobs(seed=13),
        out,
        {"task": "multiclass", "num_classes": 4},
        step=step,
        batch_size=32,
        epochs=8,
    )


if __name__ == "__main__":
    main(run, BUG)
