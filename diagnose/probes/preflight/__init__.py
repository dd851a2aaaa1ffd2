"""Preflight: catch the bug before the run is spent.

``diagnose.preflight(model, loss_fn, batch, optimizer, metadata)`` runs
quick experiments on copies of the model (initial loss, overfitting one batch,
an input-independent baseline, samples mixing across the batch, parameters
without a gradient, labels and inputs, a learning-rate range test), writes
what they measured to a run file and returns the findings of the preflight
rules (`diagnose.rules.preflight`). One module per experiment; `runner` runs them.
"""

from diagnose.probes.preflight.runner import preflight

__all__ = ["preflight"]
