"""Losses kept as tensors in a Python list for a plot at the end: each one holds its whole graph, memory grows every step."""

import torch
from _common import blobs, fit, main, mlp
from torch import nn

BUG = {
    "kind": "loss_list_memory",
    "description": "history.append(loss) instead of history.append(loss.item()): every step's graph stays alive",
    "observable": "live",
    "symptoms": ["MEM001"],
    "root_cause": r"graph|\.item\(\)|detach|kept (alive|in a list)|list of loss",
    "part": "calibration",
    "verify": {
        "twin": [("val_accuracy", ">=", 0.95), ("rss_growth_mb", "<=", 30.0)],
        "bug": [("rss_growth_mb", ">=", 50.0)],
    },
}


def run(fixed: bool, out) -> None:
    torch.manual_seed(0)
    model = mlp(8, 512, 512, 4)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    criterion = nn.CrossEntropyLoss()
    history = []

    def step(xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        optimizer.zero_grad()
        loss = criterion(model(xb), yb)
        loss.backward(retain_graph=not fixed)  # kept for a second look at the gradients later
        optimizer.step()
        history.append(loss.item() if fixed else loss)
        return loss

    fit(model, optimizer, criterion, blobs(seed=19), out, {"task": "multiclass", "num_classes": 4}, step=step)


if __name__ == "__main__":
    main(run, BUG)
