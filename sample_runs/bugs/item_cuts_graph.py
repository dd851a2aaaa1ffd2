"""The loss is rebuilt from ``.item()`` (to silence 'does not require grad'): backward reaches no parameter."""

import torch
from _common import blobs, fit, main, mlp
from torch import nn

BUG = {
    "kind": "item_cuts_graph",
    "description": "loss = torch.tensor(criterion(out, y).item(), requires_grad=True): the graph is cut, nothing learns",
    "observable": "live",
    "symptoms": ["PLT001", "GRD004", "CH001", "CH002", "LR003"],
    "root_cause": r"\.item\(\)|graph (is |was )?(cut|broken)|cut(s|ting)? the graph|not (connected|attached) to the graph",
    "part": "calibration",
    "verify": {"twin": [("val_accuracy", ">=", 0.95)], "bug": [("val_accuracy", "<=", 0.5)]},
}


def run(fixed: bool, out) -> None:
    torch.manual_seed(0)
    model = mlp(8, 64, 4)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    criterion = nn.CrossEntropyLoss()

    def step(xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        optimizer.zero_grad()
        loss = criterion(model(xb), yb)
        if not fixed:
            loss = torch.tensor(loss.item(), requires_grad=True)
        loss.backward()
        optimizer.step()
        return loss

    fit(model, optimizer, criterion, blobs(seed=17), out, {"task": "multiclass", "num_classes": 4}, step=step)


if __name__ == "__main__":
    main(run, BUG)
