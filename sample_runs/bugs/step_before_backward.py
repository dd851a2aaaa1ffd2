"""``optimizer.step()`` between ``zero_grad()`` and ``backward()``: every step uses freshly zeroed gradients."""

import torch
from _common import blobs, fit, main, mlp
from torch import nn

BUG = {
    "kind": "step_before_backward",
    "description": "zero_grad(); step(); backward(): the optimizer only ever sees zero gradients, nothing moves",
    "observable": "live",
    "symptoms": ["PLT001", "CH001", "CH002", "LR003"],
    "root_cause": r"before (the )?backward|step\(\) (is )?called before|wrong order|updates? (is |are )?(exactly )?zero|never (move|updated)",
    "part": "heldout",
    "verify": {"twin": [("val_accuracy", ">=", 0.95)], "bug": [("val_accuracy", "<=", 0.5)]},
}


def run(fixed: bool, out) -> None:
    torch.manual_seed(0)
    model = mlp(8, 64, 4)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    criterion = nn.CrossEntropyLoss()

    def step(xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        optimizer.zero_grad()
        loss = criterion(model(xb), yb)
        if not fixed:
            optimizer.step()
        loss.backward()
        if fixed:
            optimizer.step()
        return loss

    fit(model, optimizer, criterion, blobs(seed=32), out, {"task": "multiclass", "num_classes": 4}, step=step)


if __name__ == "__main__":
    main(run, BUG)
