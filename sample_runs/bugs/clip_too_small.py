"""``clip_grad_norm_`` with max_norm=1e-3 (a value meant for something else): every update is shrunk to almost nothing."""

import torch
from _common import blobs, fit, main, mlp
from torch import nn

BUG = {
    "kind": "clip_too_small",
    "description": "clip_grad_norm_(model.parameters(), max_norm=1e-3): updates clipped far below the gradient norm",
    "observable": "live",
    "symptoms": ["LR003", "PLT001", "GRD003"],
    "root_cause": r"clip",
    "part": "calibration",
    "verify": {"twin": [("val_accuracy", ">=", 0.95), ("val_loss", "<=", 0.1)], "bug": [("val_loss", ">=", 0.5)]},
}


def run(fixed: bool, out) -> None:
    torch.manual_seed(0)
    model = mlp(8, 64, 4)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    criterion = nn.CrossEntropyLoss()

    def step(xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        optimizer.zero_grad()
        loss = criterion(model(xb), yb)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0 if fixed else 1e-3)
        optimizer.step()
        return loss

    fit(model, optimizer, criterion, blobs(seed=14), out, {"task": "multiclass", "num_classes": 4}, step=step)


if __name__ == "__main__":
    main(run, BUG)
