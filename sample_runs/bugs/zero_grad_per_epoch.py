"""``optimizer.zero_grad()`` sits in the epoch loop instead of the batch loop: gradients pile up over each epoch."""

import torch
from _common import blobs, fit, main, mlp
from torch import nn

BUG = {
    "kind": "zero_grad_per_epoch",
    "description": "optimizer.zero_grad() is called once per epoch, not once per step",
    "observable": "live",
    "symptoms": ["LR001", "SPK001", "GRD001", "LR002", "NOI001"],
    "root_cause": r"zero_grad|gradients? (are |were )?(never |not )reset|accumulat",
    "part": "heldout",
    "verify": {"twin": [("val_accuracy", ">=", 0.95)], "bug": [("val_loss", ">=", 0.5)]},
}


def run(fixed: bool, out) -> None:
    torch.manual_seed(0)
    model = mlp(8, 64, 4)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    criterion = nn.CrossEntropyLoss()

    def epoch_start() -> None:
        model.train()
        optimizer.zero_grad()

    def step(xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        if fixed:
            optimizer.zero_grad()
        loss = criterion(model(xb), yb)
        loss.backward()
        optimizer.step()
        return loss

    fit(
        model,
        optimizer,
        criterion,
        blobs(seed=2),
        out,
        {"task": "multiclass", "num_classes": 4},
        step=step,
        epoch_start=epoch_start,
    )


if __name__ == "__main__":
    main(run, BUG)
