"""Readers: turn a run file or another tool's log into `Run` objects."""

from diagnose.readers.registry import load, load_all

__all__ = ["load", "load_all"]
