"""Which operation made the first NaN/Inf, read from the autograd graph of the loss.

When ``backward()`` is called on a loss that is already non-finite, the graph
that produced it is still alive: every node keeps the tensors its gradient
needs (``LogBackward0`` its input, ``ExpBackward0`` its result, ``DivBackward0``
both operands). Walking that graph once, inputs first, finds the earliest
node whose saved tensors show how it made a non-finite value out of finite
ones: a log or a square root of a non-positive input, an exp that overflowed,
a division by a value near zero, a power of a negative base, or a float16
value past 65504.

Cost: nothing is recorded while the loss is finite. The probe looks at the
loss's value only when it lives on the CPU (reading it there needs no
device synchronisation); a loss on an accelerator is left alone, and the
finding then names the module (from the non-finite probe) but not the
operation.

It cannot see operations that save nothing for backward (add, sum, mean,
mul by a constant), operations run under ``no_grad``, custom autograd
Functions, the operations inside a ``torch.compile`` graph (one node holds
them all; it says so), or values that were already non-finite when they entered the
graph (a NaN in the batch, weights poisoned by an earlier update): then it
says that no operation in the graph made the value.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import torch

from diagnose.probes import backward_tap
from diagnose.probes.base import Probe
from diagnose.probes.record import StepRecord
from diagnose.runfile import schema

# Smallest magnitude that still counts as a safe divisor: 1/x stays below float32's max (3.4e38).
_TINY_DIVISOR = 1e-30


def _values(tensor: Any) -> torch.Tensor | None:
    if not isinstance(tensor, torch.Tensor) or not tensor.is_floating_point() or tensor.numel() == 0:
        return None
    return tensor.detach().float()


def _span(tensor: torch.Tensor) -> dict[str, float]:
    finite = tensor[torch.isfinite(tensor)]
    if finite.numel() == 0:
        return {"input_min": math.nan, "input_max": math.nan}
    return {"input_min": float(finite.min()), "input_max": float(finite.max())}


def _saved(node: Any, name: str) -> torch.Tensor | None:
    try:
        return _values(getattr(node, name, None))
    except RuntimeError:  # the graph was freed (retain_graph=False after an earlier backward)
        return None


def _log(node: Any, low: float) -> dict[str, Any] | None:
    x = _saved(node, "_saved_self")
    if x is None or not bool((x <= low).any()):
        return None
    return {"op": node.name().removesuffix("Backward0").lower(), "problem": f"log of an input <= {low:g}", **_span(x)}


def _sqrt(node: Any) -> dict[str, Any] | None:
    result = _saved(node, "_saved_result")
    if result is None or bool(torch.isfinite(result).all()):
        return None
    inverse = node.name().startswith("Rsqrt")
    return {
        "op": "rsqrt" if inverse else "sqrt",
        "problem": "square root of a negative input" + (" or of zero" if inverse else ""),
    }


def _exp(node: Any) -> dict[str, Any] | None:
    result = _saved(node, "_saved_result")
    if result is None or not bool(torch.isinf(result).any()):
        return None
    limit = math.log(torch.finfo(node._saved_result.dtype).max)
    return {
        "op": "exp",
        "problem": f"exp overflow: an input above {limit:.4g} "
        f"({str(node._saved_result.dtype).removeprefix('torch.')} limit)",
    }


def _div(node: Any) -> dict[str, Any] | None:
    other = _saved(node, "_saved_other")
    if other is None or not bool(torch.isfinite(other).all()):
        return None
    if not bool((other.abs() < _TINY_DIVISOR).any()):
        return None
    return {"op": "div", "problem": "division by a value near zero", **_span(other)}


def _pow(node: Any) -> dict[str, Any] | None:
    base, exponent = _saved(node, "_saved_self"), getattr(node, "_saved_exponent", None)
    if base is None or not isinstance(exponent, (int, float)) or not bool(torch.isfinite(base).all()):
        return None
    fractional = exponent != int(exponent)
    if fractional and bool((base < 0).any()):
        return {"op": "pow", "problem": f"a negative base to the fractional power {exponent:g}", **_span(base)}
    if exponent < 0 and bool((base == 0).any()):
        return {"op": "pow", "problem": f"zero to the negative power {exponent:g}", **_span(base)}
    return None


_WHY_NONFINITE: dict[str, Callable[[Any], dict[str, Any] | None]] = {
    "LogBackward0": lambda node: _log(node, 0.0),
    "Log2Backward0": lambda node: _log(node, 0.0),
    "Log10Backward0": lambda node: _log(node, 0.0),
    "Log1pBackward0": lambda node: _log(node, -1.0),
    "SqrtBackward0": _sqrt,
    "RsqrtBackward0": _sqrt,
    "ExpBackward0": _exp,
    "DivBackward0": _div,
    "PowBackward0": _pow,
}


def _half_overflow(node: Any) -> dict[str, Any] | None:
    """A float16 tensor saved by ``node`` holds Inf: the operation before it overflowed float16's range."""
    for name in dir(node):
        if not name.startswith("_saved_"):
            continue
        try:
            value = getattr(node, name)
        except RuntimeError:
            return None
        if isinstance(value, torch.Tensor) and value.dtype == torch.float16 and bool(torch.isinf(value).any()):
            return {
                "op": node.name().removesuffix("Backward0").lower(),
                "problem": "float16 overflow: an input of this operation exceeded 65504",
            }
    return None


