"""``weight_decay=0.5`` where 5e-4 was meant: the decay outweighs the gradient and the weights stay near zero."""

import torch
from _common import blobs, fit, main, mlp
from torch import nn

BUG = {
    "kind": "weight_decay_huge",
    "description": "SGD(weight_decay=0.5): a decay 1000x the usual 5e-4 pins the weights near zero",
    "observable": "live",
    "symptoms": ["PLT001", "LR003", "CH001", "CH002"],
    "root_cause": r"weight.decay",
    "part": "calibration",
    "verify": {"twin": [("val_accuracy", ">=", 0.95)], "bug": [("val_accuracy", "<=", 0.7)]},
}


def run(fixed: bool, out) -> None:
    torch.manual_seed(0)
    model = mlp(8, 64, 4)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4 if fixed else 0.5)
    fit(model, optimizer, nn.CrossEntropyLoss(), blobs(seed=24), out, {"task": "multiclass", "num_classes": 4})


if __name__ == "__main__":
    main(run, BUG)
