"""A plain training loop, unaware of diagnose: ``python plain_loop.py [WEIGHTS_OUT]``."""

import sys

import torch
from torch import nn

torch.manual_seed(0)
model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
x, y = torch.randn(64, 8), torch.randint(0, 3, (64,))
for step in range(40):
    optimizer.zero_grad()
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    optimizer.step()
    if step % 10 == 0:
        with torch.no_grad():
            model(x)  # an evaluation pass: not a step
if len(sys.argv) > 1:
    torch.save(model.state_dict(), sys.argv[1])
