"""Raw features in the hundreds (readings around 500 with spread 100) fed to the network without standardising."""

import torch
from _common import as_sensor_readings, blobs, fit, main, mlp
from torch import nn

BUG = {
    "kind": "unnormalized_features",
    "description": "inputs ~500 +- 100 used as they are: no (x - mean) / std, the same lr blows up",
    "observable": "live",
    # With this seed and lr the run does not blow up: inputs of ~500 kill the ReLUs and the loss sits at
    # chance (CH001, ACT001), which is what the verification below checks.
    "symptoms": ["LR001", "NF001", "GRD001", "SPK001", "PLT001", "LR002", "CH001", "ACT001"],
    "root_cause": r"normali|standardi|input.{0,30}scale|feature scale",
    "part": "heldout",
    "verify": {"twin": [("val_accuracy", ">=", 0.95)], "bug": [("val_accuracy", "<=", 0.7)]},
}


def run(fixed: bool, out) -> None:
    torch.manual_seed(0)
    (x, y), (x_val, y_val) = blobs(seed=33)
    x, x_val = as_sensor_readings(x, x_val)
    if fixed:
        mean, std = x.mean(0), x.std(0)
        x, x_val = (x - mean) / std, (x_val - mean) / std
    model = mlp(8, 64, 4)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    fit(
        model, optimizer, nn.CrossEntropyLoss(), ((x, y), (x_val, y_val)), out, {"task": "multiclass", "num_classes": 4}
    )


if __name__ == "__main__":
    main(run, BUG)
