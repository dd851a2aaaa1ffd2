"""Readers: turn a run file or another tool's log into `Run` objects."""

from __future__ import annotations

from typing import Any

__all__ = ["FORMATS", "detect", "load", "load_all"]


def __getattr__(name: str) -> Any:
    # The readers import pandas; a command imports this package's light `arrow_lines` before it pays for that.
    if name in __all__:
        from diagnose.readers import registry

        return getattr(registry, name)
    raise AttributeError(f"module 'diagnose.readers' has no attribute {name!r}")
