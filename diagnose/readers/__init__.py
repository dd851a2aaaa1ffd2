"""Readers: turn a run file or another tool's log into `Run` objects."""

from diagnose.readers.registry import FORMATS, detect, load, load_all

__all__ = ["FORMATS", "detect", "load", "load_all"]
