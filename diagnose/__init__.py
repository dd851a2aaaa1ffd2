"""diagnose: training diagnostics and loss-curve analysis for PyTorch.

Record a run with probes, read it back, find out what went wrong::

    import diagnose
    with diagnose.watch(model, optimizer, path="runs/exp1.jsonl") as w:
        for x, y in loader:
            ...
            w.log(loss=loss)
    print(diagnose.analyze(diagnose.load("runs/exp1.jsonl")).findings)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from diagnose.probes import Watch

__all__ = [
    "DiagnoseWarning",
    "Run",
    "TrainingStopped",
    "Watch",
    "__version__",
    "analyze",
    "assert_healthy",
    "load",
    "load_all",
    "preflight",
    "watch",
]


def __getattr__(name: str) -> Any:
    # Importing torch costs about a second; `diagnose report` should not pay
    # for it, so the probe side is imported only when asked for.
    if name in ("watch", "Watch"):
        import diagnose.probes as probes

        return getattr(probes, name)
    if name in ("load", "load_all"):
        import diagnose.readers as readers

        return getattr(readers, name)
    if name == "analyze":
        from diagnose.rules import analyze

        return analyze
    if name == "preflight":
        from diagnose.probes.preflight import preflight

        return preflight
    if name == "assert_healthy":
        from diagnose.verdict import assert_healthy

        return assert_healthy
    if name in ("TrainingStopped", "DiagnoseWarning"):
        import diagnose.live.policy as policy

        return getattr(policy, name)
    if name == "Run":
        from diagnose.run import Run

        return Run
    raise AttributeError(f"module 'diagnose' has no attribute {name!r}")
