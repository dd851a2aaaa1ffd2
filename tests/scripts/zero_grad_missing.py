"""A loop that never resets its gradients (optimizer.zero_grad() is missing): they pile up every step."""

import torch
from torch import nn

torch.manual_seed(0)
model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 3))
optimizer = torch.optim.SGD(model.parameters(), lr=0.02)
gen = torch.Generator().manual_seed(1)
for _ in range(60):
    x = torch.randn(32, 8, generator=gen)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()  # accumulates onto the previous gradients
    optimizer.step()
