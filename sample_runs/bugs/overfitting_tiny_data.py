"""A debugging slice ``x[:64]`` left in: a wide model memorises 64 noisy examples and validation gets worse."""

import math

import torch
from _common import blobs, fit, main, mlp
from torch import nn

BUG = {
    "kind": "overfitting_tiny_data",
    "description": "x, y = x[:64], y[:64] left from debugging: 64 training examples for a 256x256 MLP",
    "observable": "curve",
    "symptoms": ["OVF001", "OVF002"],
    "root_cause": r"overfit|memoris",
    "part": "heldout",
    "verify": {"twin": [("val_accuracy", ">=", 0.9)], "bug": [("val_loss", ">=", 0.5)]},
}

STEPS = 320


def run(fixed: bool, out) -> None:
    torch.manual_seed(0)
    (x, y), validation = blobs(seed=31, per_class=4, label_noise=0.1)
    if not fixed:
        x, y = x[:64], y[:64]
    model = mlp(8, 256, 256, 4)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    fit(
        model,
        optimizer,
        nn.CrossEntropyLoss(),
        ((x, y), validation),
        out,
        {"task": "multiclass", "num_classes": 4},
        epochs=STEPS // math.ceil(len(x) / 64),
    )


if __name__ == "__main__":
    main(run, BUG)
