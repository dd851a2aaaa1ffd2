"""A learning rate 100 times too low (5e-4 where 0.05 trains): the loss creeps down in a straight line."""

import torch
from _common import blobs, fit, main, mlp
from torch import nn

BUG = {
    "kind": "lr_too_low",
    "description": "SGD(lr=5e-4, momentum=0.9): the learning rate is 1/100 of the one that trains",
    "observable": "curve",
    "symptoms": ["LR003", "PLT001"],
    "root_cause": r"learning rate.{0,40}(too low|raise|increase)|raise the learning rate|lr too low",
    "part": "calibration",
    "verify": {"twin": [("val_accuracy", ">=", 0.95), ("val_loss", "<=", 0.1)], "bug": [("val_loss", ">=", 0.4)]},
}


def run(fixed: bool, out) -> None:
    torch.manual_seed(0)
    model = mlp(8, 64, 4)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05 if fixed else 5e-4, momentum=0.9)
    fit(model, optimizer, nn.CrossEntropyLoss(), blobs(seed=20), out, {"task": "multiclass", "num_classes": 4})


if __name__ == "__main__":
    main(run, BUG)
