"""The training set is stored sorted by class and the loader does not shuffle: each stretch of batches is one class."""

import torch
from _common import blobs, fit, main, mlp
from torch import nn

BUG = {
    "kind": "sorted_by_label",
    "description": "data sorted by label and DataLoader(shuffle=False): every batch holds a single class",
    "observable": "live",
    "symptoms": ["SPK001", "NOI001", "LR002", "OVF002", "CH002", "LR001"],
    "root_cause": r"sorted|shuffl|label entropy|one class",
    "part": "heldout",
    "verify": {"twin": [("val_accuracy", ">=", 0.95), ("val_loss", "<=", 0.1)], "bug": [("val_loss", ">=", 0.5)]},
}


def run(fixed: bool, out) -> None:
    torch.manual_seed(0)
    (x, y), validation = blobs(seed=8)
    by_class = y.argsort(stable=True)  # the files were written one class after another
    model = mlp(8, 64, 4)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    fit(
        model,
        optimizer,
        nn.CrossEntropyLoss(),
        ((x[by_class], y[by_class]), validation),
        out,
        {"task": "multiclass", "num_classes": 4},
        shuffle=fixed,
    )


if __name__ == "__main__":
    main(run, BUG)
