"""The loop never calls ``model.train()``: after the first evaluation BatchNorm stays in eval mode and stops
normalising."""

import torch
from _common import blobs, evaluate, fit, main
from torch import nn

BUG = {
    "kind": "batchnorm_eval",
    "description": "model.eval() from the evaluation before training is never undone: BatchNorm trains in eval mode",
    "observable": "live",
    "symptoms": ["LR001", "SPK001", "GRD001", "NF001", "LR002", "NOI001"],
    "root_cause": r"eval mode|model\.train|\.training|batchnorm",
    "part": "calibration",
    "verify": {"twin": [("val_accuracy", ">=", 0.95)], "bug": [("val_accuracy", "<=", 0.7)]},
}


def run(fixed: bool, out) -> None:
    torch.manual_seed(0)
    (x, y), (x_val, y_val) = blobs(seed=7)
    # raw sensor-like readings: BatchNorm after the first layer is what makes them trainable at this lr
    x, x_val = 20 * x + 30, 20 * x_val + 30
    model = nn.Sequential(
        nn.Linear(8, 64),
        nn.BatchNorm1d(64),
        nn.ReLU(),
        nn.Linear(64, 64),
        nn.BatchNorm1d(64),
        nn.ReLU(),
        nn.Linear(64, 4),
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    criterion = nn.CrossEntropyLoss()
    print("before training:", evaluate(model, x_val, y_val, criterion))  # leaves the model in eval mode

    def epoch_start() -> None:
        if fixed:
            model.train()

    fit(
        model,
        optimizer,
        criterion,
        ((x, y), (x_val, y_val)),
        out,
        {"task": "multiclass", "num_classes": 4},
        epoch_start=epoch_start,
    )


if __name__ == "__main__":
    main(run, BUG)
