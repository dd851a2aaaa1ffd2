"""What a preflight experiment hands back to the runner."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Outcome:
    """Measurements of one experiment. The rules in `diagnose.rules.preflight` judge them.

    ``steps``: step records (the learning-rate range test's curve).
    ``blocks``: set when running the model on this batch would fail or
    mislead (labels out of range); the experiments after this one are then skipped
    with this reason.
    """

    fields: dict[str, Any]
    steps: list[dict[str, Any]] = field(default_factory=list)
    blocks: str | None = None
