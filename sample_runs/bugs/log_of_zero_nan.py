"""Binary cross-entropy written by hand on ``torch.sigmoid``: once a probability rounds to 1, ``log(1 - p)`` is -inf and the loss NaN."""

import torch
from _common import blobs, fit, main, mlp
from torch.nn import functional as F

BUG = {
    "kind": "log_of_zero_nan",
    "description": "-(y * log(p) + (1 - y) * log(1 - p)) with p = sigmoid(logit): log(0) once p saturates, then NaN",
    "observable": "live",
    "symptoms": ["NF001"],
    "root_cause": r"log\(0\)|log of (zero|0)|loss computation|computing the loss|in the loss",
    "part": "calibration",
    "verify": {"twin": [("val_accuracy", ">=", 0.95), ("nonfinite", "<=", 0.0)], "bug": [("nonfinite", ">=", 1.0)]},
}


def run(fixed: bool, out) -> None:
    torch.manual_seed(0)
    (x, y), (x_val, y_val) = blobs(seed=18, classes=2)
    data = (x, y.float().unsqueeze(1)), (x_val, y_val.float().unsqueeze(1))
    model = mlp(8, 64, 1)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)

    def criterion(logit: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if fixed:
            return F.binary_cross_entropy_with_logits(logit, target)
        p = torch.sigmoid(logit)
        return -(target * torch.log(p) + (1 - target) * torch.log(1 - p)).mean()

    fit(model, optimizer, criterion, data, out, {"task": "binary", "num_classes": 2}, task="binary")


if __name__ == "__main__":
    main(run, BUG)
