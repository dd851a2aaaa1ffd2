"""A learning rate 100 times too high (2.0 where 0.02 trains): the loss blows up within a few steps."""

import torch
from _common import blobs, fit, main, mlp
from torch import nn

BUG = {
    "kind": "lr_x100",
    "description": "SGD(lr=2.0, momentum=0.9): the learning rate is 100x the one that trains",
    "observable": "curve",
    "symptoms": ["LR001", "NF001", "GRD001", "SPK001", "LR002"],
    "root_cause": r"learning rate.{0,40}(too high|lower)|lower the learning rate|lr too high",
    "part": "calibration",
    "verify": {"twin": [("val_accuracy", ">=", 0.95)], "bug": [("val_accuracy", "<=", 0.6)]},
}


def run(fixed: bool, out) -> None:
    torch.manual_seed(0)
    model = mlp(8, 64, 4)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.02 if fixed else 2.0, momentum=0.9)
    fit(model, optimizer, nn.CrossEntropyLoss(), blobs(seed=11), out, {"task": "multiclass", "num_classes": 4})


if __name__ == "__main__":
    main(run, BUG)
