"""``nn.GRU`` without ``batch_first=True`` on (batch, time, feature) data: the recurrence runs across the batch."""

import torch
from _common import LastStep, fit, main, sequences
from torch import nn

BUG = {
    "kind": "rnn_batch_first",
    "description": "nn.GRU(4, 32) fed (batch, time, features): batch and time axes swapped, samples mix",
    "observable": "live",
    "symptoms": ["PLT001", "OVF002", "CH002", "NOI001", "LR003"],
    "root_cause": r"batch_first|mix|batch (dimension|axis)|transpos|across (the )?batch",
    "part": "calibration",
    "verify": {"twin": [("val_accuracy", ">=", 0.85)], "bug": [("val_accuracy", "<=", 0.6)]},
}


def run(fixed: bool, out) -> None:
    torch.manual_seed(0)
    model = LastStep(nn.GRU(4, 32, batch_first=fixed), classes=4)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    fit(
        model,
        optimizer,
        nn.CrossEntropyLoss(),
        sequences(seed=22, steps=12, n=1024),
        out,
        {"task": "multiclass", "num_classes": 4},
        batch_size=32,
    )


if __name__ == "__main__":
    main(run, BUG)
