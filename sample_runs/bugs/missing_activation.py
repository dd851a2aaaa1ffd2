"""No activation between the Linear layers: the stack is one linear map and cannot separate the classes."""

import torch
from _common import blobs, fit, main, mlp
from torch import nn

BUG = {
    "kind": "missing_activation",
    "description": "nn.Sequential(Linear, Linear, Linear) without ReLU between: a linear model on non-linear classes",
    "observable": "live",
    "symptoms": ["PLT001", "LR003", "CH002"],
    "root_cause": r"no (non-?linear )?activation|missing activation|non-?linear|linear model|between (the )?linear layers",
    "part": "heldout",
    "verify": {"twin": [("val_accuracy", ">=", 0.95)], "bug": [("val_accuracy", "<=", 0.85)]},
}


def run(fixed: bool, out) -> None:
    torch.manual_seed(0)
    model = mlp(8, 64, 64, 4, activation=nn.ReLU if fixed else nn.Identity)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    fit(
        model,
        optimizer,
        nn.CrossEntropyLoss(),
        blobs(seed=29, per_class=5),
        out,
        {"task": "multiclass", "num_classes": 4},
    )


if __name__ == "__main__":
    main(run, BUG)