def inputs_first(root: Any) -> Iterator[Any]:
    """The nodes of an autograd graph, each after every node it depends on (forward order)."""
    seen: set[int] = set()
    stack: list[tuple[Any, bool]] = [(root, False)]
    while stack:
        node, expanded = stack.pop()
        if expanded:
            yield node
            continue
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        stack.append((node, True))
        stack.extend((child, False) for child, _ in reversed(node.next_functions))


def first_nonfinite_operation(loss: torch.Tensor) -> dict[str, Any]:
    """The earliest operation in ``loss``'s graph that made a non-finite value, as event fields."""
    compiled = False
    for node in inputs_first(loss.grad_fn):
        compiled = compiled or node.name().startswith("CompiledFunction")
        why = _WHY_NONFINITE.get(node.name(), _half_overflow)
        found = why(node)
        if found is not None:
            return {"node": node.name(), **found}
    if compiled:  # torch.compile (AOTAutograd) puts a whole graph into one node that shows none of its operations
        return {"op": None, "problem": "made inside a torch.compile graph, whose operations autograd cannot see"}
    return {
        "op": None,
        "problem": "no operation in the graph made it: it was already in an input "
        "(the batch, or weights an earlier update made non-finite)",
    }


class NonFiniteOperationProbe(Probe):
    """Names the operation behind the first non-finite training loss (CPU-resident losses only)."""

    name = "nonfinite_op"

    def __init__(self) -> None:
        super().__init__()
        self._done = False

    def attach(self, host: Any) -> None:
        super().attach(host)
        self.keep(backward_tap.add(host.guard(self, self._on_backward)))

    def _on_backward(self, tensor: torch.Tensor) -> None:
        if self._done or not self.host.training_pass or tensor.grad_fn is None or tensor.device.type != "cpu":
            return
        if tensor.numel() != 1 or math.isfinite(tensor.item()):  # item(): no detached copy to make
            return
        self._done = True  # the first one only: later ones are its consequences
        self.host.record.private["nonfinite_op"] = first_nonfinite_operation(tensor)

    def resolve(self, record: StepRecord) -> None:
        found = record.private.get("nonfinite_op")
        if found is None:
            return
        if any(e["event"] == schema.EV_SKIPPED_STEP for e in record.events):
            self._done = False  # an AMP overflow the scaler skipped, as designed: wait for a real one
            return
        record.event(schema.EV_NONFINITE_OP, **found)
