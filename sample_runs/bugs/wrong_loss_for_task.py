"""A 5-class problem trained as a regression on the class index with ``MSELoss``: classes are not ordered numbers."""

import torch
from _common import blobs, fit, main, mlp
from torch import nn

BUG = {
    "kind": "wrong_loss_for_task",
    "description": "one output and nn.MSELoss on the class index for a 5-class task, where CrossEntropyLoss belongs",
    "observable": "live",
    # The first loss (an MSE on class indices) is far from the ln(5) a 5-class loss starts at (INIT001).
    "symptoms": ["PLT001", "LR003", "CH002", "OVF002", "INIT001"],
    "root_cause": r"loss.{0,40}(task|classif)|mse|regression loss|wrong loss",
    "part": "calibration",
    "verify": {"twin": [("val_accuracy", ">=", 0.95)], "bug": [("val_accuracy", "<=", 0.7)]},
}


def run(fixed: bool, out) -> None:
    torch.manual_seed(0)
    model = mlp(8, 64, 5 if fixed else 1)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    mse = nn.MSELoss()

    def as_regression(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return mse(out.squeeze(1), target.float())

    fit(
        model,
        optimizer,
        nn.CrossEntropyLoss() if fixed else as_regression,
        blobs(seed=25, classes=5),
        out,
        {"task": "multiclass", "num_classes": 5},
    )


if __name__ == "__main__":
    main(run, BUG)
