"""A ReLU after the last layer of a regression model: negative targets cannot be predicted, the loss stalls above its floor."""

import torch
from _common import fit, main, mlp, regression
from torch import nn

BUG = {
    "kind": "relu_on_output",
    "description": "nn.ReLU() appended after the output layer: predictions clamped at 0 for targets of both signs",
    "observable": "live",
    "symptoms": ["PLT001", "LR003", "ACT001"],
    "root_cause": r"relu (after|on) the (last|output)|clamp|non-?negative|output layer|last layer",
    "part": "calibration",
    "verify": {"twin": [("val_r2", ">=", 0.8)], "bug": [("val_r2", "<=", 0.65)]},
}


def run(fixed: bool, out) -> None:
    torch.manual_seed(0)
    model = mlp(8, 64, 1)
    if not fixed:
        model.append(nn.ReLU())
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    fit(model, optimizer, nn.MSELoss(), regression(seed=21), out, {"task": "regression"}, task="regression")


if __name__ == "__main__":
    main(run, BUG)
