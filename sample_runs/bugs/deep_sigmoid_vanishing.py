"""A deep MLP with sigmoid between its layers: the gradient shrinks at every layer and the first layers barely learn."""

import torch
from _common import blobs, fit, main, mlp
from torch import nn

BUG = {
    "kind": "deep_sigmoid_vanishing",
    "description": "seven Linear layers with nn.Sigmoid between them: gradients vanish towards the input",
    "observable": "live",
    "symptoms": ["GRD002", "PLT001", "LR003", "CH001", "ACT002"],
    "root_cause": r"vanish|sigmoid|saturat",
    "part": "calibration",
    "verify": {"twin": [("val_accuracy", ">=", 0.95)], "bug": [("val_accuracy", "<=", 0.6)]},
}


def run(fixed: bool, out) -> None:
    torch.manual_seed(0)
    model = mlp(8, *[64] * 6, 4, activation=nn.ReLU if fixed else nn.Sigmoid)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9)
    fit(model, optimizer, nn.CrossEntropyLoss(), blobs(seed=15), out, {"task": "multiclass", "num_classes": 4})


if __name__ == "__main__":
    main(run, BUG)
