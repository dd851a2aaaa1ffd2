"""The training inputs are standardised but the validation inputs are not: training is fine, validation is garbage."""

import torch
from _common import as_sensor_readings, blobs, fit, main, mlp
from torch import nn

BUG = {
    "kind": "val_not_normalized",
    "description": "(x - mean) / std applied to the training set only: validation sees raw readings",
    "observable": "curve",
    "symptoms": ["OVF001", "OVF002", "CH002"],
    "root_cause": r"validation.{0,60}(distribution|scale|normali|preprocess)|normali",
    "part": "heldout",
    "verify": {"twin": [("val_accuracy", ">=", 0.95)], "bug": [("val_accuracy", "<=", 0.6)]},
}


def run(fixed: bool, out) -> None:
    torch.manual_seed(0)
    (x, y), (x_val, y_val) = blobs(seed=34)
    x, x_val = as_sensor_readings(x, x_val)
    mean, std = x.mean(0), x.std(0)
    x = (x - mean) / std
    if fixed:
        x_val = (x_val - mean) / std
    model = mlp(8, 64, 4)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    fit(
        model, optimizer, nn.CrossEntropyLoss(), ((x, y), (x_val, y_val)), out, {"task": "multiclass", "num_classes": 4}
    )


if __name__ == "__main__":
    main(run, BUG)
