"""Imports every rule module so that each registers its rules."""

from diagnose.rules import generalization, initialization, numerics, optimization  # noqa: F401
import diagnose.rules.preflight  # noqa: E402,F401
import diagnose.rules.distributed  # noqa: E402,F401
