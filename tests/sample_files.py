"""Where the recorded example runs are, for the tests: ``sample_runs/examples/<CODE>/bad*|good*``, ``healthy/``."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

SAMPLE_RUNS = Path(__file__).resolve().parents[1] / "sample_runs"
EXAMPLES = SAMPLE_RUNS / "examples"
HEALTHY = EXAMPLES / "healthy"


def recorder() -> ModuleType:
    """``sample_runs/record.py``, the one recorder, loaded once."""
    if "sample_runs_record" not in sys.modules:
        spec = importlib.util.spec_from_file_location("sample_runs_record", SAMPLE_RUNS / "record.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
        spec.loader.exec_module(module)
    return sys.modules["sample_runs_record"]


def scenario_module(name: str) -> ModuleType:
    """A module of scenarios beside the recorder (``preflight_examples``, ``rank_examples``), as it imports it."""
    recorder()
    return sys.modules[name]


def scenario_file(name: str) -> Path:
    """The run file of the recorder's scenario ``name``."""
    return recorder().SCENARIOS[name].path


def recorded_runs() -> list[Path]:
    """Every run the recorder wrote: each rule's bad and good examples and the healthy runs.

    A run of several files (one per rank) is its folder: ``DST002/bad/``, ``healthy/ddp/``.
    """
    runs = [*EXAMPLES.glob("*/bad*"), *EXAMPLES.glob("*/good*"), *HEALTHY.glob("*")]
    return sorted(p for p in runs if p.is_dir() or p.suffix == ".jsonl")
