"""Severity levels, and what a check requires of a run: the words of a verdict.

Importable without pandas or the rules, for the command line, whose options
name them before anything is read; `diagnose.rules.base` and `diagnose.verdict`
give the same objects.
"""

from __future__ import annotations

import enum


class Severity(str, enum.Enum):
    ERROR = "error"
    WARNING = "warning"
    INFO = "info"

    @property
    def rank(self) -> int:
        """Higher is worse."""
        return {"error": 3, "warning": 2, "info": 1}[self.value]

    @classmethod
    def parse(cls, value: str | Severity) -> Severity:
        try:
            return cls(str(getattr(value, "value", value)).lower())
        except ValueError:
            raise ValueError(f"unknown severity {value!r} (expected error, warning or info)") from None


DEFAULT_FAIL_ON = Severity.WARNING
# What a run must hold for the check to pass it: a training loss with enough
# points to judge (the default), or nothing (runs without one pass on their findings alone).
REQUIREMENTS = ("train-loss", "nothing")
DEFAULT_REQUIRE = "train-loss"
