"""``model.train()`` is never called after the first evaluation: dropout is off for the rest of training and the model overfits."""

import torch
from _common import blobs, fit, main
from torch import nn

BUG = {
    "kind": "dropout_off_eval",
    "description": "evaluate() switches to model.eval() and the loop never switches back: dropout silently disabled",
    "observable": "live",
    "symptoms": ["OVF001", "OVF002"],
    "root_cause": r"eval mode|model\.train|\.training|dropout (is )?(off|disabled|inactive)",
    "part": "heldout",
    "verify": {"twin": [("val_accuracy", ">=", 0.9), ("val_loss", "<=", 0.3)], "bug": [("val_loss", ">=", 0.35)]},
}


def run(fixed: bool, out) -> None:
    torch.manual_seed(0)
    (x, y), validation = blobs(seed=27, n=256, label_noise=0.15)
    model = nn.Sequential(
        nn.Linear(8, 256),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Linear(256, 256),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Linear(256, 4),
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)

    def epoch_start() -> None:
        if fixed:
            model.train()

    fit(
        model,
        optimizer,
        nn.CrossEntropyLoss(),
        ((x, y), validation),
        out,
        {"task": "multiclass", "num_classes": 4},
        epochs=30,
        batch_size=32,
        epoch_start=epoch_start,
    )


if __name__ == "__main__":
    main(run, BUG)
