"""``F.nll_loss`` on raw logits: without ``log_softmax`` the loss is just minus the true logit, unbounded below."""

import torch
from _common import blobs, fit, main, mlp
from torch.nn import functional as F

BUG = {
    "kind": "nll_on_logits",
    "description": "F.nll_loss applied to raw logits instead of log_softmax outputs: the loss runs to minus infinity",
    "observable": "live",
    # BUG015 reads the loss curve alone: a loss that crosses zero and falls by orders of magnitude.
    "symptoms": ["LR001", "GRD001", "NF001", "ZL001", "GRD003", "BUG015"],
    "root_cause": r"nll|log_softmax|log-softmax|negative loss|log.probabilit",
    "part": "heldout",
    "verify": {"twin": [("val_accuracy", ">=", 0.95)], "bug": [("train_loss", "<=", -20.0)]},
}


def run(fixed: bool, out) -> None:
    torch.manual_seed(0)
    model = mlp(8, 64, 4)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    def criterion(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if fixed:
            logits = F.log_softmax(logits, dim=1)
        return F.nll_loss(logits, target)

    fit(model, optimizer, criterion, blobs(seed=5), out, {"task": "multiclass", "num_classes": 4})


if __name__ == "__main__":
    main(run, BUG)
