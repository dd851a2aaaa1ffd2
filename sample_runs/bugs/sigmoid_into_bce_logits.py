"""The model ends in ``nn.Sigmoid`` and its probabilities go into ``BCEWithLogitsLoss``, which applies a
sigmoid again."""

import torch
from _common import blobs, fit, main, mlp
from torch import nn

BUG = {
    "kind": "sigmoid_into_bce_logits",
    "description": "nn.Sigmoid as the last layer, fed into nn.BCEWithLogitsLoss (sigmoid applied twice)",
    "observable": "live",
    "symptoms": ["PLT001", "LR003", "CH001", "CH002"],
    "root_cause": r"sigmoid|BCEWithLogits|logits",
    # Outputs in [0, 1] read as logits: the loss cannot go below
    # (log(1 + e^-1) + log 2) / 2 = 0.503 on balanced classes.
    "part": "heldout",
    "verify": {"twin": [("val_accuracy", ">=", 0.95), ("train_loss", "<=", 0.2)], "bug": [("train_loss", ">=", 0.45)]},
}


def run(fixed: bool, out) -> None:
    torch.manual_seed(0)
    (x, y), (x_val, y_val) = blobs(seed=4, classes=2)
    data = (x, y.float().unsqueeze(1)), (x_val, y_val.float().unsqueeze(1))
    model = mlp(8, 64, 1)
    if not fixed:
        model.append(nn.Sigmoid())
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    fit(
        model,
        optimizer,
        nn.BCEWithLogitsLoss(),
        data,
        out,
        {"task": "binary", "num_classes": 2},
        task="binary",
        threshold=0.0 if fixed else 0.5,
    )


if __name__ == "__main__":
    main(run, BUG)
