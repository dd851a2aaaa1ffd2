"""Probes: hooks that record a live PyTorch training run into a run file."""

from diagnose.probes.presets import PRESETS, Preset, Schedule
from diagnose.probes.watch import Watch, watch

__all__ = ["PRESETS", "Preset", "Schedule", "Watch", "watch"]
