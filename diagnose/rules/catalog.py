"""Imports every rule module so that each registers its rules."""

from diagnose.rules import generalization, initialization, numerics, optimization  # noqa: F401
