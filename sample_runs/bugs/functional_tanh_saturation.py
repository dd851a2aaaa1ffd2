"""A hidden layer initialised with std 5 feeds ``torch.tanh`` in ``forward``: the units sit in the flat tails of tanh."""

import torch
from _common import fit, main, regression
from torch import nn

BUG = {
    "kind": "functional_tanh_saturation",
    "description": "nn.init.normal_(fc1.weight, std=5.0) before a functional torch.tanh: pre-activations ~14, tanh saturated",
    "observable": "live",
    "symptoms": ["ACT002", "PLT001", "LR003", "GRD002"],
    "root_cause": r"tanh|saturat",
    "part": "calibration",
    "verify": {"twin": [("val_r2", ">=", 0.88)], "bug": [("val_r2", "<=", 0.8)]},
}


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(8, 16)
        self.fc2 = nn.Linear(16, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.tanh(self.fc1(x)))


def run(fixed: bool, out) -> None:
    torch.manual_seed(0)
    model = Net()
    if not fixed:
        nn.init.normal_(model.fc1.weight, std=5.0)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    fit(model, optimizer, nn.MSELoss(), regression(seed=16), out, {"task": "regression"}, task="regression")


if __name__ == "__main__":
    main(run, BUG)
