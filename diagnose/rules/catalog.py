"""Imports every rule module so that each registers its rules."""

from diagnose.rules import (  # noqa: F401
    activations,
    bugs,
    distributed,
    generalization,
    gradients,
    initialization,
    numerics,
    optimization,
    preflight,
    resources,
)
