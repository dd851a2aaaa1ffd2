"""A plain tanh RNN trained with SGD and momentum, a recipe that needs gradient clipping, without it: the loss jumps."""

import torch
from _common import LastStep, fit, main, sequences
from torch import nn

BUG = {
    "kind": "rnn_no_clip",
    "description": "nn.RNN with SGD(lr=0.1, momentum=0.9) and no clip_grad_norm_: exploding gradients spike the loss",
    "observable": "live",
    "symptoms": ["GRD001", "SPK001", "LR001", "NF001", "LR002"],
    "root_cause": r"clip",
    "part": "calibration",
    "verify": {"twin": [("val_accuracy", ">=", 0.7)], "bug": [("val_accuracy", "<=", 0.62)]},
}


def run(fixed: bool, out) -> None:
    torch.manual_seed(0)
    model = LastStep(nn.RNN(4, 32, batch_first=True), classes=4)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    criterion = nn.CrossEntropyLoss()

    def step(xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        optimizer.zero_grad()
        loss = criterion(model(xb), yb)
        loss.backward()
        if fixed:
            torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)
        optimizer.step()
        return loss

    fit(
        model,
        optimizer,
        criterion,
        sequences(seed=23, steps=16, n=1024),
        out,
        {"task": "multiclass", "num_classes": 4},
        step=step,
        batch_size=32,
    )


if __name__ == "__main__":
    main(run, BUG)
