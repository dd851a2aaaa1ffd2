"""The optimizer is built on the classifier head only: the rest of the model gets gradients and never moves."""

import torch
from _common import fit, images, main
from torch import nn

BUG = {
    "kind": "partial_optimizer",
    "description": "optimizer = Adam(model.head.parameters()): the feature layers are in no parameter group",
    "observable": "live",
    # The left-out layers get gradients and never move (BUG003 says so), and optimizer.zero_grad() never
    # resets their gradients, so the gradient norm grows every step (GRD001).
    "symptoms": ["PLT001", "LR003", "GRD003", "GRD004", "OVF002", "BUG003", "GRD001"],
    "root_cause": r"not in (the|any) optimizer|no parameter group|outside the optimizer|optimizer (does not|doesn't) (cover|hold|include)|never (move|updated)|not (being )?updated",
    "part": "heldout",
    "verify": {"twin": [("val_accuracy", ">=", 0.95), ("val_loss", "<=", 0.1)], "bug": [("val_loss", ">=", 1.0)]},
}


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Flatten(), nn.Linear(144, 64), nn.ReLU(), nn.Linear(64, 16), nn.ReLU())
        self.head = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def run(fixed: bool, out) -> None:
    torch.manual_seed(0)
    model = Net()
    optimizer = torch.optim.Adam(model.parameters() if fixed else model.head.parameters(), lr=3e-3)
    fit(model, optimizer, nn.CrossEntropyLoss(), images(seed=6), out, {"task": "multiclass", "num_classes": 10})


if __name__ == "__main__":
    main(run, BUG)
