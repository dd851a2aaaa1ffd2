"""Does the output for one sample depend on that sample alone?

Karpathy's "use backprop to chart dependencies": take the sum of sample i's
outputs, backpropagate to the inputs, and only row i may receive a gradient.
A wrong ``view``/``reshape`` where a ``transpose``/``permute`` was meant
spreads samples over each other and shows up here. The model runs in eval
mode, because BatchNorm in training mode mixes the batch on purpose.
"""

from __future__ import annotations

import torch

from diagnose.probes.preflight.context import Context, Skip, call_model, first_tensor
from diagnose.probes.preflight.outcome import Outcome


def measure_mixing(ctx: Context) -> Outcome:
    x = first_tensor(ctx.batch.inputs)
    if x.shape[0] < 2:
        raise Skip("the batch holds a single sample")
    if not x.is_floating_point():
        raise Skip(f"the inputs are {str(x.dtype).replace('torch.', '')}: no gradient reaches them")
    trial = ctx.trial()
    trial.model.eval()
    probe = x.detach().clone().requires_grad_(True)
    inputs = probe if isinstance(ctx.batch.inputs, torch.Tensor) else _replace_first(ctx.batch.inputs, probe)
    output = call_model(trial.model, inputs)
    out = output if isinstance(output, torch.Tensor) else first_tensor(output)
    if out.dim() == 0 or out.shape[0] != x.shape[0]:
        raise Skip(f"the output's first dimension ({tuple(out.shape)}) is not the batch ({x.shape[0]})")
    sample = x.shape[0] // 2
    (grad,) = torch.autograd.grad(out[sample].sum(), probe, allow_unused=True)
    if grad is None:
        raise Skip("the output does not depend on the first input tensor at all")
    per_sample = grad.detach().abs().reshape(x.shape[0], -1).amax(dim=1).double()
    own = float(per_sample[sample])
    others = torch.cat([per_sample[:sample], per_sample[sample + 1 :]])
    leaking = [i for i in range(x.shape[0]) if i != sample and per_sample[i] > 0]
    return Outcome(
        {
            "sample": sample,
            "batch": int(x.shape[0]),
            "own_grad": own,
            "other_grad": float(others.max()),
            "leaking_samples": len(leaking),
            "batchnorm": any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in trial.model.modules()),
        }
    )


def _replace_first(inputs, probe):
    """The same inputs with their first tensor replaced by ``probe``."""
    if isinstance(inputs, dict):
        key = next(k for k, v in inputs.items() if isinstance(v, torch.Tensor))
        return {**inputs, key: probe}
    index = next(i for i, v in enumerate(inputs) if isinstance(v, torch.Tensor))
    return type(inputs)((*inputs[:index], probe, *inputs[index + 1 :]))
