"""Preflight: catch the bug before the run is spent.

``diagnose.preflight(model, loss_fn, batch, optimizer, metadata)`` runs
quick checks on copies of the model (initial loss, overfitting one batch,
an input-independent baseline, samples mixing across the batch, parameters
without a gradient, labels and inputs, a learning-rate range test), writes
what they measured to a run file and returns the findings of the preflight
rules (`diagnose.rules.preflight`).
"""

import sys
import types
from typing import Any

from diagnose.preflight.runner import preflight

__all__ = ["preflight"]


class _CallablePackage(types.ModuleType):
    """Lets ``diagnose.preflight(...)`` call the function although the package has the same name."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return preflight(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
