"""The model ends in ``nn.Softmax`` and its probabilities go into ``CrossEntropyLoss``, which applies
log-softmax again."""

import torch
from _common import blobs, fit, main, mlp
from torch import nn

BUG = {
    "kind": "softmax_into_ce",
    "description": "nn.Softmax as the last layer, fed into nn.CrossEntropyLoss (softmax applied twice)",
    "observable": "live",
    "symptoms": ["PLT001", "LR003", "CH001", "CH002"],
    "root_cause": r"softmax",
    # With probabilities as logits the smallest reachable loss for 10 classes is
    # -log(e / (e + 9)) = 1.461: the training loss cannot get below it.
    "part": "heldout",
    "verify": {"twin": [("val_accuracy", ">=", 0.9), ("train_loss", "<=", 0.4)], "bug": [("train_loss", ">=", 1.46)]},
}


def run(fixed: bool, out) -> None:
    torch.manual_seed(0)
    model = mlp(16, 64, 10)
    if not fixed:
        model.append(nn.Softmax(dim=1))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    fit(
        model,
        optimizer,
        nn.CrossEntropyLoss(),
        blobs(seed=3, classes=10, dim=16, per_class=1),
        out,
        {"task": "multiclass", "num_classes": 10},
    )


if __name__ == "__main__":
    main(run, BUG)
