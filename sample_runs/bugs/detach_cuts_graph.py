"""``.detach()`` on the features inside ``forward`` (left from a feature-extraction experiment): the body never learns."""

import torch
from _common import fit, images, main
from torch import nn

BUG = {
    "kind": "detach_cuts_graph",
    "description": "self.head(self.features(x).detach()): no gradient reaches the feature layers",
    "observable": "live",
    "symptoms": ["GRD004", "PLT001", "LR003", "OVF002"],
    "root_cause": r"detach|graph (is |was )?(cut|broken)|cut(s|ting)? the graph",
    "part": "heldout",
    "verify": {"twin": [("val_accuracy", ">=", 0.95), ("val_loss", "<=", 0.1)], "bug": [("val_loss", ">=", 1.0)]},
}


class Net(nn.Module):
    def __init__(self, detach: bool) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Flatten(), nn.Linear(144, 64), nn.ReLU(), nn.Linear(64, 16), nn.ReLU())
        self.head = nn.Linear(16, 10)
        self.detach = detach

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.features(x)
        return self.head(h.detach() if self.detach else h)


def run(fixed: bool, out) -> None:
    torch.manual_seed(0)
    model = Net(detach=not fixed)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    fit(model, optimizer, nn.CrossEntropyLoss(), images(seed=26), out, {"task": "multiclass", "num_classes": 10})


if __name__ == "__main__":
    main(run, BUG)
