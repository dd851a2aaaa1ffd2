"""Gradients are never reset: the loop has no ``optimizer.zero_grad()``, so each backward adds to every earlier one."""

import torch
from _common import blobs, fit, main, mlp
from torch import nn

BUG = {
    "kind": "no_zero_grad",
    "description": "optimizer.zero_grad() is never called: gradients accumulate over the whole run",
    "observable": "live",
    "symptoms": ["LR001", "SPK001", "GRD001", "LR002", "NOI001"],
    "root_cause": r"zero_grad|gradients? (are |were )?(never |not )reset|accumulat",
    "part": "calibration",
    "verify": {"twin": [("val_accuracy", ">=", 0.95)], "bug": [("val_loss", ">=", 1.0)]},
}


def run(fixed: bool, out) -> None:
    torch.manual_seed(0)
    model = mlp(8, 64, 4)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    criterion = nn.CrossEntropyLoss()

    def step(xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        if fixed:
            optimizer.zero_grad()
        loss = criterion(model(xb), yb)
        loss.backward()
        optimizer.step()
        return loss

    fit(model, optimizer, criterion, blobs(seed=1), out, {"task": "multiclass", "num_classes": 4}, step=step)


if __name__ == "__main__":
    main(run, BUG)
