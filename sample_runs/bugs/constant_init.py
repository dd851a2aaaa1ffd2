"""Every weight initialised to the same constant: all hidden units compute the same thing and stay identical."""

import torch
from _common import blobs, fit, main, mlp
from torch import nn

BUG = {
    "kind": "constant_init",
    "description": "nn.init.constant_ on every Linear weight: the symmetry between hidden units is never broken",
    "observable": "live",
    "symptoms": ["PLT001", "LR003", "ACT003", "CH001", "CH002"],
    "root_cause": r"identical|symmetr|constant (weight|init)",
    "part": "heldout",
    "verify": {"twin": [("val_accuracy", ">=", 0.95)], "bug": [("val_accuracy", "<=", 0.75)]},
}


def run(fixed: bool, out) -> None:
    torch.manual_seed(0)
    model = mlp(8, 64, 64, 4)
    if not fixed:
        for layer in model:
            if isinstance(layer, nn.Linear):
                nn.init.constant_(layer.weight, 0.05)
                nn.init.zeros_(layer.bias)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    fit(model, optimizer, nn.CrossEntropyLoss(), blobs(seed=9), out, {"task": "multiclass", "num_classes": 4})


if __name__ == "__main__":
    main(run, BUG)
