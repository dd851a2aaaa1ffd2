"""Predictions of shape (N, 1) against targets of shape (N,): ``MSELoss`` broadcasts to (N, N) and learns the mean."""

import torch
from _common import fit, main, mlp, regression
from torch import nn

BUG = {
    "kind": "mse_broadcast",
    "description": "nn.MSELoss(out, y) with out (N, 1) and y (N,): "
    "PyTorch warns 'target size different to the input size'",
    "observable": "live",
    "symptoms": ["PLT001", "LR003", "CH001"],
    "root_cause": r"broadcast|target size|shape",
    "part": "heldout",
    "verify": {"twin": [("val_r2", ">=", 0.8)], "bug": [("val_r2", "<=", 0.1)]},
}


def run(fixed: bool, out) -> None:
    torch.manual_seed(0)
    (x, y), (x_val, y_val) = regression(seed=12)
    data = (x, y.squeeze(1)), (x_val, y_val.squeeze(1))  # targets kept as a flat column, as read from a table
    model = mlp(8, 64, 1)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    mse = nn.MSELoss()

    def criterion(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return mse(pred.squeeze(1) if fixed else pred, target)

    fit(model, optimizer, criterion, data, out, {"task": "regression"}, task="regression")


if __name__ == "__main__":
    main(run, BUG)
