"""The model is built again after the optimizer: the optimizer steps the first model's parameters, the trained one never moves."""

import torch
from _common import blobs, fit, main, mlp
from torch import nn

BUG = {
    "kind": "optimizer_on_stale_model",
    "description": "optimizer = Adam(model.parameters()); model = mlp(...) again: no parameter of the model is in the optimizer",
    "observable": "live",
    "symptoms": ["PLT001", "CH001", "CH002", "LR003"],
    "root_cause": r"not in (the|any) optimizer|no parameter group|outside the optimizer|optimizer (does not|doesn't) (cover|hold|include)|never (move|updated)|not (being )?updated",
    "part": "heldout",
    "verify": {"twin": [("val_accuracy", ">=", 0.95)], "bug": [("val_accuracy", "<=", 0.5)]},
}


def run(fixed: bool, out) -> None:
    torch.manual_seed(0)
    model = mlp(8, 64, 4)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    if not fixed:
        model = mlp(8, 64, 4)  # "start from a fresh model" after the optimizer already exists
    fit(model, optimizer, nn.CrossEntropyLoss(), blobs(seed=30), out, {"task": "multiclass", "num_classes": 4})


if __name__ == "__main__":
    main(run, BUG)
