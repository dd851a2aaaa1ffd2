"""Inputs and labels shuffled with two different permutations before training: every label belongs to another input."""

import torch
from _common import blobs, fit, main, mlp
from torch import nn

BUG = {
    "kind": "labels_shuffled_apart",
    "description": "x = x[torch.randperm(n)]; y = y[torch.randperm(n)]: the pairs of inputs and labels are broken",
    "observable": "curve",
    "symptoms": ["CH001", "CH002", "PLT001", "OVF001"],
    "root_cause": r"shuffl|labels?.{0,30}(match|inputs)|random labels|nothing to learn",
    "part": "heldout",
    "verify": {"twin": [("val_accuracy", ">=", 0.95)], "bug": [("val_accuracy", "<=", 0.4)]},
}


def run(fixed: bool, out) -> None:
    torch.manual_seed(0)
    (x, y), validation = blobs(seed=28)
    order = torch.randperm(len(x))
    x, y = x[order], y[order if fixed else torch.randperm(len(y))]
    model = mlp(8, 64, 4)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    fit(model, optimizer, nn.CrossEntropyLoss(), ((x, y), validation), out, {"task": "multiclass", "num_classes": 4})


if __name__ == "__main__":
    main(run, BUG)
