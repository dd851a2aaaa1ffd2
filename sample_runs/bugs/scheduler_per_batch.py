"""A ``MultiStepLR`` with milestones in epochs is stepped every batch: the learning rate collapses in the
first epoch."""

import torch
from _common import blobs, fit, main, mlp, standard_step
from torch import nn

BUG = {
    "kind": "scheduler_per_batch",
    "description": "scheduler.step() inside the batch loop with epoch milestones [3, 6, 8]: "
    "lr is 1e-4 of its value by step 8",
    "observable": "live",
    "symptoms": ["LR004", "PLT001", "LR003"],
    "root_cause": r"schedul|learning rate (has )?(collapsed|decay)|decays? to",
    "part": "calibration",
    "verify": {"twin": [("val_accuracy", ">=", 0.95), ("val_loss", "<=", 0.1)], "bug": [("val_loss", ">=", 0.25)]},
}


def run(fixed: bool, out) -> None:
    torch.manual_seed(0)
    model = mlp(8, 64, 4)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[3, 6, 8], gamma=0.1)
    criterion = nn.CrossEntropyLoss()
    update = standard_step(model, optimizer, criterion)

    def step(xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        loss = update(xb, yb)
        if not fixed:
            scheduler.step()
        return loss

    fit(
        model,
        optimizer,
        criterion,
        blobs(seed=10),
        out,
        {"task": "multiclass", "num_classes": 4},
        step=step,
        epoch_end=scheduler.step if fixed else None,
    )


if __name__ == "__main__":
    main(run, BUG)
